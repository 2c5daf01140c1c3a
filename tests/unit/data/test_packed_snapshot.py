"""A snapshot's tar shards read in place: each image located by its byte range, checked
against the index, on real shards written by the snapshot packer."""

from __future__ import annotations

import io
import tarfile
from dataclasses import asdict, replace
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image

from rxvision.data import packed_snapshot, snapshot_shards
from rxvision.data.packed_snapshot import (
    INDEX_FILE,
    LOCATIONS_FILE,
    SHARDS_DIR,
    PackedSnapshot,
)
from rxvision.data.snapshot_shards import (
    assign_shards,
    index_directory,
    read_index,
    shard_name,
    write_index,
    write_shards,
)
from rxvision.data.source_image import SourceImage
from rxvision.errors import SnapshotError

pytestmark = pytest.mark.unit


@pytest.fixture
def photos(tmp_path: Path) -> Path:
    """7 real JPEGs of 3 sizes in 2 class folders."""
    root = tmp_path / "photos"
    for i in range(7):
        label = "amlo" if i % 2 else "ibup"
        path = root / label / f"img-{i:02d}.jpg"
        path.parent.mkdir(parents=True, exist_ok=True)
        pixels = np.random.default_rng(i).integers(0, 256, (224, 224 + 16 * (i % 3), 3))
        Image.fromarray(pixels.astype(np.uint8)).save(path, quality=80)
    return root


def pack(
    photos: Path, dataset: Path, shard_size: int = 3, *, offsets: bool = False
) -> PackedSnapshot:
    """A packed snapshot; its index without offsets (as made before the packer recorded
    them: readers parse the tar headers) unless ``offsets``."""
    entries, _ = assign_shards(index_directory(photos), shard_size)
    located = write_shards(photos, entries, dataset / SHARDS_DIR)
    write_index(located if offsets else entries, dataset / INDEX_FILE)
    return PackedSnapshot(dataset)


def no_tar(*args: object, **kwargs: object) -> None:
    raise AssertionError("a shard's tar headers were parsed")


def test_each_image_reads_back_byte_exact_from_its_shard_in_path_order(
    photos: Path, tmp_path: Path
) -> None:
    packed = pack(photos, tmp_path / "dataset")
    images = packed.images()
    files = sorted(p.relative_to(photos).as_posix() for p in photos.rglob("*.jpg"))
    assert [image.path for image in images] == files
    for image in images:
        assert image.read() == (photos / image.path).read_bytes()
        assert image.label == image.path.split("/")[0]
        assert Path(image.file).parent == tmp_path / "dataset" / SHARDS_DIR
        assert image.offset > 0 and image.size == (photos / image.path).stat().st_size
    # 7 images in shards of 3
    assert len({image.file for image in images}) == 3


def test_a_member_the_index_does_not_name_is_refused_naming_the_shard(
    photos: Path, tmp_path: Path
) -> None:
    packed = pack(photos, tmp_path / "dataset")
    shard = packed.shard_path(1)
    with tarfile.open(shard, "a") as tar:
        info = tarfile.TarInfo("ibup/intruder.jpg")
        info.size = 4
        tar.addfile(info, io.BytesIO(b"evil"))
    with pytest.raises(SnapshotError, match=rf"{shard_name(1)}: unexpected member 'ibup/intruder"):
        packed.images()


def test_a_missing_shard_or_member_is_refused(photos: Path, tmp_path: Path) -> None:
    packed = pack(photos, tmp_path / "dataset")
    expected = packed.shards()[0]
    short = dict(expected)
    short["amlo/img-99.jpg"] = next(iter(expected.values()))
    with pytest.raises(SnapshotError, match=r"3 files, the index says 4"):
        packed.shard_images(0, short)
    packed.shard_path(2).unlink()
    with pytest.raises(SnapshotError, match=rf"{shard_name(2)}: cannot read shard"):
        packed.images()


def test_verified_images_read_each_shard_mapped_and_release_it(
    photos: Path, tmp_path: Path
) -> None:
    packed = pack(photos, tmp_path / "dataset")
    by_shard = packed.shards()
    shard = packed.shard_path(0)

    def mapped() -> bool:
        return str(shard) in Path("/proc/self/maps").read_text()

    read = {}
    for image, data in packed.verified_images(0, by_shard[0]):
        assert mapped()  # the shard's bytes come from its mapping, not a copy in the heap
        read[image.path] = bytes(data)
    del image, data
    assert not mapped()  # unmapped once its last slice is gone: no shard stays held
    assert read == {p: (photos / p).read_bytes() for p in by_shard[0]}


def test_an_empty_or_missing_shard_is_refused_naming_it(photos: Path, tmp_path: Path) -> None:
    packed = pack(photos, tmp_path / "dataset")
    by_shard = packed.shards()
    packed.shard_path(0).write_bytes(b"")  # a file that cannot be mapped
    with pytest.raises(SnapshotError, match=rf"{shard_name(0)}: cannot read shard"):
        list(packed.verified_images(0, by_shard[0]))
    packed.shard_path(1).unlink()
    with pytest.raises(SnapshotError, match=rf"{shard_name(1)}: cannot read shard"):
        list(packed.verified_images(1, by_shard[1]))


