"""The scoring plan: the input's images cut into shards, saved as ``OUTPUT/_plan.json``.

The first run lists the input (sorted keys, image suffixes only) and cuts it into
shards of ``shard_size`` keys (``shard-00000``, ...); the plan is saved with the time it
was made and, from the DAG, the pinned model versions. Reruns reuse it, so files
arriving later never move a key from one shard to another. A missing input folder, or
an input with no image, is ``NoInputImages`` (nothing written) unless ``allow_empty``.
"""

from __future__ import annotations

import json
import logging
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path, PurePosixPath
from typing import Any

from rxvision.errors import ConfigError
from rxvision.serving.errors import NoInputImages, ScoringError
from rxvision.serving.image_folder import IMAGE_SUFFIXES
from rxvision.storage.uri_store import Storage, join, normalize_uri

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Shard:
    """A fixed set of input keys scored and committed together. ``tags``: each S3 key's
    ``etag:size`` from the listing (parallel to ``keys``; empty for local input), with
    which the inference cache serves an unchanged object without downloading it."""

    shard_id: str
    keys: tuple[str, ...]
    tags: tuple[str, ...] = ()

    def to_json(self) -> dict[str, Any]:
        """For the plan file and Airflow's XCom."""
        data: dict[str, Any] = {"shard_id": self.shard_id, "keys": list(self.keys)}
        if self.tags:
            data["tags"] = list(self.tags)
        return data

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Shard:
        """From ``to_json`` (plans saved before tags have none)."""
        keys = tuple(str(k) for k in data["keys"])
        tags = tuple(str(t) for t in data.get("tags") or ())
        return cls(str(data["shard_id"]), keys, tags if len(tags) == len(keys) else ())

    def source_tags(self) -> dict[str, str]:
        """key -> listing tag, for the keys that have one."""
        return {k: t for k, t in zip(self.keys, self.tags, strict=False) if t}


def shard_id(index: int) -> str:
    """``shard-00042``."""
    return f"shard-{index:05d}"


# names a left-out warning shows (the count and the suffixes say the rest)
LEFT_OUT_EXAMPLES = 3


def _is_hidden(uri: str, root: str) -> bool:
    relative = uri[len(root.rstrip("/")) + 1 :]
    return any(part.startswith((".", "_")) for part in relative.split("/"))


def _has_suffix(uri: str, suffixes: Sequence[str]) -> bool:
    return uri.lower().endswith(tuple(s.lower() for s in suffixes))


def _is_input_image(uri: str, root: str, suffixes: Sequence[str]) -> bool:
    return not _is_hidden(uri, root) and _has_suffix(uri, suffixes)


def warn_left_out(listed: Sequence[str], root: str, suffixes: Sequence[str]) -> int:
    """Say which listed files are not scored because their names are not an image's
    (a phone's ``.heic``, a ``notes.txt``): never a silent drop. Hidden names (``.``,
    ``_``: scoring's own outputs, editors' files) are left out on purpose, unsaid.
    Returns how many were left out."""
    left = [u for u in listed if not _is_hidden(u, root) and not _has_suffix(u, suffixes)]
    if left:
        by_suffix = Counter(PurePosixPath(u).suffix.lower() or "no suffix" for u in left)
        log.warning(
            "%s: %d file(s) left out, their names are not images (%s), e.g. %s; "
            "scored suffixes: %s",
            root,
            len(left),
            ", ".join(f"{suffix}: {n}" for suffix, n in by_suffix.most_common()),
            ", ".join(u[len(root.rstrip("/")) + 1 :] for u in left[:LEFT_OUT_EXAMPLES]),
            " ".join(suffixes),
        )
    return len(left)


