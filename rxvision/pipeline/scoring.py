"""The batch scoring steps, one function per Airflow task of the scoring DAG.

``plan`` pins the champion and the fallback to one version each and lists the shards
(each becomes a mapped task), both saved in the output's ``_plan.json`` so that a rerun
of the DAG run scores with the same versions; ``score`` commits one shard's Parquet;
``publish`` checks every shard is in, writes the manifest and ``_SUCCESS`` and moves the
``latest`` pointer forward (never to an older run's predictions).

Incremental: with a ``processed_uri``, ``plan`` lists only the images new or changed
since the last run that published (``rxvision.serving.processed``), and ``publish``
advances that manifest once ``_SUCCESS`` is written; ``full`` plans every image.

The scorer (torch, OpenCV, albumentations: seconds to import) is imported inside the
functions: the DAG file imports this module, and every DAG parse would pay for it.
"""

from __future__ import annotations

import json
import logging
from datetime import datetime
from typing import TYPE_CHECKING, Any

from rxvision.errors import ConfigError, RxVisionError
from rxvision.pipeline.config import ScoringSettings

if TYPE_CHECKING:
    from rxvision.serving.scoring_config import ScoringConfig
    from rxvision.storage.uri_store import Storage

log = logging.getLogger(__name__)

LATEST_WRITE_ATTEMPTS = 5


def output_uri(settings: ScoringSettings, dag_run_id: str) -> str:
    """Where one DAG run's predictions go (a rerun of the run writes to the same place)."""
    from rxvision.pipeline.run_ids import safe_id

    return f"{settings.output_root.rstrip('/')}/{safe_id(dag_run_id)}"


def is_last_try(try_number: int, max_tries: int) -> bool:
    """Whether an Airflow task try is its last (``ti.try_number``, ``ti.max_tries``: the
    try is retried while its number is at most ``max_tries``, as Airflow decides)."""
    return try_number > max_tries


def plan(
    input_uri: str,
    output: str,
    config: ScoringConfig | None = None,
    *,
    allow_empty: bool = False,
    storage: Storage | None = None,
    processed_uri: str | None = None,
    full: bool = False,
    rescore_on_new_champion: bool = True,
    shard_size: int | None = None,
) -> list[dict[str, Any]]:
    """Pin the models and list the input shards (both saved in the output's
    ``_plan.json``): one work item per shard, each naming the models and the output (a
    mapped task's input). A rerun into the same output reuses the plan's pinned versions,
    so a promotion between tries never mixes versions across shards. No image:
    ``NoInputImages`` (nothing written), or with ``allow_empty`` an empty plan and no items.

    ``processed_uri``: plan only the images new or changed since the last run that
    published (the manifest of ``input_uri`` under it), every image when ``full`` (or,
    with ``rescore_on_new_champion``, when the pinned champion is not the manifest's).
    ``shard_size``: keys per shard for this run (None: the config's)."""
    from rxvision.serving.plan import plan_shards, read_plan
    from rxvision.serving.scoring_config import load_scoring_config
    from rxvision.storage.uri_store import Storage, normalize_uri

    config = config or load_scoring_config()
    storage = storage or Storage()
    models = _pinned_models(output, config, storage)
    record: dict[str, Any] = {"models": models} if _all_pinned(models) else {}
    keys: list[str] | None = None
    tags: dict[str, str] | None = None
    if processed_uri and read_plan(output, storage) is None:  # a rerun keeps its plan
        from rxvision.serving.processed import manifest_uri, select

        source = normalize_uri(input_uri)
        chosen = select(
            source,
            manifest_uri(processed_uri, source),
            storage,
            model_uri=str(models["primary"]),
            full=full,
            rescore_on_new_champion=rescore_on_new_champion,
        )
        record["incremental"], keys = chosen.record, chosen.keys
        root = source.rstrip("/") + "/"
        tags = {root + k: str(t) for k, t in chosen.record["tags"].items()}
    shards = plan_shards(
        input_uri,
        output,
        config.shard_size if shard_size is None else shard_size,
        suffixes=config.suffixes,
        storage=storage,
        allow_empty=allow_empty,
        record=record or None,
        keys=keys,
        tags=tags,
        max_shards=config.max_shards,
    )
    # the plan in force: ours, or the one a try before saved (its versions win)
    saved = (read_plan(output, storage) or {}).get("models") or models
    log.info(
        "%d shards of %s to score with %s (fallback %s) into %s",
        len(shards),
        input_uri,
        saved["primary"],
        saved["fallback"],
        output,
    )
    common = {
        "model_uri": saved["primary"],
        "fallback_uri": saved["fallback"],
        "input_uri": input_uri,
        "output_uri": output,
    }
    # the shard's id and size only: its keys stay in _plan.json (read by the shard's
    # task), so XCom and the mapped tasks' inputs do not grow with the images
    return [{**common, "shard": {"shard_id": s.shard_id, "size": len(s.keys)}} for s in shards]


