"""The processed-keys manifest: what a scoring DAG run has already scored, per input prefix.

A run plans only the objects under its input prefix that are new or changed since the
last run that published; ``full`` plans all of them. One manifest per input prefix, a
Parquet object (``key`` relative to the prefix, ``tag``: the object's ETag and size) with
the champion that scored them in its metadata::

    <processed_root>/<bucket>_<prefix>-<sha8>.parquet

At plan time (``select``) the prefix is listed and compared with the manifest; the
selection (the new keys with their tags, the manifest keys no longer listed) is saved in
the run's ``_plan.json``, so a rerun of the run plans the same keys. Only ``publish``,
after ``_SUCCESS``, folds it into the manifest (``advance``): read with its version tag,
merge, conditional write (S3 If-Match / If-None-Match), again on a conflict. A run that
fails never advances it, so the next run plans the same keys again, and the inference
cache serves the shards the failed run did commit.

Why a manifest of keys and tags rather than a lexicographic watermark (ListObjectsV2
``StartAfter`` the last key seen): a watermark lists only what sorts after it, but it
misses an image re-uploaded under a key it has passed (a retake under the same name)
and any key that does not sort by arrival (a camera's own file names, a late upload
into yesterday's folder). The manifest catches both: ListObjectsV2 returns every
object's ETag and size with its key, so comparing needs no per-object read, and an
object whose ETag or size changed is new again.

The limit: the listing and the manifest grow with the prefix, not with what is new.
Listing costs one request per 1,000 objects (a million objects: 1,000 sequential
requests, a minute or two on S3) and the manifest about 30 bytes per key compressed
(a million keys: ~30 MB read and written once per run). Scoring, the cost that
matters, is proportional to what is new. Keep it bounded by expiring ``incoming/``
with an S3 lifecycle rule: keys that disappear from the listing are dropped from the
manifest. Past tens of millions of objects, point ``input_uri`` at a dated sub-prefix
per night instead.

A new champion rescores every listed image by default (``rescore_on_new_champion``):
the run a promotion triggers exists to score with the new model.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import pyarrow as pa
import pyarrow.parquet as pq

from rxvision.errors import RxVisionError

if TYPE_CHECKING:
    from rxvision.storage.uri_store import Storage

log = logging.getLogger(__name__)

MANIFEST_SCHEMA = pa.schema([("key", pa.string()), ("tag", pa.string())])
WRITE_ATTEMPTS = 5
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")


class ProcessedManifestConflict(RxVisionError):
    """The processed-keys manifest kept changing while a run tried to advance it."""

    exit_code = 9


@dataclass(frozen=True)
class Manifest:
    """A prefix's processed keys (relative key -> tag) and the champion that scored them."""

    keys: dict[str, str]
    model_uri: str | None = None


@dataclass(frozen=True)
class Selection:
    """What a run plans: ``keys`` (full URIs) and the record ``advance`` needs."""

    keys: list[str]
    record: dict[str, Any]


def manifest_uri(root: str, input_uri: str) -> str:
    """The manifest of ``input_uri`` (an ``s3://`` URI or a normalised local path)."""
    name = _UNSAFE.sub("_", input_uri.removeprefix("s3://").strip("/")) or "_"
    digest = hashlib.sha256(input_uri.encode()).hexdigest()[:8]
    return f"{root.rstrip('/')}/{name[-120:]}-{digest}.parquet"


def read_manifest(uri: str, storage: Storage) -> tuple[Manifest, str | None]:
    """The manifest at ``uri`` and its version tag (empty and None before the first)."""
    found = storage.read_tagged(uri)
    if found is None:
        return Manifest({}), None
    table = pq.read_table(io.BytesIO(found[0]))
    meta = json.loads((table.schema.metadata or {}).get(b"rxvision", b"{}"))
    keys = dict(zip(table.column("key").to_pylist(), table.column("tag").to_pylist(), strict=True))
    return Manifest(keys, meta.get("model_uri")), found[1]