def list_input_shards(
    input_uri: str,
    shard_size: int,
    *,
    suffixes: Sequence[str] = IMAGE_SUFFIXES,
    storage: Storage | None = None,
    keys: Sequence[str] | None = None,
    tags: Mapping[str, str] | None = None,
    max_shards: int | None = None,
) -> list[Shard]:
    """The input's images in key order, ``shard_size`` per shard (more when that would
    make over ``max_shards`` shards: the count stays bounded, the size grows): the same
    input always gives the same shards. Hidden (``.``/``_``) names are skipped; other
    suffixes too, with a warning that names them (``warn_left_out``).
    ``keys``: the candidates (full URIs: e.g. only what is new, ``rxvision.serving.
    processed``) with their listing ``tags``, default every object listed under the
    input (an S3 listing's ETag and size come with each key at no extra request).
    ``NoInputImages`` when a local input folder does not exist (a path typo)."""
    if shard_size < 1:
        raise ConfigError(f"shard_size must be at least 1, got {shard_size}")
    storage = storage or Storage()
    input_uri = normalize_uri(input_uri)
    if not input_uri.startswith("s3://") and not Path(input_uri).is_dir():
        raise NoInputImages(f"input folder {input_uri} does not exist")
    if keys is None and input_uri.startswith("s3://"):
        tags = storage.list_tagged(input_uri)
        keys = list(tags)
    listed = storage.list(input_uri) if keys is None else sorted(keys)
    keys = [u for u in listed if _is_input_image(u, input_uri, suffixes)]
    warn_left_out(listed, input_uri, suffixes)
    # only S3 tags name the bytes (the ETag); a local file's mtime and size do not
    known = {k: t for k, t in (tags or {}).items() if k.startswith("s3://")}
    if max_shards is not None and len(keys) > shard_size * max_shards:
        shard_size = -(-len(keys) // max_shards)  # ceil: exactly max_shards or fewer
    shards = []
    for i, start in enumerate(range(0, len(keys), shard_size)):
        chunk = tuple(keys[start : start + shard_size])
        chunk_tags = tuple(known.get(k, "") for k in chunk) if known else ()
        shards.append(Shard(shard_id(i), chunk, chunk_tags))
    log.info("%s: %d images in %d shards of <= %d", input_uri, len(keys), len(shards), shard_size)
    return shards


def read_plan(output_uri: str, storage: Storage | None = None) -> dict[str, Any] | None:
    """``OUTPUT/_plan.json`` as saved by ``plan_shards``; None before the first plan."""
    storage = storage or Storage()
    plan_uri = join(normalize_uri(output_uri), "_plan.json")
    if not storage.exists(plan_uri):
        return None
    return dict(json.loads(storage.read(plan_uri)))


def planned_shard(output_uri: str, shard: str, storage: Storage | None = None) -> Shard:
    """One shard of the run's saved plan (``OUTPUT/_plan.json``): what a mapped scoring
    task scores, so its Airflow input carries the shard's id, never its keys."""
    plan = read_plan(output_uri, storage)
    if plan is None:
        raise ScoringError(f"{output_uri} has no _plan.json: run plan_shards first")
    for data in plan["shards"]:
        if data["shard_id"] == shard:
            return Shard.from_json(data)
    raise ScoringError(f"{output_uri}/_plan.json has no shard {shard}")


def plan_time(plan: Mapping[str, Any]) -> datetime:
    """When a plan was made (``planned_at``; ``created`` for plans saved before it)."""
    raw = str(plan.get("planned_at") or plan["created"])
    stamp = datetime.fromisoformat(raw)
    return stamp if stamp.tzinfo else stamp.replace(tzinfo=UTC)


def plan_shards(
    input_uri: str,
    output_uri: str,
    shard_size: int,
    *,
    suffixes: Sequence[str] = IMAGE_SUFFIXES,
    storage: Storage | None = None,
    allow_empty: bool = False,
    record: Mapping[str, Any] | None = None,
    keys: Sequence[str] | None = None,
    tags: Mapping[str, str] | None = None,
    max_shards: int | None = None,
) -> list[Shard]:
    """The run's shards: read from ``OUTPUT/_plan.json`` when a run already planned
    them (same input; its shards win over another ``shard_size``, as its pinned models
    win over a promotion: the shards committed before stay valid), else listed (or cut
    from ``keys``, see ``list_input_shards``) and saved there with ``record`` (e.g. the
    pinned models) and the time. No image: ``NoInputImages`` before anything is written,
    unless ``allow_empty`` (then an empty plan)."""
    storage = storage or Storage()
    input_uri, output_uri = normalize_uri(input_uri), normalize_uri(output_uri)
    plan = read_plan(output_uri, storage)
    if plan is not None:
        if plan["input_uri"] != input_uri:
            raise ConfigError(
                f"{output_uri} holds a run of input {plan['input_uri']}, not {input_uri}: "
                "choose a new output"
            )
        if plan["shard_size"] != shard_size:
            log.info(
                "%s was planned with shard_size %s: keeping its shards (not %d)",
                output_uri,
                plan["shard_size"],
                shard_size,
            )
        shards = [Shard.from_json(s) for s in plan["shards"]]
        _check_not_empty(shards, input_uri, allow_empty)
        return shards
    shards = list_input_shards(
        input_uri,
        shard_size,
        suffixes=suffixes,
        storage=storage,
        keys=keys,
        tags=tags,
        max_shards=max_shards,
    )
    _check_not_empty(shards, input_uri, allow_empty)
    now = datetime.now(UTC)
    plan = {
        "input_uri": input_uri,
        "shard_size": shard_size,
        "created": now.strftime("%Y-%m-%dT%H:%M:%SZ"),
        # orders runs (latest.json never moves to an older plan): microseconds, so two
        # runs planned in the same second still compare
        "planned_at": now.isoformat(timespec="microseconds"),
        **(record or {}),
        "shards": [s.to_json() for s in shards],
    }
    storage.write(join(output_uri, "_plan.json"), json.dumps(plan).encode())
    return shards


def _check_not_empty(shards: Sequence[Shard], input_uri: str, allow_empty: bool) -> None:
    if not shards and not allow_empty:
        raise NoInputImages(
            f"no images under {input_uri} (suffixes other than images and hidden names are "
            "skipped): check the path, or allow an empty run (--allow-empty)"
        )


def planned_ids(storage: Storage, output_uri: str) -> list[str]:
    """The shard ids of the run's saved plan (``ScoringError`` when there is none)."""
    plan_uri = join(output_uri, "_plan.json")
    if not storage.exists(plan_uri):
        raise ScoringError(f"{output_uri} has no _plan.json: give the shard ids to expect")
    return [s["shard_id"] for s in json.loads(storage.read(plan_uri))["shards"]]