def _pinned_models(output: str, config: ScoringConfig, storage: Storage) -> dict[str, Any]:
    """``{"primary", "fallback"}``: the versions a plan of ``output`` already pinned, else
    the aliases resolved now (``models:/name/N``)."""
    from rxvision.serving.model_pool import fallback_for, pin_model_uri
    from rxvision.serving.plan import read_plan

    existing = read_plan(output, storage) or {}
    if existing.get("models"):
        models = dict(existing["models"])
        log.info("%s was planned before: reusing its pinned models %s", output, models)
        return models
    primary = pin_model_uri(config.model_uri, config.tracking_uri)
    fallback = config.fallback_uri or fallback_for(config.model_uri, config.fallback_alias)
    if fallback and "@" in fallback:
        fallback = pin_model_uri(fallback, config.tracking_uri)
    return {"primary": primary, "fallback": fallback}


def _all_pinned(models: dict[str, Any]) -> bool:
    """Whether every model resolved to a version (an alias that did not resolve is not
    saved in the plan: a rerun resolves it again rather than keep it unpinned)."""
    unpinned = [uri for uri in models.values() if uri and "@" in str(uri)]
    if unpinned:
        log.warning("not pinned (left for the loader to resolve): %s", ", ".join(unpinned))
    return not unpinned


def score(
    item: dict[str, Any],
    config: ScoringConfig | None = None,
    *,
    last_try: bool = True,
    use_cache: bool = True,
    task_slots: int = 1,
) -> dict[str, Any]:
    """Score one planned shard (skipped when a try before already committed it).
    Unchanged images under the pinned primary come from the inference cache (the
    config's ``cache``), unless ``use_cache`` is False (then every image is scored).

    ``last_try``: when the primary model cannot be loaded, False raises
    ``PrimaryUnavailable`` (Airflow retries the task); True scores with the fallback,
    each row saying why in ``fallback_reason``.

    ``task_slots``: how many tasks the worker runs at once; unless the config sets
    ``cpu_threads``, the model runtime gets this task's share of the cores."""
    from rxvision.cpu_budget import limit_compute_threads, threads_per_slot
    from rxvision.serving.plan import Shard, planned_shard
    from rxvision.serving.scoring_config import load_scoring_config
    from rxvision.serving.shard import score_shard

    config = config or load_scoring_config()
    limit_compute_threads(config.cpu_threads or threads_per_slot(task_slots))
    if not use_cache:
        config = config.model_copy(
            update={"cache": config.cache.model_copy(update={"reuse": False})}
        )
    given = item["shard"]
    one = (
        Shard.from_json(given)
        if "keys" in given  # an item planned before keys moved out of XCom
        else planned_shard(str(item["output_uri"]), str(given["shard_id"]))
    )
    result = score_shard(
        str(item["model_uri"]),
        one.keys,
        str(item["output_uri"]),
        one.shard_id,
        config=config,
        fallback_uri=item.get("fallback_uri"),
        fallback_on_load_failure=last_try,
        source_tags=one.source_tags(),
    )
    return {
        "shard_id": result.shard_id,
        "uri": result.uri,
        "rows": result.rows,
        "cached": int(result.summary.get("cached", 0)),
        "skipped": result.skipped,
    }


