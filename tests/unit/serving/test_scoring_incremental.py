"""Incremental scoring on local folders: a run plans only what is new or changed since the
last run that published, a failed run never advances the processed-keys manifest, ``full``
and a new champion plan everything, and two writers racing on the manifest lose nothing."""

from __future__ import annotations

import os
import uuid
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest
from serving_fixtures import write_images

from rxvision.pipeline import scoring
from rxvision.serving.errors import ScoringError
from rxvision.serving.plan import read_plan
from rxvision.serving.predictions import PREDICTION_SCHEMA
from rxvision.serving.processed import (
    ProcessedManifestConflict,
    advance,
    manifest_uri,
    read_manifest,
)
from rxvision.serving.scoring_config import ScoringConfig
from rxvision.storage.uri_store import Storage

pytestmark = pytest.mark.unit

IMAGES = 13  # image_dir: 10 good JPEGs, a truncated one, an empty one, a text .png


class Runs:
    """Plan, commit (empty Parquet: publish only checks) and publish runs of one input."""

    def __init__(self, tmp_path: Path, image_dir: Path, config: ScoringConfig) -> None:
        self.root, self.input = tmp_path, image_dir
        self.processed = str(tmp_path / "processed")
        self.latest = str(tmp_path / "latest.json")
        self.config = config.model_copy(
            update={"model_uri": "models:/tiny/1", "fallback_uri": "models:/tiny/2"}
        )
        self.count = 0

    def plan(self, **kwargs: Any) -> tuple[str, list[dict[str, Any]]]:
        self.count += 1
        output = str(self.root / f"run-{self.count}")
        config = kwargs.pop("config", self.config)
        items = scoring.plan(
            str(self.input),
            output,
            config,
            allow_empty=True,
            processed_uri=self.processed,
            **kwargs,
        )
        return output, items

    def commit(self, items: list[dict[str, Any]]) -> None:
        for item in items:
            target = Path(item["output_uri"]) / "shards" / f"{item['shard']['shard_id']}.parquet"
            target.parent.mkdir(parents=True, exist_ok=True)
            pq.write_table(PREDICTION_SCHEMA.empty_table(), target)

    def publish(self, output: str, items: list[dict[str, Any]]) -> dict[str, Any]:
        return scoring.publish(
            items, self.latest, dag_run_id=output, output=output, allow_empty=True
        )

    def run(self, **kwargs: Any) -> list[str]:
        """One whole run; the keys it planned."""
        output, items = self.plan(**kwargs)
        self.commit(items)
        self.publish(output, items)
        return planned_keys(items)

    def manifest(self) -> dict[str, str]:
        uri = manifest_uri(self.processed, str(self.input.resolve()))
        return read_manifest(uri, Storage())[0].keys


def planned_keys(items: list[dict[str, Any]]) -> list[str]:
    """The keys of the planned shards (in the run's _plan.json: items carry shard ids)."""
    if not items:
        return []
    plan = read_plan(str(items[0]["output_uri"]))
    assert plan is not None
    ids = {item["shard"]["shard_id"] for item in items}
    return sorted(k for s in plan["shards"] if s["shard_id"] in ids for k in s["keys"])


@pytest.fixture
def runs(tmp_path: Path, image_dir: Path, config: ScoringConfig) -> Runs:
    return Runs(tmp_path, image_dir, config)


def test_a_run_scores_what_is_new_since_the_last_published_run(runs: Runs, image_dir: Path) -> None:
    first = runs.run()
    assert len(first) == IMAGES
    assert len(runs.manifest()) == IMAGES
    assert not any("readme.txt" in k or ".hidden" in k for k in runs.manifest())

    # nothing new: an empty night, which succeeds and leaves the manifest as it is
    output, items = runs.plan()
    assert items == []
    result = runs.publish(output, items)
    assert result["rows"] == 0 and (Path(output) / "_SUCCESS").is_file()
    assert result["processed"]["added"] == 0

    added = write_images(image_dir / "c", 3)
    assert runs.run() == sorted(str(p) for p in added)
    assert len(runs.manifest()) == IMAGES + 3