def select(
    input_uri: str,
    manifest: str,
    storage: Storage,
    *,
    model_uri: str,
    full: bool = False,
    rescore_on_new_champion: bool = True,
) -> Selection:
    """The objects under ``input_uri`` (normalised) that are not in ``manifest`` with
    the same tag, or all of them when ``full`` (or a new champion, if it rescores)."""
    listed = storage.list_tagged(input_uri)
    done, _ = read_manifest(manifest, storage)
    root = input_uri.rstrip("/") + "/"
    relative = {uri[len(root) :]: tag for uri, tag in listed.items()}
    why = "full rescan asked" if full else None
    if why is None and rescore_on_new_champion and done.keys and done.model_uri != model_uri:
        why = f"new champion {model_uri} (the manifest's: {done.model_uri})"
    fresh = {k: t for k, t in relative.items() if why or done.keys.get(k) != t}
    gone = sorted(set(done.keys) - set(relative))
    log.info(
        "%s: %d objects listed, %d processed before, %d to score%s; %d gone",
        input_uri,
        len(relative),
        len(done.keys),
        len(fresh),
        f" ({why})" if why else " (new or changed)",
        len(gone),
    )
    record = {
        "manifest_uri": manifest,
        "full": bool(why),
        "model_uri": model_uri,
        "tags": fresh,
        "gone": gone,
    }
    return Selection(sorted(root + k for k in fresh), record)


def advance(
    record: Mapping[str, Any],
    input_uri: str,
    planned: Iterable[str],
    storage: Storage,
    *,
    dag_run_id: str | None = None,
) -> dict[str, Any]:
    """Fold a published run into its manifest: the ``planned`` keys (full URIs) with
    the tags the plan saw, less the keys no longer listed. A conditional write on the
    version read; read again when another writer came first. Returns what changed;
    ``ProcessedManifestConflict`` after ``WRITE_ATTEMPTS`` conflicts."""
    uri = str(record["manifest_uri"])
    root = input_uri.rstrip("/") + "/"
    tags: Mapping[str, str] = record.get("tags") or {}
    added = {k: tags[k] for k in (p.removeprefix(root) for p in planned) if k in tags}
    gone = set(record.get("gone") or ())
    for _ in range(WRITE_ATTEMPTS):
        current, version = read_manifest(uri, storage)
        keys = {k: t for k, t in current.keys.items() if k not in gone} | added
        model = str(record["model_uri"]) if added or record.get("full") else current.model_uri
        if keys == current.keys and model == current.model_uri:  # nothing to record
            return {"manifest_uri": uri, "added": 0, "dropped": 0, "keys": len(keys)}
        data = _encode(Manifest(keys, model), dag_run_id)
        if storage.write_if(uri, data, version):
            result = {
                "manifest_uri": uri,
                "added": len(added),
                "dropped": len(gone & set(current.keys)),
                "keys": len(keys),
            }
            log.info("%s advanced: %s", uri, result)
            return result
        log.info("%s changed while this run advanced it: reading it again", uri)
    raise ProcessedManifestConflict(
        f"processed-keys manifest {uri} changed {WRITE_ATTEMPTS} times while run "
        f"{dag_run_id} advanced it: rerun publish"
    )


def _encode(manifest: Manifest, dag_run_id: str | None) -> bytes:
    """Parquet, keys sorted (zstd compresses their shared prefixes)."""
    ordered = sorted(manifest.keys.items())
    meta = {
        "model_uri": manifest.model_uri,
        "dag_run_id": dag_run_id,
        "updated": datetime.now(UTC).isoformat(timespec="seconds"),
    }
    table = pa.Table.from_pylist(
        [{"key": k, "tag": t} for k, t in ordered],
        schema=MANIFEST_SCHEMA.with_metadata({"rxvision": json.dumps(meta)}),
    )
    buffer = io.BytesIO()
    pq.write_table(table, buffer, compression="zstd")
    return buffer.getvalue()
