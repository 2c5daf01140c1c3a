"""Snapshots against the real S3 stack: byte-exact round trip, immutable tags, listing."""

from __future__ import annotations

import hashlib
import io
import logging
import os
import shutil
import subprocess
import tarfile
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from pathlib import Path

import pytest

from rxvision.data import packed_snapshot
from rxvision.data.layout import DataLayoutError
from rxvision.data.packed_snapshot import PackedSnapshot
from rxvision.data.snapshot import SnapshotSettings, SnapshotStore, pulled_digests
from rxvision.data.snapshot_shards import MARKER_FILE
from rxvision.errors import SnapshotError
from rxvision.storage.s3 import S3Config, S3Store

pytestmark = pytest.mark.integration


@pytest.fixture
def snapshots(tmp_path: Path, stack_env: dict[str, str]) -> SnapshotStore:
    return SnapshotStore(
        SnapshotSettings(
            registry_url=str(tmp_path / "registry.git"),
            remote_url=f"s3://rxvision-data/dvc-{tmp_path.name}",
            cache_dir=tmp_path / "cache",
            shard_size=10,
        )
    )


def tar_parsed(*args: object, **kwargs: object) -> None:
    raise AssertionError("a shard's tar headers were parsed")


def image_files(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in root.rglob("*.jpg")}


def test_snapshot_then_pull_is_byte_exact(
    snapshots: SnapshotStore, pill_dir: Path, tmp_path: Path
) -> None:
    info, created = snapshots.create(pill_dir, "v1")
    assert created and info.images == 48 and info.shards == 5
    assert info.classes and sum(info.classes.values()) == 48
    # Pull from the remote alone: drop the local DVC cache first.
    shutil.rmtree(tmp_path / "cache" / "dvc-cache")
    pulled = snapshots.pull("v1", tmp_path / "out")
    assert pulled.content_hash == info.content_hash
    assert image_files(tmp_path / "out") == image_files(pill_dir)
    assert (tmp_path / "out" / MARKER_FILE).is_file()
    assert not any(".partial" in p.name for p in tmp_path.iterdir())
    # the index stays beside the files: what each must hash to (the feature store's key)
    digests = pulled_digests(tmp_path / "out")
    assert digests == {
        path: hashlib.sha256(data).hexdigest() for path, data in image_files(pill_dir).items()
    }