def publish(
    items: list[dict[str, Any]],
    latest_uri: str,
    *,
    dag_run_id: str | None = None,
    output: str | None = None,
    allow_empty: bool = False,
    storage: Storage | None = None,
    config: ScoringConfig | None = None,
) -> dict[str, Any]:
    """Finalise the run (manifest, ``_SUCCESS``) and move ``latest_uri`` to it, unless
    it points at a run planned later (then the move is refused: logged and said in the
    return value's ``latest_moved`` and ``latest_reason``, not an error).

    No items (nothing planned): with ``allow_empty`` and ``output`` the run is finalised
    empty and ``latest_uri`` keeps pointing at the last predictions; else ``ConfigError``.
    """
    from rxvision.serving.finalize import finalize_scoring
    from rxvision.serving.plan import plan_time, read_plan
    from rxvision.serving.scoring_config import load_scoring_config
    from rxvision.storage.uri_store import Storage

    if not latest_uri.startswith("s3://") and "://" in latest_uri:
        raise ConfigError(f"latest_uri must be s3:// or a path, got {latest_uri}")
    storage = storage or Storage()
    # the gallery keeps its crops beside the scoring tasks' inference cache
    cache = (config or load_scoring_config()).cache
    if not items:
        if not (allow_empty and output):
            raise ConfigError("nothing was planned: no input images to publish")
        manifest = finalize_scoring(
            output, [], storage=storage, extra={"dag_run_id": dag_run_id, "empty": True}
        )
        reason = f"no input images: {latest_uri} left as it is"
        log.info("%s finalised with 0 rows; %s", manifest["output_uri"], reason)
        return {
            "uri": manifest["output_uri"],
            "rows": 0,
            "review_uri": manifest.get("review_uri"),
            "needs_review": manifest.get("needs_review"),
            "dag_run_id": dag_run_id,
            "latest_moved": False,
            "latest_reason": reason,
            "processed": advance_processed(read_plan(output, storage), storage, dag_run_id),
        }
    planned = items[0]
    shard_ids = [item["shard"]["shard_id"] for item in items]
    output = str(planned["output_uri"])
    plan = read_plan(output, storage)
    if plan is None:
        raise ConfigError(f"{output} has no _plan.json: run plan_shards first")
    manifest = finalize_scoring(
        output,
        shard_ids,
        storage=storage,
        cache=cache,
        extra={
            "model_uri": planned["model_uri"],
            "fallback_uri": planned.get("fallback_uri"),
            "input_uri": planned["input_uri"],
            "dag_run_id": dag_run_id,
        },
    )
    metrics = manifest.get("metrics", {})
    latest = {
        "uri": manifest["output_uri"],
        "manifest": f"{manifest['output_uri']}/_manifest.json",
        "rows": manifest["rows"],
        "error_rate": metrics.get("error_rate"),
        "fallback_count": metrics.get("fallback_count"),
        "latency_ms": metrics.get("latency_ms"),
        # the pharmacist's review gallery of the run (null when it could not be written)
        "review_uri": manifest.get("review_uri"),
        "needs_review": manifest.get("needs_review"),
        "model_uri": planned["model_uri"],
        "fallback_uri": planned.get("fallback_uri"),
        "finished": manifest["finished"],
        "dag_run_id": dag_run_id,
        # what orders runs: when the run's plan was made (kept by every rerun of the run)
        "planned_at": plan_time(plan).isoformat(timespec="microseconds"),
    }
    moved, reason = move_latest(latest_uri, latest, storage)
    log.info(
        "published %d rows at %s (error rate %s); %s",
        latest["rows"],
        latest["uri"],
        latest["error_rate"],
        reason,
    )
    processed = advance_processed(plan, storage, dag_run_id)
    return {
        **latest,
        "latest_moved": moved,
        "latest_reason": reason,
        "processed": processed,
        # every breaker switch of the run: the incident tracker's input (circuit_incidents)
        "circuit_events": manifest.get("circuit_events", []),
    }


