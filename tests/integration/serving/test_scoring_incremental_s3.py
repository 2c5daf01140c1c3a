"""Incremental scoring against the real SeaweedFS and MLflow, through the scoring DAG's
steps: the first run scores every image, the next only the 3 uploaded since, an image
re-uploaded under its key is scored again, ``full`` rescans everything (served from the
inference cache), and a run whose publish fails never advances the processed-keys manifest."""

from __future__ import annotations

import io
import uuid
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest
from PIL import Image

from rxvision.pipeline import scoring
from rxvision.serving.cache import content_hash
from rxvision.serving.errors import ScoringError
from rxvision.serving.plan import read_plan
from rxvision.serving.processed import manifest_uri, read_manifest
from rxvision.serving.scoring_config import ScoringConfig
from rxvision.storage.s3 import parse_s3_uri
from rxvision.storage.uri_store import Storage

pytestmark = pytest.mark.integration

FAST = {"shard_size": 8, "batch_size": 4, "download_workers": 4, "device": "cpu"}
PILLS = 18  # the pills fixture: 3 products x 6 photos


def mirrored(path: Path, turn: int = 0) -> bytes:
    """A pill photo mirrored (and turned): bytes no uploaded key has, so no cache hit."""
    image = Image.open(path).transpose(Image.Transpose.FLIP_LEFT_RIGHT).rotate(90 * turn)
    buffer = io.BytesIO()
    image.save(buffer, "JPEG")
    return buffer.getvalue()


class Night:
    """Scoring DAG runs over one S3 prefix: plan, score every shard, publish."""

    def __init__(self, stack_env: dict[str, str], models: dict[str, str]) -> None:
        tag = uuid.uuid4().hex[:6]
        self.input = f"s3://rxvision-data/it-incr-{tag}/incoming"
        self.processed = f"s3://rxvision-predictions/it-processed-{tag}"
        self.latest = f"s3://rxvision-predictions/it-incr-{tag}/latest.json"
        self.config = ScoringConfig(
            **FAST,
            model_uri=f"models:/{models['name']}@champion",
            tracking_uri=stack_env["MLFLOW_TRACKING_URI"],
            runtimes=["eager"],
            cache={"uri": f"s3://rxvision-predictions/_cache-it-incr-{tag}"},
        )
        self.storage = Storage()
        self.count = 0

    def plan(self, full: bool = False) -> tuple[str, list[dict[str, Any]]]:
        self.count += 1
        output = f"s3://rxvision-predictions/it-incr-run-{uuid.uuid4().hex[:8]}"
        items = scoring.plan(
            self.input,
            output,
            self.config,
            allow_empty=True,
            processed_uri=self.processed,
            full=full,
        )
        return output, items

    def run(self, full: bool = False) -> dict[str, Any]:
        """One run; its published summary with the rows it wrote."""
        output, items = self.plan(full)
        scored = [scoring.score(item, self.config) for item in items]
        published = scoring.publish(
            items, self.latest, dag_run_id=f"run-{self.count}", output=output, allow_empty=True
        )
        rows = [
            row
            for result in scored
            for row in pq.read_table(io.BytesIO(self.storage.read(result["uri"]))).to_pylist()
        ]
        return {**published, "scored": rows, "cached": sum(bool(r["cached"]) for r in rows)}

    def manifest(self) -> dict[str, str]:
        return read_manifest(manifest_uri(self.processed, self.input), self.storage)[0].keys

    def upload(self, name: str, data: bytes) -> str:
        uri = f"{self.input}/{name}"
        self.storage.write(uri, data)
        return uri


@pytest.fixture
def night(stack_env: dict[str, str], models: dict[str, str], pills: Path) -> Night:
    """A prefix of its own holding the pill photos."""
    runs = Night(stack_env, models)
    for path in sorted(pills.glob("*/*.jpg")):
        runs.upload(f"{path.parent.name}/{path.name}", path.read_bytes())
    return runs


def test_each_run_scores_only_what_arrived_or_changed_since_the_last(
    night: Night, pills: Path
) -> None:
    first = night.run()
    assert (first["rows"], first["cached"]) == (PILLS, 0)
    assert first["processed"]["added"] == PILLS and len(night.manifest()) == PILLS
    # the tags are the listing's ETags and sizes: no object was read to record them
    key, tag = min(night.manifest().items())
    bucket, path = parse_s3_uri(f"{night.input}/{key}")
    head = night.storage.s3.client.head_object(Bucket=bucket, Key=path)
    assert tag == f"{head['ETag'].strip(chr(34))}:{head['ContentLength']}"

    photos = sorted(pills.glob("*/*.jpg"))
    new = sorted(night.upload(f"new/pill-{i}.jpg", mirrored(photos[i])) for i in range(3))
    second = night.run()
    assert sorted(r["key"] for r in second["scored"]) == new
    assert (second["rows"], second["cached"]) == (3, 0)
    assert second["latest_moved"] is True

    # an empty night: succeeds, latest.json stays on the last predictions
    empty = night.run()
    assert empty["rows"] == 0 and empty["latest_moved"] is False

    # a retake uploaded under an existing key is new again, and scored afresh
    retake = f"{night.input}/{photos[0].parent.name}/{photos[0].name}"
    replacement = mirrored(photos[5], turn=1)
    night.upload(f"{photos[0].parent.name}/{photos[0].name}", replacement)
    third = night.run()
    assert [(r["key"], r["cached"]) for r in third["scored"]] == [(retake, False)]
    assert third["scored"][0]["content_sha256"] == content_hash(replacement)

    # full: every image again, each one now served from the inference cache
    full = night.run(full=True)
    assert (full["rows"], full["cached"]) == (PILLS + 3, PILLS + 3)
    assert night.run()["rows"] == 0


def test_a_failed_publish_does_not_advance_the_manifest(night: Night, pills: Path) -> None:
    night.run()
    before = night.manifest()
    photos = sorted(pills.glob("*/*.jpg"))
    new = sorted(night.upload(f"late/pill-{i}.jpg", mirrored(photos[i], 2)) for i in range(2))
    output, items = night.plan()
    plan = read_plan(output)
    assert plan is not None
    assert [k for s in plan["shards"] for k in s["keys"]] == new
    assert [i["shard"]["shard_id"] for i in items] == [s["shard_id"] for s in plan["shards"]]
    # the shard's task failed: nothing committed, publish refuses
    with pytest.raises(ScoringError, match="shards not committed"):
        scoring.publish(items, night.latest, dag_run_id="failed", output=output)
    assert night.manifest() == before
    assert not night.storage.exists(f"{output}/_SUCCESS")

    retried = night.run()  # the next night plans them again
    assert sorted(r["key"] for r in retried["scored"]) == new
    assert retried["processed"]["added"] == 2
    assert len(night.manifest()) == PILLS + 2