def test_a_checkout_is_the_verified_shards_read_in_place_nothing_unpacked(
    snapshots: SnapshotStore, pill_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    info, _ = snapshots.create(pill_dir, "v1")
    shutil.rmtree(tmp_path / "cache" / "dvc-cache")
    out = tmp_path / "snapshots" / "v1"
    with monkeypatch.context() as patch:
        # the index records where the packer put each image: no tar header is parsed
        patch.setattr(packed_snapshot.tarfile, "open", tar_parsed)
        assert snapshots.checkout("v1", out).content_hash == info.content_hash
    packed = PackedSnapshot(out)
    assert all(entry.offset > 0 for entry in packed.entries)
    assert {image.path: image.read() for image in packed.images()} == image_files(pill_dir)
    assert not list(out.rglob("*.jpg")) and (out / MARKER_FILE).is_file()
    # where each image lies is recorded by the verification: later readers parse no header
    assert packed.recorded_offsets == {image.path: image.offset for image in packed.images()}
    # the shards are the DVC cache's own files (hard links): a checkout costs no disk
    shards = sorted((out / "shards").iterdir())
    assert len(shards) == 5 and all(shard.stat().st_nlink >= 2 for shard in shards)
    assert not any(".partial" in p.name for p in out.parent.iterdir())
    # held already: kept as it is, nothing fetched again
    before = {shard.name: shard.stat().st_ino for shard in shards}
    assert snapshots.checkout("v1", out).content_hash == info.content_hash
    assert {shard.name: shard.stat().st_ino for shard in shards} == before
    other = tmp_path / "other"
    (other / "mine").mkdir(parents=True)
    with pytest.raises(SnapshotError, match="is not snapshot v1"):
        snapshots.checkout("v1", other)


def test_a_shard_changed_on_s3_is_refused_by_the_checkout_and_nothing_appears(
    snapshots: SnapshotStore, pill_dir: Path, tmp_path: Path
) -> None:
    snapshots.create(pill_dir, "v1")
    s3 = S3Store(S3Config.from_env())
    bucket = snapshots.settings.remote_url.removeprefix("s3://").split("/", 1)[0]
    for key in s3.list_keys(snapshots.settings.remote_url + "/"):
        uri = f"s3://{bucket}/{key}"
        data = bytearray(s3.get_bytes(uri))
        if tarfile.is_tarfile(io.BytesIO(bytes(data))):
            data[512 + 100] ^= 0xFF  # inside the first member's bytes: its header stays whole
            s3.put_bytes(uri, bytes(data))
            break
    else:
        raise AssertionError("no shard among the remote's objects")
    shutil.rmtree(tmp_path / "cache" / "dvc-cache")
    out = tmp_path / "snapshots" / "v1"
    with pytest.raises(SnapshotError, match="hash differs from the index"):
        snapshots.checkout("v1", out)
    assert not out.exists() and list(out.parent.iterdir()) == []


def test_the_remote_holds_a_few_packed_objects_not_one_per_image(
    snapshots: SnapshotStore, pill_dir: Path, tmp_path: Path
) -> None:
    snapshots.create(pill_dir, "v1")
    keys = list(S3Store(S3Config.from_env()).list_keys(snapshots.settings.remote_url + "/"))
    # 5 shards + the index + DVC's directory listing: far fewer than 48 images.
    assert 5 <= len(keys) <= 8, keys


def test_a_new_snapshot_keeps_last_nights_unchanged_shards_and_uploads_the_rest(
    snapshots: SnapshotStore, pill_dir: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    snapshots.create(pill_dir, "night1")  # shards of 10, 10, 10, 10, 8
    s3 = S3Store(S3Config.from_env())
    remote = snapshots.settings.remote_url + "/"
    before = set(s3.list_keys(remote))
    last = PackedSnapshot(tmp_path / "checkouts" / "night1")
    snapshots.checkout("night1", last.dataset)
    night2 = tmp_path / "night2"
    shutil.copytree(pill_dir, night2)
    # one photo of shard 1 retaken, two new photos
    retaken = next(e for e in last.entries if e.shard == 1)
    (night2 / retaken.path).write_bytes((night2 / retaken.path).read_bytes() + b"\0")
    for name in ("zz-new-1.jpg", "zz-new-2.jpg"):
        shutil.copyfile(night2 / last.entries[0].path, night2 / last.entries[0].label / name)

    info, _ = snapshots.create(night2, "night2")

    assert info.images == 50 and info.shards_kept == 4 and info.shards == 6
    # on S3: shard 1's 10 photos and the 2 new ones in 2 new shards, the new index and
    # DVC's new directory listing; the 4 kept shards are last night's objects
    assert len(set(s3.list_keys(remote)) - before) == 4
    # beside last night's checkout, its 4 shards are the files it verified: not read again
    tonight = PackedSnapshot(tmp_path / "checkouts" / "night2")
    with caplog.at_level(logging.INFO, logger="rxvision.data.snapshot"):
        snapshots.checkout("night2", tonight.dataset)
    assert "4 of 6 shards of night2 verified by an earlier checkout here" in caplog.text
    assert {image.path: image.read() for image in tonight.images()} == image_files(night2)
    # a new host fetches every shard from S3 and verifies them all
    caplog.clear()
    shutil.rmtree(tmp_path / "cache" / "dvc-cache")
    fresh = PackedSnapshot(tmp_path / "new-host" / "night2")
    with caplog.at_level(logging.INFO, logger="rxvision.data.snapshot"):
        snapshots.checkout("night2", fresh.dataset)
    assert "0 of 6 shards of night2 verified by an earlier checkout here" in caplog.text
    assert fresh.recorded_offsets == tonight.recorded_offsets

    def shard_digests(packed: PackedSnapshot) -> set[str]:
        shards = (packed.dataset / "shards").iterdir()
        return {hashlib.md5(p.read_bytes()).hexdigest() for p in shards}

    assert len(shard_digests(last) & shard_digests(tonight)) == 4


def test_same_content_under_same_tag_is_a_no_op(snapshots: SnapshotStore, pill_dir: Path) -> None:
    first, _ = snapshots.create(pill_dir, "v1")
    again, created = snapshots.create(pill_dir, "v1")
    assert not created and again.commit == first.commit


def test_moving_a_tag_is_refused(snapshots: SnapshotStore, pill_dir: Path, tmp_path: Path) -> None:
    snapshots.create(pill_dir, "v1")
    changed = tmp_path / "changed"
    shutil.copytree(pill_dir, changed)
    victim = next(changed.rglob("*.jpg"))
    victim.write_bytes(victim.read_bytes()[:-10] + b"0123456789")
    with pytest.raises(SnapshotError, match=r"tag 'v1' already holds other content"):
        snapshots.create(changed, "v1")
    assert snapshots.info("v1").images == 48
    _, created = snapshots.create(changed, "v2")
    assert created and [i.tag for i in snapshots.list_snapshots()] == ["v1", "v2"]
    assert snapshots.latest() == "v2"


def test_a_tags_snapshot_is_read_from_the_registry_once_per_store(
    snapshots: SnapshotStore, pill_dir: Path, tmp_path: Path
) -> None:
    info, _ = snapshots.create(pill_dir, "v1")
    assert snapshots.info("v1") == info
    # tags never move: with the registry gone, the store still knows what v1 is...
    registry = tmp_path / "registry.git"
    registry.rename(tmp_path / "moved.git")
    assert snapshots.info("v1") == info
    # ...and only that: a tag it never read is looked up, and fails
    with pytest.raises(SnapshotError):
        snapshots.info("v2")


def test_excluded_files_are_listed_not_dropped_silently(
    snapshots: SnapshotStore, pill_dir: Path
) -> None:
    bad = sorted(p.relative_to(pill_dir).as_posix() for p in pill_dir.rglob("*.jpg"))[:2]
    info, _ = snapshots.create(pill_dir, "q1", exclude=bad)
    assert info.images == 46 and info.excluded == bad


def test_overlapping_pulls_publish_one_intact_copy_and_spare_each_others_staging(
    snapshots: SnapshotStore, pill_dir: Path, tmp_path: Path
) -> None:
    snapshots.create(pill_dir, "v1")
    out = tmp_path / "data"
    # A pull of another live process (our parent) is under way: its files stay untouched.
    live = tmp_path / f".data.partial-{os.getppid()}-other"
    (live / "a").mkdir(parents=True)
    (live / "a" / "x.jpg").write_bytes(b"in flight")
    # A pull killed earlier (its pid no longer exists) left its staging behind.
    dead = tmp_path / f".data.partial-{dead_pid()}-killed"
    dead.mkdir()
    (dead / "y.jpg").write_bytes(b"half")
    with ThreadPoolExecutor(max_workers=2) as pool:
        infos = list(pool.map(lambda _: snapshots.pull("v1", out), range(2)))
    assert infos[0].content_hash == infos[1].content_hash
    assert image_files(out) == image_files(pill_dir)
    assert (live / "a" / "x.jpg").read_bytes() == b"in flight"
    assert not dead.exists()
    leftovers = [p.name for p in tmp_path.iterdir() if ".partial" in p.name]
    assert leftovers == [live.name]


def dead_pid() -> int:
    proc = subprocess.Popen(["true"])
    proc.wait()
    return proc.pid


def test_pull_refuses_to_overwrite_other_data(
    snapshots: SnapshotStore, pill_dir: Path, tmp_path: Path
) -> None:
    snapshots.create(pill_dir, "v1")
    out = tmp_path / "occupied"
    out.mkdir()
    (out / "precious.txt").write_text("keep me")
    with pytest.raises(SnapshotError, match="occupied"):
        snapshots.pull("v1", out)
    assert (out / "precious.txt").read_text() == "keep me"


def test_unknown_rev_names_known_tags(
    snapshots: SnapshotStore, pill_dir: Path, tmp_path: Path
) -> None:
    snapshots.create(pill_dir, "v1")
    with pytest.raises(SnapshotError, match=r"no snapshot tagged 'v9' \(known: v1\)"):
        snapshots.pull("v9", tmp_path / "x")


def test_a_split_layout_is_refused_before_anything_is_written(
    snapshots: SnapshotStore, pill_dir: Path, tmp_path: Path
) -> None:
    split = tmp_path / "split"
    products = sorted(p for p in pill_dir.iterdir() if p.is_dir())
    for name, product in zip(("train", "valid"), products, strict=False):
        shutil.copytree(product, split / name / product.name)
    with pytest.raises(DataLayoutError, match=r"train/, valid/.*one folder per class"):
        snapshots.create(split, "v1")
    assert snapshots.tags() == []


def cache_objects(cache: Path) -> set[str]:
    """The local DVC cache's object files (content hashes), its lock left out."""
    return {p.name for p in (cache / "dvc-cache").rglob("*") if p.is_file()}


def test_a_bounded_cache_keeps_only_the_last_fetched_snapshots_objects(
    snapshots: SnapshotStore, pill_dir: Path, tmp_path: Path
) -> None:
    snapshots.create(pill_dir, "v1")
    grown = tmp_path / "grown"
    shutil.copytree(pill_dir, grown)
    extra = next(grown.rglob("*.jpg"))
    shutil.copyfile(extra, extra.with_name("aa-new.jpg"))  # sorts early: most shards move
    snapshots.create(grown, "v2")
    cache = tmp_path / "cache"

    def pulled_alone(store: SnapshotStore, rev: str) -> set[str]:
        shutil.rmtree(cache / "dvc-cache")
        store.pull(rev, tmp_path / f"alone-{rev}-{len(list(tmp_path.iterdir()))}")
        return cache_objects(cache)

    only_v1, only_v2 = pulled_alone(snapshots, "v1"), pulled_alone(snapshots, "v2")
    snapshots.pull("v1", tmp_path / "unbounded-v1")
    assert cache_objects(cache) == only_v1 | only_v2 != only_v2  # it grows with each one

    bounded = SnapshotStore(replace(snapshots.settings, keep_only_latest=True))
    bounded.pull("v2", tmp_path / "bounded-v2")
    assert cache_objects(cache) == only_v2
    bounded.pull("v1", tmp_path / "bounded-v1")
    assert cache_objects(cache) == only_v1
    # the pulled folders are the data: the collection touched none of them
    assert image_files(tmp_path / "bounded-v2") == image_files(grown)
    assert image_files(tmp_path / "unbounded-v1") == image_files(pill_dir)
