"""The incident store: incidents in S3, one JSON object each, changed by a conditional
read-modify-write (``If-None-Match: *`` to create, ``If-Match`` on the ETag read to
update). A writer that loses the race (HTTP 412, or 409 for a concurrent conditional
request) reads again and reapplies its change. The records and their state machine are in
:mod:`rxvision.pipeline.incidents`.
"""

from __future__ import annotations

import json
import logging
import random
import re
import time
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from botocore.exceptions import ClientError

from rxvision.errors import NotFound, RxVisionError
from rxvision.pipeline.alerts import Alert
from rxvision.pipeline.incidents import (
    AUTO_RESOLVER,
    UNRESOLVED,
    apply_ack,
    apply_alert,
    apply_note,
    apply_resolve,
    incident_id,
    resolves,
    task_prefix,
)
from rxvision.storage.s3 import S3Store, parse_s3_uri

log = logging.getLogger(__name__)

# answers of a conditional PUT that lost the race: read again and retry
CONFLICT_CODES = frozenset({"PreconditionFailed", "412", "ConditionalRequestConflict", "409"})


class IncidentConflict(RxVisionError):
    """An incident could not be updated: other writers won every conditional write."""

    exit_code = 1


Change = Callable[[dict[str, Any] | None], dict[str, Any] | None]


def _code(exc: ClientError) -> str:
    return str(exc.response.get("Error", {}).get("Code", ""))


