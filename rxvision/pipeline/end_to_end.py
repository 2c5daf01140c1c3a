"""The main job: the built-in synthetic dataset as a snapshot, new images to score, then
the nightly DAG through the real scheduler, and the scoring DAG its champion triggers.

Idempotent: the snapshot and the incoming images are the same each time; a second run
finds the champion already trained on the snapshot (the nightly DAG skips) and scores
the incoming images again.
"""

from __future__ import annotations

import io
import logging
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rxvision.config.schema import DataConfig
from rxvision.data.settings import load_data_config, snapshot_store
from rxvision.data.synth import generate_dataset
from rxvision.orchestration.airflow_client import AirflowApiError, AirflowClient
from rxvision.pipeline.config import PipelineConfig
from rxvision.storage.s3 import S3Store

log = logging.getLogger(__name__)

Say = Callable[[str], None]


@dataclass(frozen=True)
class DemoData:
    """The built-in data of the main job."""

    # v2: 8 products of which 2 imprint-only look-alike pairs (v1: 6 distinct products)
    tag: str = "synthetic-v2"
    classes: int = 8
    pairs: int = 2
    per_class: int = 60
    size: int = 240  # the validator wants >= 224 px
    seed: int = 0
    incoming_per_class: int = 10
    incoming_seed: int = 7


def ensure_snapshot(demo: DemoData, data_cfg: DataConfig | None = None) -> dict[str, Any]:
    """The demo snapshot (drawn and pushed on the first run; a no-op afterwards)."""
    cfg = data_cfg or load_data_config()
    store = snapshot_store(cfg)
    if demo.tag in store.tags():
        info = store.info(demo.tag)
        return {"tag": demo.tag, "images": info.images, "created": False}
    with tempfile.TemporaryDirectory(prefix="rxv-demo-") as tmp:
        out = Path(tmp) / "pills"
        # look-alike pairs (same shape and colour, another imprint) beside distinct products
        generate_dataset(
            out,
            classes=demo.classes,
            per_class=demo.per_class,
            size=demo.size,
            seed=demo.seed,
            pairs=demo.pairs,
        )
        info, created = store.create(out, demo.tag)
    return {"tag": demo.tag, "images": info.images, "created": created}


def upload_incoming(demo: DemoData, input_uri: str, store: S3Store | None = None) -> int:
    """New photos to score under ``input_uri`` (plus one corrupt file: an error row)."""
    store = store or S3Store()
    root = input_uri.rstrip("/")
    with tempfile.TemporaryDirectory(prefix="rxv-incoming-") as tmp:
        out = Path(tmp) / "incoming"
        generate_dataset(
            out,
            classes=demo.classes,
            per_class=demo.incoming_per_class,
            size=demo.size,
            seed=demo.incoming_seed,
            pairs=demo.pairs,
        )
        count = 0
        for path in sorted(out.rglob("*.jpg")):
            store.upload_file(path, f"{root}/{path.relative_to(out).as_posix()}")
            count += 1
    store.put_bytes(f"{root}/unreadable/corrupt-0001.jpg", io.BytesIO(b"not a jpeg").getvalue())
    return count + 1


def _newest_run(client: AirflowClient, dag_id: str, after: str) -> dict[str, Any] | None:
    data = client.request(
        "GET", f"/dags/{dag_id}/dagRuns", params={"order_by": "-run_after", "limit": 5}
    )
    runs = [r for r in (data or {}).get("dag_runs", []) if str(r.get("run_after")) >= after]
    return runs[0] if runs else None


def wait_for_asset_run(
    client: AirflowClient, dag_id: str, after: str, timeout_s: float
) -> dict[str, Any] | None:
    """The run of ``dag_id`` that an Asset event started after ``after`` (None: none came)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        run = _newest_run(client, dag_id, after)
        if run is not None:
            return run
        time.sleep(2)
    return None


def _task_states(client: AirflowClient, dag_id: str, run_id: str) -> dict[str, str]:
    return {
        f"{t['task_id']}" + (f"[{t['map_index']}]" if t.get("map_index", -1) >= 0 else ""): str(
            t["state"]
        )
        for t in client.task_instances(dag_id, run_id)
    }


def run_pipeline(
    client: AirflowClient,
    cfg: PipelineConfig,
    *,
    demo: DemoData | None = None,
    timeout_s: float = 1800,
    epochs: int | None = None,
    say: Say = print,
) -> dict[str, Any]:
    """Snapshot, incoming images, the nightly DAG to its end, then the scoring DAG.
    ``epochs`` overrides the training config's (the nightly's ``epochs`` param)."""
    demo = demo or DemoData()
    began = time.monotonic()
    snap = ensure_snapshot(demo)
    state = "new" if snap["created"] else "exists"
    say(f"snapshot {snap['tag']}: {snap['images']} images ({state})")
    n = upload_incoming(demo, cfg.scoring.input_uri)
    say(f"{n} images to score under {cfg.scoring.input_uri}")
    for dag_id in (cfg.nightly.dag_id, cfg.scoring.dag_id):
        client.wait_for_dag(dag_id, timeout_s=180)
    conf: dict[str, Any] = {"snapshot_rev": snap["tag"]}
    if epochs is not None:
        conf["epochs"] = epochs
    nightly_id = client.trigger(cfg.nightly.dag_id, conf)
    started_at = str(client.dag_run(cfg.nightly.dag_id, nightly_id)["run_after"])
    say(f"triggered {cfg.nightly.dag_id} run {nightly_id}; waiting for the scheduler")
    state = client.wait_for_run(cfg.nightly.dag_id, nightly_id, timeout_s=timeout_s)
    tasks = _task_states(client, cfg.nightly.dag_id, nightly_id)
    say(f"{cfg.nightly.dag_id}: {state} ({', '.join(f'{k}={v}' for k, v in tasks.items())})")
    if state != "success":
        raise AirflowApiError(f"{cfg.nightly.dag_id} run {nightly_id} ended {state}: {tasks}")
    promoted = tasks.get("refresh_scoring") == "success"
    scoring_run = None
    if promoted:
        say("new champion: waiting for the scoring DAG its Asset event starts")
        scoring_run = wait_for_asset_run(client, cfg.scoring.dag_id, started_at, timeout_s=120)
    if scoring_run is None:
        say("no new champion this time: rescoring every image (full, served by the cache)")
        # incremental scoring would find nothing new: the main job shows a full run
        scoring_id = client.trigger(cfg.scoring.dag_id, {"full": True})
    else:
        scoring_id = str(scoring_run["dag_run_id"])
    remaining = max(60.0, timeout_s - (time.monotonic() - began))
    scoring_state = client.wait_for_run(cfg.scoring.dag_id, scoring_id, timeout_s=remaining)
    say(f"{cfg.scoring.dag_id} run {scoring_id}: {scoring_state}")
    if scoring_state != "success":
        raise AirflowApiError(f"{cfg.scoring.dag_id} run {scoring_id} ended {scoring_state}")
    return {
        "snapshot": snap,
        "nightly": {"run_id": nightly_id, "state": state, "tasks": tasks, "promoted": promoted},
        "scoring": {
            "run_id": scoring_id,
            "state": scoring_state,
            "asset_triggered": scoring_run is not None,
        },
        "seconds": round(time.monotonic() - began, 1),
    }