def test_a_changed_image_under_the_same_key_is_new_again(runs: Runs, image_dir: Path) -> None:
    runs.run()
    target = image_dir / "a" / "img-002.jpg"
    target.write_bytes((image_dir / "a" / "img-004.jpg").read_bytes() + b"\0")
    assert runs.run() == [str(target)]


def test_a_failed_publish_does_not_advance_and_the_next_run_plans_it_again(
    runs: Runs, image_dir: Path
) -> None:
    runs.run()
    before = runs.manifest()
    added = sorted(str(p) for p in write_images(image_dir / "c", 3))
    output, items = runs.plan()
    assert planned_keys(items) == added
    with pytest.raises(ScoringError, match="shards not committed"):  # no shard committed
        runs.publish(output, items)
    assert runs.manifest() == before

    # a rerun of the failed run keeps its plan, and its publish then advances
    again = scoring.plan(
        str(image_dir), output, runs.config, allow_empty=True, processed_uri=runs.processed
    )
    assert again == items
    assert planned_keys(runs.plan()[1]) == added  # so does a new run: nothing was recorded
    runs.commit(items)
    assert runs.publish(output, items)["processed"]["added"] == 3
    assert len(runs.manifest()) == IMAGES + 3


def test_full_and_a_new_champion_plan_everything(runs: Runs) -> None:
    runs.run()
    assert len(runs.run(full=True)) == IMAGES
    assert runs.run() == []
    promoted = runs.config.model_copy(update={"model_uri": "models:/tiny/3"})
    assert len(runs.run(config=promoted)) == IMAGES
    assert runs.run(config=promoted) == []
    newer = runs.config.model_copy(update={"model_uri": "models:/tiny/4"})
    assert runs.run(config=newer, rescore_on_new_champion=False) == []


def test_deleted_images_leave_the_manifest(runs: Runs, image_dir: Path) -> None:
    runs.run()
    gone = image_dir / "b" / "img-001.jpg"
    os.remove(gone)
    assert runs.run() == []
    assert str(gone.relative_to(image_dir)) not in runs.manifest()
    assert len(runs.manifest()) == IMAGES - 1


class RacingStorage(Storage):
    """Another run records ``theirs`` between our read of the manifest and our write;
    ``always``: on every attempt."""

    def __init__(self, theirs: dict[str, Any], always: bool = False) -> None:
        super().__init__()
        self.theirs, self.always, self.attempts = theirs, always, 0

    def write_if(self, uri: str, data: bytes, match: str | None) -> bool:
        self.attempts += 1
        if self.attempts == 1 or self.always:
            key = f"theirs-{uuid.uuid4().hex[:8]}.jpg"
            advance({**self.theirs, "tags": {key: "t"}}, "/in", [f"/in/{key}"], Storage())
        return super().write_if(uri, data, match)


def test_racing_writers_both_land_and_endless_races_fail_by_name(tmp_path: Path) -> None:
    uri = str(tmp_path / "m.parquet")
    theirs = {"manifest_uri": uri, "model_uri": "models:/m/1"}
    ours = {"manifest_uri": uri, "model_uri": "models:/m/1", "tags": {"ours.jpg": "o"}}
    storage = RacingStorage(theirs)
    assert advance(ours, "/in", ["/in/ours.jpg"], storage)["added"] == 1
    assert storage.attempts == 2  # the first write lost, the re-read merged theirs
    recorded = read_manifest(uri, Storage())[0].keys
    assert len(recorded) == 2 and recorded["ours.jpg"] == "o"

    with pytest.raises(ProcessedManifestConflict, match=f"processed-keys manifest {uri}"):
        later = {**ours, "tags": {"ours-2.jpg": "o"}}
        advance(later, "/in", ["/in/ours-2.jpg"], RacingStorage(theirs, always=True))


def test_manifest_uri_is_one_per_prefix() -> None:
    a = manifest_uri("s3://p/processed/", "s3://rxvision-data/incoming")
    assert a.startswith("s3://p/processed/rxvision-data_incoming-") and a.endswith(".parquet")
    assert a != manifest_uri("s3://p/processed", "s3://rxvision-data/incoming2")
