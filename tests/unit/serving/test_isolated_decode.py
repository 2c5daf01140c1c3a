"""The scoring job's images decoded in worker processes, on real pill photos: the model
input is the one decoding in the download threads gives (the training decode), and a
decoder that crashes or hangs costs that image's row, not the shard."""

from __future__ import annotations

import os
import shutil
import signal
import time
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch
from serving_fixtures import pill_model, pill_photos

from rxvision.data.imaging import decode_located
from rxvision.serving.fetch import InputImage
from rxvision.serving.isolated_decode import (
    DecodeContract,
    DecodedImage,
    DecodeTask,
    decode_isolated,
    decode_task,
)
from rxvision.serving.scoring_config import ScoringConfig
from rxvision.serving.scoring_run import score_batch

pytestmark = pytest.mark.unit

Photos = list[tuple[str, bytes]]


# --- test hook: runs inside the decode workers (importable, so picklable) -------------------


def hostile_decode(task: DecodeTask, contract: DecodeContract) -> DecodedImage:
    """decode_task, except that marked images kill or hang the decoder process."""
    name = Path(task.key).name
    if name.startswith("segfault"):
        os.kill(os.getpid(), signal.SIGSEGV)
    if name.startswith("hang"):
        time.sleep(120)
    return decode_task(task, contract)


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return pill_photos(tmp_path_factory.mktemp("isolated"))


@pytest.fixture(scope="module")
def photos(folder: Path) -> Photos:
    return [
        (p.relative_to(folder).as_posix(), p.read_bytes()) for p in sorted(folder.rglob("*.jpg"))
    ]


def downloaded(named: Photos) -> list[InputImage]:
    return [
        InputImage(i, key, 0.0, data=data, downloaded=True) for i, (key, data) in enumerate(named)
    ]


def config(**fields: object) -> ScoringConfig:
    return ScoringConfig(statsd={"host": None}, cache={"uri": None}, **fields)


def test_workers_give_the_model_input_of_the_training_decode(photos: Photos) -> None:
    model = pill_model()
    items = list(decode_isolated(downloaded(photos), model, config(decode_workers=2)))
    assert sorted(item.index for item in items) == list(range(len(photos)))
    for item in items:
        key, data = photos[item.index]
        pixels, located = decode_located(data, model.spec, name=key)
        assert item.error is None and item.spec == model.spec
        assert item.pixels is not None and np.array_equal(item.pixels, pixels)
        assert item.located == located
        batch = model.batch([item.pixels])
        assert torch.equal(batch, model.load(data, name=key).unsqueeze(0))


def test_a_crash_or_a_hang_costs_that_image_only(photos: Photos) -> None:
    named = [
        ("incoming/segfault-1.jpg", photos[0][1]),
        *photos[:3],
        ("incoming/hang-1.jpg", photos[1][1]),
        *photos[3:],
        ("incoming/bad.jpg", b"not a jpeg"),
    ]
    # the clock runs for every file of a chunk: 3 s, not 1, so that a good photo on a
    # stalled CI worker is not taken for a hang
    cfg = config(decode_workers=2, decode_timeout_s=3.0)
    items = {
        item.index: item
        for item in decode_isolated(downloaded(named), pill_model(), cfg, decode=hostile_decode)
    }
    assert sorted(items) == list(range(len(named)))
    errors = {named[i][0]: item.error for i, item in items.items() if item.error is not None}
    assert set(errors) == {"incoming/segfault-1.jpg", "incoming/hang-1.jpg", "incoming/bad.jpg"}
    assert errors["incoming/segfault-1.jpg"].startswith("decoder_crash: ")
    assert "SIGSEGV" in errors["incoming/segfault-1.jpg"]
    assert errors["incoming/hang-1.jpg"] == "decode_timeout: decoding took longer than 3 s"
    assert errors["incoming/bad.jpg"].startswith("not_an_image: ")
    # every image of the crashed and the overdue worker's chunks was still decoded
    assert all(items[i].pixels is not None for i in range(len(named)) if named[i][0] not in errors)


def test_cache_hits_and_failed_downloads_pass_through_undecoded(photos: Photos) -> None:
    hit = InputImage(7, "incoming/hit.jpg", 0.0, digest="ab", hit={"label": "a"})
    failed = InputImage(8, "incoming/gone.jpg", 0.0, error="missing: incoming/gone.jpg")
    items = [hit, *downloaded(photos[:2]), failed]
    out = {item.index: item for item in decode_isolated(items, pill_model(), config())}
    assert sorted(out) == [0, 1, 7, 8]
    assert out[7] is hit and hit.spec is None and hit.pixels is None
    assert out[8] is failed and failed.error == "missing: incoming/gone.jpg"
    assert out[0].pixels is not None and out[1].pixels is not None


def test_rows_are_the_same_decoded_in_processes_or_in_threads(folder: Path, tmp_path: Path) -> None:
    model = pill_model()
    images = shutil.copytree(folder, tmp_path / "images")
    (images / "bad.jpg").write_bytes(b"\xff\xd8\xff not the rest of a jpeg")
    tables = {}
    for workers in (0, 2):
        cfg = config(decode_workers=workers, runtimes=["eager"], device="cpu", shard_size=4)
        out = tmp_path / f"workers-{workers}"
        score_batch("models:/tiny/1", str(images), str(out), config=cfg, loader=lambda _: model)
        rows = pq.read_table(out / "shards").sort_by("key").to_pylist()
        tables[workers] = [{k: v for k, v in row.items() if k != "runtime"} for row in rows]
    assert len(tables[2]) == len(list(images.rglob("*.jpg")))
    assert tables[2] == tables[0]
    bad = [row for row in tables[2] if row["key"].endswith("bad.jpg")]
    assert len(bad) == 1 and bad[0]["error"] and bad[0]["label"] is None


def test_a_shard_the_cache_serves_starts_no_decoder(monkeypatch: pytest.MonkeyPatch) -> None:
    from rxvision.data.decode_pool import DecodePool

    def refuse(self: DecodePool) -> None:  # type: ignore[type-arg]
        raise AssertionError("a decoder process started with nothing to decode")

    monkeypatch.setattr(DecodePool, "_start_worker", refuse)
    hits = [InputImage(i, f"incoming/{i}.jpg", 0.0, digest="ab", hit={}) for i in range(3)]
    out = list(decode_isolated(hits, pill_model(), config(decode_workers=2)))
    assert [item.index for item in out] == [0, 1, 2]
