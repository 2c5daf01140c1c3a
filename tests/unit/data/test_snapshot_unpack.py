"""Unpacking a packed snapshot to one file per image: byte-exact, checked against the
index's sha256, and never outside the staging folder (real shards and JPEGs)."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from rxvision.data.packed_snapshot import INDEX_FILE, SHARDS_DIR, PackedSnapshot
from rxvision.data.snapshot_shards import assign_shards, index_directory, write_index, write_shards
from rxvision.data.snapshot_unpack import checked_relative, extract_verified
from rxvision.errors import SnapshotError

pytestmark = pytest.mark.unit


@pytest.fixture
def photos(tmp_path: Path) -> Path:
    """9 real JPEGs in 3 class folders."""
    root = tmp_path / "photos"
    for i in range(9):
        path = root / ("amlo", "ibup", "zanex")[i % 3] / f"img-{i:02d}.jpg"
        path.parent.mkdir(parents=True, exist_ok=True)
        pixels = np.random.default_rng(i).integers(0, 256, (64, 64, 3)).astype(np.uint8)
        Image.fromarray(pixels).save(path, quality=80)
    return root


def pack(
    photos: Path, dataset: Path, edit: dict[str, dict[str, object]] | None = None
) -> PackedSnapshot:
    entries, _ = assign_shards(index_directory(photos), 4)
    write_shards(photos, entries, dataset / SHARDS_DIR)
    changes = edit or {}
    write_index(
        [dataclasses.replace(e, **changes.get(e.path, {})) for e in entries],  # type: ignore[arg-type]
        dataset / INDEX_FILE,
    )
    return PackedSnapshot(dataset)


def test_every_image_is_written_byte_exact_in_its_class_folder(
    photos: Path, tmp_path: Path
) -> None:
    staging = tmp_path / "staging"
    staging.mkdir()
    seen: list[tuple[int, int]] = []
    extract_verified(
        pack(photos, tmp_path / "ds"), staging, lambda _, done, total: seen.append((done, total))
    )
    written = sorted(p.relative_to(staging).as_posix() for p in staging.rglob("*") if p.is_file())
    expected = sorted(p.relative_to(photos).as_posix() for p in photos.rglob("*.jpg"))
    assert written == expected
    for rel in expected:
        assert (staging / rel).read_bytes() == (photos / rel).read_bytes()
    # 9 images in shards of 4: progress after each of the 3 shards, ending at 9 of 9
    assert len(seen) == 3 and seen[-1] == (9, 9)


def test_an_image_whose_bytes_differ_from_the_index_is_refused_by_name(
    photos: Path, tmp_path: Path
) -> None:
    packed = pack(photos, tmp_path / "ds", {"ibup/img-04.jpg": {"sha256": "0" * 64}})
    staging = tmp_path / "staging"
    staging.mkdir()
    with pytest.raises(SnapshotError, match=r"ibup/img-04.jpg: hash differs from the index"):
        extract_verified(packed, staging, None)
    assert not (staging / "ibup" / "img-04.jpg").exists()


@pytest.mark.parametrize("path", ["../outside.jpg", "/etc/outside.jpg", "a/../../outside.jpg"])
def test_an_index_path_outside_the_snapshot_is_refused_before_anything_is_written(
    photos: Path, tmp_path: Path, path: str
) -> None:
    packed = pack(photos, tmp_path / "ds", {"zanex/img-02.jpg": {"path": path}})
    staging = tmp_path / "deep" / "staging"
    staging.mkdir(parents=True)
    with pytest.raises(SnapshotError, match="index path is not inside the snapshot"):
        extract_verified(packed, staging, None)
    assert not any(staging.iterdir())
    assert not (tmp_path / "deep" / "outside.jpg").exists()


def test_plain_relative_paths_pass_the_check() -> None:
    assert checked_relative("amlo/img-01.jpg") == "amlo/img-01.jpg"
    assert checked_relative("..hidden-class/x.jpg") == "..hidden-class/x.jpg"
