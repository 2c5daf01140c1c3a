"""The scoring DAG's steps on local folders with injected models: no input is an error,
a champion that fails to load is retried before the fallback scores, the plan pins the
models for reruns, and ``latest.json`` never moves backwards."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from serving_fixtures import loaded_model

from rxvision.errors import ConfigError, NotFound
from rxvision.pipeline import scoring
from rxvision.serving.errors import NoInputImages, PrimaryUnavailable, ScoringError
from rxvision.serving.model_contract import LoadedModel
from rxvision.serving.model_pool import ModelPool
from rxvision.serving.plan import list_input_shards, plan_shards, planned_shard, read_plan
from rxvision.serving.predictions import PREDICTION_SCHEMA
from rxvision.serving.scoring_config import ScoringConfig
from rxvision.serving.scoring_run import score_batch
from rxvision.serving.shard import score_shard, shard_uri
from rxvision.storage.uri_store import Storage

pytestmark = pytest.mark.unit


def rows_of(uri: str) -> list[dict]:  # type: ignore[type-arg]
    return list(pq.read_table(uri).to_pylist())


# --- no input ------------------------------------------------------------------------------


def test_missing_input_folder_is_an_error_and_writes_nothing(tmp_path: Path) -> None:
    missing, output = tmp_path / "no" / "such" / "dir", tmp_path / "out"
    for allow_empty in (False, True):  # a path typo is never an empty night
        with pytest.raises(NoInputImages, match=f"input folder {missing} does not exist"):
            plan_shards(str(missing), str(output), 5, allow_empty=allow_empty)
    assert not output.exists()
    assert issubclass(NoInputImages, NotFound) and NoInputImages.exit_code == 4


def test_input_without_images_is_an_error_unless_allowed(
    tmp_path: Path, config: ScoringConfig
) -> None:
    empty, output = tmp_path / "incoming", tmp_path / "out"
    empty.mkdir()
    (empty / "readme.txt").write_text("not an image")
    (empty / ".hidden.jpg").write_bytes(b"x")
    with pytest.raises(NoInputImages, match=f"no images under {empty}"):
        score_batch("models:/tiny/1", str(empty), str(output), config=config)
    assert not output.exists()  # no _plan.json, no _SUCCESS, no Parquet

    def no_model(uri: str) -> LoadedModel:
        raise AssertionError("an empty run loads no model")

    manifest = score_batch(
        "models:/tiny/1", str(empty), str(output), config=config, loader=no_model, allow_empty=True
    )
    assert manifest["rows"] == 0 and manifest["shards"] == []
    assert (output / "_SUCCESS").is_file()
    assert read_plan(str(output))["shards"] == []  # type: ignore[index]


def score_cli(*args: str, home: Path) -> subprocess.CompletedProcess[str]:
    env = {
        **os.environ,
        "RXVISION_HOME": str(home),
        "NO_ALBUMENTATIONS_UPDATE": "1",
        "MLFLOW_TRACKING_URI": f"file://{home / 'mlruns'}",
    }
    return subprocess.run(
        [sys.executable, "-m", "rxvision.cli.score", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        cwd=home,
    )


def test_cli_missing_input_exits_4_and_allow_empty_succeeds(tmp_path: Path) -> None:
    home = tmp_path / "home"
    home.mkdir()
    missing, output = tmp_path / "typo", tmp_path / "out"
    failed = score_cli("--input", str(missing), "--output", str(output), home=home)
    assert failed.returncode == 4, failed.stderr[-2000:]
    assert f"error: input folder {missing} does not exist" in failed.stderr
    assert "Traceback" not in failed.stderr
    assert not output.exists()

    empty = tmp_path / "incoming"
    empty.mkdir()
    refused = score_cli("--input", str(empty), "--output", str(output), home=home)
    assert refused.returncode == 4 and f"no images under {empty}" in refused.stderr
    assert not output.exists()
    allowed = score_cli("--input", str(empty), "--output", str(output), "--allow-empty", home=home)
    assert allowed.returncode == 0, allowed.stderr[-2000:]
    assert "scored 0 images into 0 shards" in allowed.stderr
    assert (output / "_SUCCESS").is_file()


# --- a champion that cannot be loaded --------------------------------------------------------


class FlakyLoader:
    """The champion's download times out ``failures`` times, then loads; the fallback
    always loads. Counts the loads of each URI."""

    def __init__(self, failures: int) -> None:
        self.failures = failures
        self.calls: list[str] = []

    def __call__(self, uri: str) -> LoadedModel:
        self.calls.append(uri)
        if uri == "models:/tiny/1" and self.failures > 0:
            self.failures -= 1
            raise TimeoutError("read timed out downloading model.pth")
        return loaded_model("tiny/1" if uri == "models:/tiny/1" else "tiny/2", seed=1)


def test_load_failure_before_the_last_try_raises_and_the_retry_scores_with_the_champion(
    image_dir: Path, tmp_path: Path, config: ScoringConfig
) -> None:
    output = tmp_path / "out"
    keys = list_input_shards(str(image_dir), 100)[0].keys
    loader = FlakyLoader(failures=1)

    def attempt(last_try: bool) -> object:
        # each Airflow try is a new process: a new pool
        pool = ModelPool(
            "models:/tiny/1",
            "models:/tiny@fallback",
            config,
            loader=loader,
            fallback_on_load_failure=last_try,
        )
        return score_shard(
            "models:/tiny/1", keys, str(output), "shard-00000", config=config, pool=pool
        )

    with pytest.raises(PrimaryUnavailable, match=r"models:/tiny/1: TimeoutError: read timed"):
        attempt(last_try=False)
    assert loader.calls == ["models:/tiny/1"]  # the fallback was not even loaded
    assert not Path(shard_uri(str(output), "shard-00000")).exists()
    assert not (output / "_summary").exists()

    attempt(last_try=False)  # the retry
    rows = [r for r in rows_of(shard_uri(str(output), "shard-00000")) if not r["error"]]
    assert len(rows) == 10
    assert {(r["scored_by"], r["model_version"], r["fallback_reason"]) for r in rows} == {
        ("primary", "tiny/1", None)
    }


def test_load_failure_on_the_last_try_falls_back_and_says_so_in_each_row(
    image_dir: Path, tmp_path: Path, config: ScoringConfig, caplog: pytest.LogCaptureFixture
) -> None:
    output = tmp_path / "out"
    keys = list_input_shards(str(image_dir), 100)[0].keys
    pool = ModelPool(
        "models:/tiny/1", "models:/tiny@fallback", config, loader=FlakyLoader(failures=5)
    )
    result = score_shard(
        "models:/tiny/1", keys, str(output), "shard-00000", config=config, pool=pool
    )
    rows = [r for r in rows_of(result.uri) if not r["error"]]
    assert len(rows) == 10
    assert {(r["scored_by"], r["model_version"]) for r in rows} == {("fallback", "tiny/2")}
    assert {r["fallback_reason"] for r in rows} == {
        "primary_load_failed: TimeoutError: read timed out downloading model.pth"
    }
    errors = [r for r in rows_of(result.uri) if r["error"]]
    assert errors and all(r["fallback_reason"] is None for r in errors)
    assert "scoring with the fallback model models:/tiny@fallback instead of" in caplog.text


@pytest.mark.parametrize(
    ("try_number", "max_tries", "last"),
    [(1, 2, False), (2, 2, False), (3, 2, True), (1, 0, True), (4, 5, False), (6, 5, True)],
)
def test_is_last_try(try_number: int, max_tries: int, last: bool) -> None:
    """As Airflow decides: a try is retried while its number is at most max_tries (a
    cleared task gets max_tries raised by its retries)."""
    assert scoring.is_last_try(try_number, max_tries) is last


# --- the plan pins the models -------------------------------------------------------------


def test_plan_records_the_models_and_a_rerun_reuses_them(
    image_dir: Path, tmp_path: Path, config: ScoringConfig
) -> None:
    output = str(tmp_path / "out")
    first = config.model_copy(
        update={"model_uri": "models:/tiny/1", "fallback_uri": "models:/tiny/2"}
    )
    items = scoring.plan(str(image_dir), output, first)
    saved = read_plan(output)
    assert saved is not None
    assert saved["models"] == {"primary": "models:/tiny/1", "fallback": "models:/tiny/2"}
    assert {(i["model_uri"], i["fallback_uri"]) for i in items} == {
        ("models:/tiny/1", "models:/tiny/2")
    }
    # the config now names other versions (as a promotion would): the rerun keeps the plan's
    later = config.model_copy(
        update={"model_uri": "models:/tiny/3", "fallback_uri": "models:/tiny/1"}
    )
    again = scoring.plan(str(image_dir), output, later)
    assert again == items
    fresh = scoring.plan(str(image_dir), str(tmp_path / "next-run"), later)
    assert fresh[0]["model_uri"] == "models:/tiny/3"


def test_tasks_get_shard_ids_and_the_shard_count_is_bounded(
    image_dir: Path, tmp_path: Path, config: ScoringConfig
) -> None:
    output = str(tmp_path / "out")
    one_each = config.model_copy(
        update={"model_uri": "models:/tiny/1", "shard_size": 1, "max_shards": 4}
    )
    items = scoring.plan(str(image_dir), output, one_each)
    saved = read_plan(output)
    assert saved is not None
    keys = [k for s in saved["shards"] for k in s["keys"]]
    # 1 per shard would be one mapped task per image: at most 4 shards, ceil(n/4) each
    per = -(-len(keys) // 4)
    assert len(items) == len(saved["shards"]) <= 4 and len(keys) > 4
    assert [i["shard"]["size"] for i in items] == [len(s["keys"]) for s in saved["shards"]]
    assert max(i["shard"]["size"] for i in items) == per
    # what Airflow maps over: ids, no keys; each task reads its keys from the plan
    assert all(set(i["shard"]) == {"shard_id", "size"} for i in items)
    assert [list(planned_shard(output, i["shard"]["shard_id"]).keys) for i in items] == [
        s["keys"] for s in saved["shards"]
    ]
    with pytest.raises(ScoringError, match="no shard shard-09999"):
        planned_shard(output, "shard-09999")


def test_a_run_can_cut_its_own_shard_size(
    image_dir: Path, tmp_path: Path, config: ScoringConfig
) -> None:
    pinned = config.model_copy(update={"model_uri": "models:/tiny/1", "shard_size": 100})
    assert len(scoring.plan(str(image_dir), str(tmp_path / "default"), pinned)) == 1
    items = scoring.plan(str(image_dir), str(tmp_path / "run"), pinned, shard_size=3)
    saved = read_plan(str(tmp_path / "run"))
    assert saved is not None and saved["shard_size"] == 3
    sizes = [i["shard"]["size"] for i in items]
    assert sizes[:-1] == [3] * (len(sizes) - 1) and 1 <= sizes[-1] <= 3 and len(sizes) > 2
    with pytest.raises(ConfigError, match="shard_size must be at least 1"):
        scoring.plan(str(image_dir), str(tmp_path / "zero"), pinned, shard_size=0)
    # a rerun of the run (its plan saved) keeps its shards, whatever the size asked now:
    # shards committed before stay the run's (e.g. a deploy changed the default between)
    assert scoring.plan(str(image_dir), str(tmp_path / "run"), pinned) == items
    with pytest.raises(ConfigError, match="choose a new output"):
        scoring.plan(str(tmp_path), str(tmp_path / "run"), pinned, shard_size=3)


# --- latest.json only moves forward ---------------------------------------------------------


def planned_run(image_dir: Path, output: Path, config: ScoringConfig) -> list[dict]:  # type: ignore[type-arg]
    """A planned run whose shards are committed (empty Parquet: publish only checks)."""
    cfg = config.model_copy(
        update={"model_uri": "models:/tiny/1", "fallback_uri": "models:/tiny/2"}
    )
    items = scoring.plan(str(image_dir), str(output), cfg)
    for item in items:
        target = Path(shard_uri(str(output), item["shard"]["shard_id"]))
        target.parent.mkdir(parents=True, exist_ok=True)
        pq.write_table(PREDICTION_SCHEMA.empty_table(), target)
    return items


def test_latest_never_moves_to_an_older_run(
    image_dir: Path, tmp_path: Path, config: ScoringConfig, caplog: pytest.LogCaptureFixture
) -> None:
    latest = tmp_path / "latest.json"
    old = planned_run(image_dir, tmp_path / "run-old", config)
    new = planned_run(image_dir, tmp_path / "run-new", config)

    moved = scoring.publish(new, str(latest), dag_run_id="new")
    assert moved["latest_moved"] is True
    assert json.loads(latest.read_text())["dag_run_id"] == "new"

    # the old run is cleared and publishes again: refused, not an error
    refused = scoring.publish(old, str(latest), dag_run_id="old")
    assert refused["latest_moved"] is False
    assert f"it points at {tmp_path / 'run-new'} (run new)" in refused["latest_reason"]
    assert json.loads(latest.read_text())["dag_run_id"] == "new"
    assert (tmp_path / "run-old" / "_SUCCESS").is_file()  # its own output is still final
    assert "not moved to" in caplog.text

    # the same run may publish again; a pointer written before planned_at was recorded
    # is ordered by its run's _plan.json
    assert scoring.publish(new, str(latest), dag_run_id="new")["latest_moved"] is True
    legacy = json.loads(latest.read_text())
    del legacy["planned_at"]
    latest.write_text(json.dumps(legacy))
    assert scoring.publish(old, str(latest), dag_run_id="old")["latest_moved"] is False
    newest = planned_run(image_dir, tmp_path / "run-newest", config)
    assert scoring.publish(newest, str(latest), dag_run_id="newest")["latest_moved"] is True


class RacingStorage(Storage):
    """Another publisher moves the pointer to ``theirs`` between our read and our write."""

    def __init__(self, theirs: dict) -> None:  # type: ignore[type-arg]
        super().__init__()
        self.theirs: dict | None = theirs  # type: ignore[type-arg]
        self.attempts = 0

    def write_if(self, uri: str, data: bytes, match: str | None) -> bool:
        self.attempts += 1
        if self.theirs is not None:
            Storage().write(uri, json.dumps(self.theirs).encode())
            self.theirs = None
        return super().write_if(uri, data, match)


def test_a_newer_run_publishing_meanwhile_wins(
    image_dir: Path, tmp_path: Path, config: ScoringConfig
) -> None:
    latest = tmp_path / "latest.json"
    old = planned_run(image_dir, tmp_path / "run-old", config)
    planned_run(image_dir, tmp_path / "run-new", config)  # planned after old
    theirs = {
        "uri": str(tmp_path / "run-new"),
        "dag_run_id": "new",
        "planned_at": read_plan(str(tmp_path / "run-new"))["planned_at"],  # type: ignore[index]
    }
    storage = RacingStorage(theirs)
    result = scoring.publish(old, str(latest), dag_run_id="old", storage=storage)
    assert storage.attempts == 1  # the conditional write failed, the re-read refused
    assert result["latest_moved"] is False
    assert json.loads(latest.read_text())["dag_run_id"] == "new"


def test_empty_night_finalises_and_keeps_latest(
    image_dir: Path, tmp_path: Path, config: ScoringConfig
) -> None:
    latest = tmp_path / "latest.json"
    scoring.publish(planned_run(image_dir, tmp_path / "run-1", config), str(latest))
    before = latest.read_bytes()
    empty_input, output = tmp_path / "incoming", tmp_path / "run-2"
    empty_input.mkdir()
    cfg = config.model_copy(
        update={"model_uri": "models:/tiny/1", "fallback_uri": "models:/tiny/2"}
    )
    with pytest.raises(NoInputImages):
        scoring.plan(str(empty_input), str(output), cfg)
    assert not output.exists()
    items = scoring.plan(str(empty_input), str(output), cfg, allow_empty=True)
    assert items == []
    result = scoring.publish(items, str(latest), output=str(output), allow_empty=True)
    assert result["rows"] == 0 and result["latest_moved"] is False
    assert (output / "_SUCCESS").is_file()
    assert latest.read_bytes() == before


def test_local_conditional_write(tmp_path: Path) -> None:
    target = str(tmp_path / "p" / "latest.json")
    storage = Storage()
    assert storage.read_tagged(target) is None
    assert storage.write_if(target, b"one", None) is True
    assert storage.write_if(target, b"again", None) is False  # exists now
    found = storage.read_tagged(target)
    assert found is not None and found[0] == b"one"
    assert storage.write_if(target, b"two", found[1]) is True
    assert storage.write_if(target, b"three", found[1]) is False  # stale tag
    assert Path(target).read_bytes() == b"two"
