"""The validator's integrity decode: a JPEG decoded at 1/8 scale flags exactly the
damaged files a full decode flags (every byte of the scan is still parsed)."""

from __future__ import annotations

import io
import pickle
import random
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from rxvision.data.decode import (
    CORRUPT,
    EMPTY_FILE,
    FILE_TOO_LARGE,
    NOT_AN_IMAGE,
    DecodeLimits,
    FileFacts,
    FileTask,
    inspect_file,
)

pytestmark = pytest.mark.unit


def photo_jpeg(progressive: bool) -> bytes:
    rng = np.random.default_rng(0)
    pixels = rng.integers(0, 255, (288, 320, 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, "JPEG", quality=90, progressive=progressive)
    return buffer.getvalue()


def full_decode_fails(data: bytes) -> bool:
    try:
        with Image.open(io.BytesIO(data)) as image:
            image.load()
    except Exception:
        return True
    return False


def damaged(data: bytes) -> list[bytes]:
    """Truncations and overwritten runs of bytes inside the entropy-coded data."""
    scan = data.index(b"\xff\xda")  # start of scan: what follows is coded pixels
    rng = random.Random(0)
    variants = [data[: scan + int((len(data) - scan) * f)] for f in (0.1, 0.5, 0.9, 0.999)]
    for _ in range(24):
        at = rng.randrange(scan + 20, len(data) - 8)
        run = bytes(rng.randrange(256) for _ in range(rng.choice((1, 4, 64))))
        variants.append(data[:at] + run + data[at + len(run) :])
    return variants


@pytest.mark.parametrize("progressive", [False, True])
def test_scaled_decode_flags_what_a_full_decode_flags(tmp_path: Path, progressive: bool) -> None:
    variants = damaged(photo_jpeg(progressive))
    full, ours = [], []
    for i, data in enumerate(variants):
        path = tmp_path / f"v{i}.jpg"
        path.write_bytes(data)
        facts = inspect_file(FileTask(str(path), path.name), DecodeLimits())
        full.append(full_decode_fails(data))
        ours.append(facts.code == CORRUPT)
    assert ours == full
    assert sum(full) >= 4  # the truncations at least: the comparison is not vacuous


def test_facts_come_from_the_header_not_the_scaled_pixels(tmp_path: Path) -> None:
    path = tmp_path / "photo.jpg"
    path.write_bytes(photo_jpeg(False))
    facts = inspect_file(FileTask(str(path), "photo.jpg"), DecodeLimits())
    assert facts.decoded and (facts.width, facts.height, facts.mode) == (320, 288, "RGB")


def test_file_facts_cross_a_process_boundary_unchanged() -> None:
    # each decode worker pickles one FileFacts per file to the parent
    full = FileFacts("pill/a.jpg", 1234, "ab" * 32, "JPEG", "RGB", 288, 240, 8, 6, None, "")
    failed = FileFacts("pill/b.jpg", code=CORRUPT, message="broken data stream")
    for facts in (full, failed):
        again = pickle.loads(pickle.dumps(facts))
        assert again == facts and type(again) is FileFacts
        assert again.decoded is facts.decoded


def test_an_image_inside_a_larger_file_is_judged_by_its_own_bytes(tmp_path: Path) -> None:
    photo, broken = photo_jpeg(False), photo_jpeg(True)[:2000]
    shard = tmp_path / "shard.tar"
    shard.write_bytes(b"x" * 512 + photo + broken + b"\0" * 1024)
    whole = tmp_path / "photo.jpg"
    whole.write_bytes(photo)
    in_shard = inspect_file(FileTask(str(shard), "pill/a.jpg", 512, len(photo)), DecodeLimits())
    alone = inspect_file(FileTask(str(whole), "pill/a.jpg"), DecodeLimits())
    assert in_shard == alone and in_shard.decoded and in_shard.size_bytes == len(photo)
    cut = inspect_file(
        FileTask(str(shard), "pill/b.jpg", 512 + len(photo), len(broken)), DecodeLimits()
    )
    assert cut.code == CORRUPT and cut.size_bytes == len(broken)
    # the task crosses to a decode worker by pickle, its byte range with it
    task = FileTask(str(shard), "pill/a.jpg", 512, len(photo))
    assert pickle.loads(pickle.dumps(task)) == task


def test_a_byte_range_that_cannot_be_read_is_a_finding_naming_its_file(tmp_path: Path) -> None:
    shard = tmp_path / "shard.tar"
    shard.write_bytes(b"\0" * 4096)
    past_end = inspect_file(FileTask(str(shard), "pill/a.jpg", 4000, 500), DecodeLimits())
    assert past_end.code == NOT_AN_IMAGE and "404 bytes short" in past_end.message
    assert str(shard) in past_end.message
    empty = inspect_file(FileTask(str(shard), "pill/b.jpg", 10, 0), DecodeLimits())
    assert empty.code == EMPTY_FILE
    large = inspect_file(
        FileTask(str(shard), "pill/c.jpg", 0, 4096), DecodeLimits(max_file_bytes=1000)
    )
    assert large.code == FILE_TOO_LARGE and large.size_bytes == 4096
    gone = inspect_file(FileTask(str(tmp_path / "gone.tar"), "pill/d.jpg", 0, 10), DecodeLimits())
    assert gone.code == NOT_AN_IMAGE and "gone.tar" in gone.message