def advance_processed(
    plan: dict[str, Any] | None, storage: Storage, dag_run_id: str | None
) -> dict[str, Any] | None:
    """Record a published run's planned keys in its input's processed-keys manifest
    (only after ``_SUCCESS``: a failed run never advances it); None when the run was
    not incremental."""
    if not plan or not plan.get("incremental"):
        return None
    from rxvision.serving.processed import advance

    planned = [key for shard in plan["shards"] for key in shard["keys"]]
    return advance(
        plan["incremental"], str(plan["input_uri"]), planned, storage, dag_run_id=dag_run_id
    )


def move_latest(latest_uri: str, record: dict[str, Any], storage: Storage) -> tuple[bool, str]:
    """Point ``latest_uri`` at ``record``'s run unless it points at a run planned later
    (or as late: another run). Read, compare, then a conditional write on the version
    read: a writer that came in between makes the write fail, and it is read again.
    Returns whether it moved and why (a refusal is logged as a warning)."""
    from rxvision.serving.errors import ScoringError

    data = json.dumps(record, indent=2).encode()
    for _ in range(LATEST_WRITE_ATTEMPTS):
        found = storage.read_tagged(latest_uri)
        current = _parse_latest(found[0]) if found else None
        refusal = _refusal(current, record, storage)
        if refusal is not None:
            log.warning("%s not moved to %s: %s", latest_uri, record["uri"], refusal)
            return False, refusal
        if storage.write_if(latest_uri, data, found[1] if found else None):
            return True, f"{latest_uri} now points at {record['uri']}"
        log.info("%s changed while it was being moved: reading it again", latest_uri)
    raise ScoringError(
        f"{latest_uri} changed {LATEST_WRITE_ATTEMPTS} times while publishing "
        f"{record['uri']}: too many concurrent publishers"
    )


def _parse_latest(data: bytes) -> dict[str, Any] | None:
    try:
        parsed = json.loads(data)
    except ValueError:
        log.warning("latest pointer is not JSON: it will be replaced")
        return None
    return parsed if isinstance(parsed, dict) else None


def _refusal(current: dict[str, Any] | None, new: dict[str, Any], storage: Storage) -> str | None:
    """Why ``new`` must not replace ``current``, or None. The same run may republish
    (a rerun of ``publish``); another run must have been planned strictly later."""
    if current is None or current.get("uri") == new["uri"]:
        return None
    theirs = _order_of(current, storage)
    if theirs is None:
        return None
    ours = datetime.fromisoformat(new["planned_at"])
    if ours > theirs:
        return None
    return (
        f"it points at {current.get('uri')} (run {current.get('dag_run_id')}), planned at "
        f"{theirs.isoformat()}, not before this run's plan ({ours.isoformat()}): a newer "
        "run's predictions are never replaced by an older run's"
    )


def _order_of(current: dict[str, Any], storage: Storage) -> datetime | None:
    """When the run ``current`` points at was planned: its ``planned_at``, else (a pointer
    written before it was recorded) its output's ``_plan.json``; None when unknown."""
    from rxvision.serving.plan import plan_time, read_plan

    if current.get("planned_at"):
        return datetime.fromisoformat(str(current["planned_at"]))
    try:
        plan = read_plan(str(current["uri"]), storage) if current.get("uri") else None
    except RxVisionError as exc:
        log.warning("cannot read the plan of %s: %s", current.get("uri"), exc)
        return None
    return plan_time(plan) if plan else None