def test_the_index_reads_back_whole_across_batches(
    photos: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    entries, _ = assign_shards(index_directory(photos), 3)
    write_index(entries, tmp_path / INDEX_FILE)
    monkeypatch.setattr(snapshot_shards, "INDEX_BATCH", 2)  # 7 entries: 4 batches
    assert read_index(tmp_path / INDEX_FILE) == entries


def test_an_index_column_unknown_or_missing_is_named_and_shard_defaults(
    photos: Path, tmp_path: Path
) -> None:
    entries, _ = assign_shards(index_directory(photos), 3)
    rows = [{k: v for k, v in asdict(e).items() if k != "shard"} for e in entries]
    pq.write_table(pa.Table.from_pylist(rows), tmp_path / "old.parquet")
    # an index written before shards existed: every entry unassigned
    assert read_index(tmp_path / "old.parquet") == [replace(e, shard=-1) for e in entries]
    assert all(e.offset == -1 for e in read_index(tmp_path / "old.parquet"))
    newer = [{**asdict(e), "rotation": 0} for e in entries]
    pq.write_table(pa.Table.from_pylist(newer), tmp_path / "newer.parquet")
    with pytest.raises(SnapshotError, match=r"unknown \['rotation'\], missing \[\]"):
        read_index(tmp_path / "newer.parquet")
    no_hash = [{k: v for k, v in r.items() if k != "sha256"} for r in rows]
    pq.write_table(pa.Table.from_pylist(no_hash), tmp_path / "broken.parquet")
    with pytest.raises(SnapshotError, match=r"unknown \[\], missing \['sha256'\]"):
        read_index(tmp_path / "broken.parquet")


def test_a_member_whose_size_differs_from_the_index_is_refused(
    photos: Path, tmp_path: Path
) -> None:
    packed = pack(photos, tmp_path / "dataset")
    expected = packed.shards()[0]
    path, entry = next(iter(expected.items()))
    wrong = {**expected, path: replace(entry, size=entry.size + 1)}
    with pytest.raises(SnapshotError, match=rf"{path} is {entry.size} bytes, the index says"):
        packed.shard_images(0, wrong)


def test_a_byte_range_past_the_end_of_its_file_is_a_read_error(tmp_path: Path) -> None:
    file = tmp_path / "short.bin"
    file.write_bytes(b"0123456789")
    assert SourceImage("a/b.jpg", "a", str(file), 2, 5).read() == b"23456"
    assert SourceImage.whole_file(tmp_path, "short.bin", "x").read() == b"0123456789"
    with pytest.raises(OSError, match=r"3 bytes at offset 7, expected 5"):
        SourceImage("a/b.jpg", "a", str(file), 7, 5).read()


def test_verification_records_where_each_image_lies_and_readers_parse_no_header(
    photos: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    packed = pack(photos, tmp_path / "dataset")
    parsed = packed.images()
    assert packed.recorded_offsets is None  # nothing recorded: the headers are read
    assert packed.verify() == 7 and not (tmp_path / "dataset" / LOCATIONS_FILE).exists()
    assert packed.verify(record=True) == 7
    assert [p.name for p in (tmp_path / "dataset").iterdir() if "partial" in p.name] == []
    monkeypatch.setattr(packed_snapshot.tarfile, "open", no_tar)
    reader = PackedSnapshot(tmp_path / "dataset")
    assert reader.images() == parsed
    assert [image.read() for image in reader.images()] == [
        (photos / image.path).read_bytes() for image in parsed
    ]


def test_a_locations_record_reads_back_whole_across_batches(
    photos: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    packed = pack(photos, tmp_path / "dataset")
    parsed = {image.path: image.offset for image in packed.images()}
    packed.verify(record=True)
    monkeypatch.setattr(snapshot_shards, "INDEX_BATCH", 2)  # 7 images: 4 batches
    assert PackedSnapshot(tmp_path / "dataset").recorded_offsets == parsed


def test_a_record_that_does_not_list_the_index_is_refused(photos: Path, tmp_path: Path) -> None:
    packed = pack(photos, tmp_path / "dataset")
    packed.verify(record=True)
    # the index of a snapshot without one of the images, beside the old record
    write_index(packed.entries[1:], tmp_path / "dataset" / INDEX_FILE)
    with pytest.raises(SnapshotError, match=rf"{LOCATIONS_FILE}: does not list the index"):
        PackedSnapshot(tmp_path / "dataset").images()


def test_a_locations_record_without_a_column_or_not_parquet_is_refused_naming_it(
    photos: Path, tmp_path: Path
) -> None:
    packed = pack(photos, tmp_path / "dataset")
    packed.verify(record=True)
    record = tmp_path / "dataset" / LOCATIONS_FILE
    paths = [entry.path for entry in packed.entries]
    pq.write_table(pa.table({"path": paths}), record)
    with pytest.raises(SnapshotError, match=rf"{LOCATIONS_FILE}: no offset column"):
        PackedSnapshot(tmp_path / "dataset").images()
    record.write_bytes(b"not parquet at all")
    with pytest.raises(SnapshotError, match=rf"{LOCATIONS_FILE}: unreadable locations record"):
        PackedSnapshot(tmp_path / "dataset").images()


def test_a_recorded_shard_cut_short_or_gone_is_refused_naming_it(
    photos: Path, tmp_path: Path
) -> None:
    packed = pack(photos, tmp_path / "dataset")
    packed.verify(record=True)
    shard = packed.shard_path(1)
    last = max((i for i in packed.images() if i.file == str(shard)), key=lambda i: i.offset)
    shard.write_bytes(shard.read_bytes()[: last.offset + last.size // 2])  # its last image cut
    with pytest.raises(SnapshotError, match=rf"{shard_name(1)}: \d+ bytes, its images end at"):
        PackedSnapshot(tmp_path / "dataset").images()
    shard.unlink()
    with pytest.raises(SnapshotError, match=rf"{shard_name(1)}: cannot read shard"):
        PackedSnapshot(tmp_path / "dataset").images()


# --- an index that records each image's offset (the packer's, since the 30th session) ---


def test_the_packer_records_each_offset_where_tarfile_finds_the_data(
    photos: Path, tmp_path: Path
) -> None:
    entries, _ = assign_shards(index_directory(photos), 3)
    located = write_shards(photos, entries, tmp_path / SHARDS_DIR)
    assert [replace(e, offset=-1) for e in located] == entries  # same entries, same order
    for shard in {e.shard for e in located}:
        path = tmp_path / SHARDS_DIR / shard_name(shard)
        with tarfile.open(path) as tar:
            parsed = {m.name: m.offset_data for m in tar}
        mine = {e.path: e.offset for e in located if e.shard == shard}
        assert mine == parsed
        end = max(e.offset + e.size for e in located if e.shard == shard)
        assert path.stat().st_size == snapshot_shards.packed_shard_size(end)
    write_index(located, tmp_path / INDEX_FILE)
    assert read_index(tmp_path / INDEX_FILE) == located


def test_an_index_with_offsets_locates_every_image_without_parsing_a_header(
    photos: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    parsed = pack(photos, tmp_path / "old").images()
    packed = pack(photos, tmp_path / "new", offsets=True)
    monkeypatch.setattr(packed_snapshot.tarfile, "open", no_tar)
    images = packed.images()
    assert [(i.path, i.offset, i.size, i.sha256) for i in images] == [
        (i.path, i.offset, i.size, i.sha256) for i in parsed
    ]
    read = {
        image.path: bytes(data)
        for shard, expected in packed.shards().items()
        for image, data in packed.verified_images(shard, expected)
    }
    assert read == {i.path: (photos / i.path).read_bytes() for i in parsed}
    assert packed.verify() == 7


def test_with_offsets_a_shard_with_a_member_appended_or_cut_short_is_refused_naming_it(
    photos: Path, tmp_path: Path
) -> None:
    packed = pack(photos, tmp_path / "dataset", offsets=True)
    shard = packed.shard_path(1)
    whole = shard.read_bytes()
    with tarfile.open(shard, "a") as tar:
        info = tarfile.TarInfo("ibup/intruder.jpg")
        info.size = 4
        tar.addfile(info, io.BytesIO(b"evil"))
    refused = rf"{shard_name(1)}: does not end as the packer wrote it after its images"
    with pytest.raises(SnapshotError, match=refused):
        packed.images()
    with pytest.raises(SnapshotError, match=refused):
        list(packed.verified_images(1, packed.shards()[1]))
    shard.write_bytes(whole[: -tarfile.BLOCKSIZE])  # the archive's end cut
    with pytest.raises(SnapshotError, match=refused):
        packed.verify()
    shard.unlink()
    with pytest.raises(SnapshotError, match=rf"{shard_name(1)}: cannot read shard"):
        packed.images()


def test_an_offset_that_points_elsewhere_is_refused_naming_the_image(
    photos: Path, tmp_path: Path
) -> None:
    packed = pack(photos, tmp_path / "dataset", offsets=True)
    expected = packed.shards()[0]
    path, entry = sorted(expected.items())[1]
    moved = {**expected, path: replace(entry, offset=entry.offset - tarfile.BLOCKSIZE)}
    with pytest.raises(SnapshotError, match=rf"{path}: hash differs from the index"):
        list(packed.verified_images(0, moved))


def test_an_index_with_offsets_for_some_images_only_is_read_from_the_headers(
    photos: Path, tmp_path: Path
) -> None:
    packed = pack(photos, tmp_path / "dataset", offsets=True)
    expected = packed.shards()[0]
    path, entry = next(iter(expected.items()))
    partial = {**expected, path: replace(entry, offset=-1)}
    assert packed.indexed_shard_images(0, partial) is None
    parsed = packed.parsed_shard_images(0, expected)
    assert packed.shard_images(0, partial) == parsed