class IncidentStore:
    """Incidents in S3, one JSON object each, changed by conditional read-modify-write."""

    def __init__(self, uri: str, store: S3Store | None = None, max_attempts: int = 25) -> None:
        parse_s3_uri(uri)  # a bad URI fails here, naming it
        self.uri = uri.rstrip("/")
        self.store = store or S3Store()
        self.max_attempts = max_attempts

    def object_uri(self, incident_id_: str) -> str:
        """Where an incident lives (``NotFound`` for a string that cannot be an id)."""
        if not re.fullmatch(r"[A-Za-z0-9_.-]+", incident_id_):
            raise NotFound(f"no incident {incident_id_!r}: not an incident id")
        return f"{self.uri}/{incident_id_}.json"

    def _read(self, incident_id_: str) -> tuple[dict[str, Any] | None, str | None]:
        bucket, key = parse_s3_uri(self.object_uri(incident_id_))
        try:
            obj = self.store.client.get_object(Bucket=bucket, Key=key)
        except ClientError as exc:
            if _code(exc) in {"404", "NoSuchKey", "NotFound"}:
                return None, None
            raise
        return json.loads(obj["Body"].read()), str(obj["ETag"])

    def get(self, incident_id_: str) -> dict[str, Any]:
        """One incident; ``NotFound`` naming the id and where it was looked for."""
        return self._found(incident_id_, self._read(incident_id_)[0])

    def _found(self, incident_id_: str, incident: dict[str, Any] | None) -> dict[str, Any]:
        if incident is None:
            where = self.object_uri(incident_id_)
            raise NotFound(f"no incident {incident_id_!r} (looked for {where})")
        return incident

    def update(self, incident_id_: str, change: Change) -> tuple[dict[str, Any] | None, bool]:
        """Apply ``change`` (the stored incident or None -> the new one, or None for no
        change) with a conditional PUT, reading again and retrying when another writer
        won; return the incident and whether this call changed it."""
        bucket, key = parse_s3_uri(self.object_uri(incident_id_))
        for attempt in range(self.max_attempts):
            current, etag = self._read(incident_id_)
            changed = change(current)
            if changed is None:
                return current, False
            condition = {"IfMatch": etag} if etag else {"IfNoneMatch": "*"}
            try:
                self.store.client.put_object(
                    Bucket=bucket,
                    Key=key,
                    Body=json.dumps(changed, indent=2).encode(),
                    ContentType="application/json",
                    **condition,
                )
                return changed, True
            except ClientError as exc:
                if _code(exc) not in CONFLICT_CODES:
                    raise
                log.debug("incident %s changed under us (try %d): again", incident_id_, attempt + 1)
            # jittered backoff, so racing writers spread out instead of colliding again
            time.sleep(random.uniform(0, min(0.5, 0.01 * 2**attempt)))
        raise IncidentConflict(
            f"incident {incident_id_!r} at {self.object_uri(incident_id_)}: still changed by "
            f"other writers after {self.max_attempts} conditional writes"
        )

    def record_alert(self, alert: Alert, delivery: dict[str, str]) -> dict[str, Any]:
        """Open the alert's incident, or add a repeat to it (reopening a resolved one)."""
        event_id = uuid.uuid4().hex
        incident, _ = self.update(
            incident_id(alert), lambda cur: apply_alert(cur, alert, event_id, delivery)
        )
        assert incident is not None  # apply_alert always opens one
        return incident

    def ack(self, incident_id_: str, by: str) -> tuple[dict[str, Any], bool]:
        """Acknowledge; return the incident and whether it changed (a resolved one does
        not)."""
        event_id = uuid.uuid4().hex
        incident, changed = self.update(
            incident_id_, lambda cur: apply_ack(cur, by, event_id) if cur else None
        )
        return self._found(incident_id_, incident), changed

    def resolve(
        self, incident_id_: str, note: str, by: str, **fields: Any
    ) -> tuple[dict[str, Any], bool]:
        """Resolve; return the incident and whether it changed (resolving a resolved
        incident changes nothing: idempotent)."""
        event_id = uuid.uuid4().hex
        incident, changed = self.update(
            incident_id_,
            lambda cur: apply_resolve(cur, note, by, event_id, **fields) if cur else None,
        )
        return self._found(incident_id_, incident), changed

    def note(self, incident_id_: str, kind: str, **fields: Any) -> None:
        """Add an event that changes no state."""
        event_id = uuid.uuid4().hex
        self.update(
            incident_id_, lambda cur: apply_note(cur, kind, event_id, **fields) if cur else None
        )

    def ids(self, prefix: str = "") -> list[str]:
        """The ids under the store (those starting with ``prefix``), in key order."""
        _, base = parse_s3_uri(self.uri + "/")
        return [
            k[len(base) : -len(".json")]
            for k in self.store.list_keys(f"{self.uri}/{prefix}")
            if k.endswith(".json") and "/" not in k[len(base) :]
        ]

    def find(self, state: str | None = None, prefix: str = "") -> list[dict[str, Any]]:
        """Every incident (in ``state`` when given), oldest opened first; read in parallel."""
        ids = self.ids(prefix)
        with ThreadPoolExecutor(max_workers=8) as pool:
            found = [i for i, _ in pool.map(self._read, ids) if i is not None]
        if state is not None:
            found = [i for i in found if i.get("state") == state]
        return sorted(found, key=lambda i: (str(i.get("opened")), i["id"]))

    def unresolved(self) -> list[dict[str, Any]]:
        """Incidents open or acknowledged."""
        return [i for i in self.find() if i.get("state") in UNRESOLVED]

    def auto_resolve(
        self, dag_id: str, task_id: str, map_index: int | None, run_id: str, note: str
    ) -> list[dict[str, Any]]:
        """Resolve the incidents a success of the task within its budget closes; return
        those this call resolved (a racing resolver's are not returned twice)."""
        label = f"{task_id}[{map_index}]" if map_index is not None and map_index >= 0 else task_id
        names = [label, task_id]
        done = []
        for incident in self.find(prefix=task_prefix(dag_id, task_id)):
            if not resolves(incident, dag_id, names, run_id):
                continue
            event_id = uuid.uuid4().hex

            def change(cur: dict[str, Any] | None, eid: str = event_id) -> dict[str, Any] | None:
                if cur is None or not resolves(cur, dag_id, names, run_id):
                    return None
                return apply_resolve(cur, note, AUTO_RESOLVER, eid, run_id=run_id, task=label)

            resolved, changed = self.update(incident["id"], change)
            if changed and resolved is not None:
                done.append(resolved)
        return done
