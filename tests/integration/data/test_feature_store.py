"""The feature store against the real S3 stack: cache hits, atomic commits, reading back."""

from __future__ import annotations

import hashlib
import json
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from rxvision.data.feature_shards import FeatureShardDataset
from rxvision.data.feature_store import (
    MANIFEST,
    FeatureManifest,
    FeatureStore,
    FeatureStoreError,
    PreprocessConfig,
    feature_key,
)
from rxvision.data.imaging import ImageSpec, decode_hashed, load_image, load_image_located
from rxvision.data.localize import CropSpec
from rxvision.data.preprocessing import preprocess_snapshot
from rxvision.data.snapshot import SnapshotSettings, SnapshotStore
from rxvision.storage.s3 import S3Config, S3Store

pytestmark = pytest.mark.integration

SNAP = "f" * 64


@pytest.fixture
def store(stack_env: dict[str, str], tmp_path: Path) -> FeatureStore:
    return FeatureStore(f"s3://rxvision-data/features-{tmp_path.name}")


def snapshot_store(tmp_path: Path) -> SnapshotStore:
    """A snapshot store of its own under ``tmp_path``, shards of 10 images."""
    return SnapshotStore(
        SnapshotSettings(
            registry_url=str(tmp_path / "registry.git"),
            remote_url=f"s3://rxvision-data/dvc-{tmp_path.name}",
            cache_dir=tmp_path / "dvc",
            shard_size=10,
        )
    )


def test_second_preprocess_is_a_cache_hit(store: FeatureStore, pill_dir: Path) -> None:
    cfg = PreprocessConfig(img_size=64, shard_size=20)
    first, built = store.materialize(pill_dir, SNAP, cfg)
    assert built and first.images == 48 and len(first.shards) == 3
    again, built_again = store.materialize(pill_dir, SNAP, cfg)
    assert not built_again and again == first


def test_another_config_is_another_key(store: FeatureStore, pill_dir: Path) -> None:
    a = feature_key(SNAP, PreprocessConfig(img_size=64))
    b = feature_key(SNAP, PreprocessConfig(img_size=96))
    assert a != b
    assert feature_key(SNAP, PreprocessConfig(img_size=64, shard_size=7)) == a


def test_shards_hold_the_resized_pixels(
    store: FeatureStore, pill_dir: Path, tmp_path: Path
) -> None:
    manifest, _ = store.materialize(pill_dir, SNAP, PreprocessConfig(img_size=32, shard_size=20))
    paths = store.download(manifest, tmp_path / "cache")
    data = FeatureShardDataset(manifest, paths)
    image, label = data[5]
    rel = manifest.shards[0].paths[5]
    assert image.shape == (32, 32, 3) and image.dtype == np.uint8
    # exactly the pixels scoring decodes from the same file under the same contract
    assert manifest.spec == ImageSpec(img_size=32)
    assert np.array_equal(image, load_image(pill_dir / rel, manifest.spec))
    # and close to a plain full decode + resize (JPEG draft decoding differs slightly)
    with Image.open(pill_dir / rel) as img:
        expected = np.asarray(img.convert("RGB").resize((32, 32), Image.Resampling.BILINEAR))
    assert np.abs(image.astype(int) - expected.astype(int)).mean() < 8
    assert manifest.classes[label] == rel.split("/")[0]
    # each row carries its content hashes, for the content split
    record = manifest.shards[0]
    assert len(record.sha256) == len(record.paths) == len(record.phash)
    assert record.sha256[5] == hashlib.sha256((pill_dir / rel).read_bytes()).hexdigest()


def test_masked_crops_are_stored_as_scoring_decodes_them(
    store: FeatureStore, pill_dir: Path, tmp_path: Path
) -> None:
    spec = ImageSpec(img_size=48, crop=CropSpec(mask_background=True))
    manifest, _ = store.materialize(pill_dir, SNAP, PreprocessConfig.for_spec(spec, 20))
    assert manifest.spec == spec
    data = FeatureShardDataset(manifest, store.download(manifest, tmp_path / "cache"))
    rows = [(record, i) for record in manifest.shards for i in range(len(record.paths))]
    assert len(rows) == len(data) == 48
    for index, (record, i) in enumerate(rows):
        path = pill_dir / record.paths[i]
        pixels, located = load_image_located(path, spec)
        # the identical model input, its localization status, the whole photo's hash
        assert np.array_equal(data[index][0], pixels)
        assert record.located[i] == located
        assert record.phash[i] == f"{decode_hashed(path.read_bytes(), spec)[2]:016x}"
    assert sum(record.located.count("localized") for record in manifest.shards) >= 40


def test_interrupted_build_leaves_no_visible_set(
    store: FeatureStore, pill_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cfg = PreprocessConfig(img_size=32, shard_size=10)
    key = feature_key(SNAP, cfg)
    calls = {"n": 0}
    real_put = store.s3.put_bytes

    def dying_put(uri: str, data: bytes) -> None:
        calls["n"] += 1
        if calls["n"] == 3:
            raise KeyboardInterrupt("killed mid-build")
        real_put(uri, data)

    monkeypatch.setattr(store.s3, "put_bytes", dying_put)
    with pytest.raises(KeyboardInterrupt):
        store.materialize(pill_dir, SNAP, cfg)
    monkeypatch.setattr(store.s3, "put_bytes", real_put)
    assert store.manifest(key) is None  # readers see nothing
    manifest, built = store.materialize(pill_dir, SNAP, cfg)
    assert built and manifest.images == 48
    # The interrupted attempt's shards were cleaned up at commit.
    keys = list(S3Store(S3Config.from_env()).list_keys(store.prefix(key) + "/attempts/"))
    assert {k.split("/attempts/")[1].split("/")[0] for k in keys} == {manifest.attempt}


def test_losing_writer_keeps_the_winners_set(store: FeatureStore, pill_dir: Path) -> None:
    cfg = PreprocessConfig(img_size=32, shard_size=50)
    winner, _ = store.materialize(pill_dir, SNAP, cfg)
    loser = type(winner)(**{**winner.__dict__, "attempt": "loser0000000"})
    result = store._commit(loser, cfg)
    assert result.attempt == winner.attempt
    body = json.loads(store.s3.get_bytes(f"{store.prefix(winner.key)}/{MANIFEST}"))
    assert body["attempt"] == winner.attempt


@pytest.mark.timeout(300)
def test_a_build_forked_from_a_process_using_opencv_threads_finishes(
    store: FeatureStore, pill_dir: Path
) -> None:
    import cv2

    # OpenCV's thread pool now has threads in this process (what earlier tests leave):
    # forked workers must not touch it (cv2.setNumThreads in a forked child hangs)
    default = cv2.getNumThreads()
    cv2.setNumThreads(2)
    try:
        cv2.GaussianBlur(np.zeros((2000, 2000, 3), np.uint8), (0, 0), 5.0)
        cfg = PreprocessConfig(img_size=24, shard_size=7)
        manifest, built = store.materialize(pill_dir, SNAP, cfg)
    finally:
        # later tests compare this process's OpenCV default with a fresh process's
        # (tests/unit/test_forkserver.py): on more than 2 cores, 2 would differ
        cv2.setNumThreads(default)
    assert built and manifest.images == 48 and len(manifest.shards) == 7


def test_a_snapshot_preprocessed_in_its_shards_equals_its_pulled_folder(
    store: FeatureStore, pill_dir: Path, tmp_path: Path
) -> None:
    snapshots = snapshot_store(tmp_path)
    info, _ = snapshots.create(pill_dir, "v1")
    spec = ImageSpec(img_size=40, crop=CropSpec(mask_background=True))
    cfg = PreprocessConfig.for_spec(spec, 16)
    packed_set, built = preprocess_snapshot(snapshots, store, "v1", cfg, workers=2)
    assert built and packed_set.snapshot_hash == info.content_hash
    # the same rows, hashes and pixels as the files the pull writes, preprocessed one by one
    snapshots.pull("v1", tmp_path / "pulled")
    folder_store = FeatureStore(store.root_uri + "-folder")
    folder_set, _ = folder_store.materialize(tmp_path / "pulled", info.content_hash, cfg)
    assert [(s.paths, s.labels, s.sha256, s.phash, s.located) for s in packed_set.shards] == [
        (s.paths, s.labels, s.sha256, s.phash, s.located) for s in folder_set.shards
    ]
    packed = FeatureShardDataset(packed_set, store.download(packed_set, tmp_path / "a"))
    folder = FeatureShardDataset(folder_set, folder_store.download(folder_set, tmp_path / "b"))
    assert all(np.array_equal(packed[i][0], folder[i][0]) for i in range(48))


def test_a_shard_changed_on_disk_is_refused_naming_the_image(
    store: FeatureStore, pill_dir: Path, tmp_path: Path
) -> None:
    snapshots = snapshot_store(tmp_path)
    snapshots.create(pill_dir, "v1")
    with snapshots.fetched("v1") as packed:
        images = packed.images()
        victim = images[13]
        shard = Path(victim.file)
        # an in-place edit of one image's bytes in the checked-out shard (a hard link of
        # DVC's cache): same size, other content
        data = bytearray(shard.read_bytes())
        data[victim.offset + victim.size // 2] ^= 0xFF
        shard.unlink()
        shard.write_bytes(bytes(data))
        with pytest.raises(
            FeatureStoreError,
            match=rf"{victim.path} \(in .*{shard.name}\): "
            r"content differs from the snapshot's index",
        ):
            store.materialize_images(images, "e" * 64, PreprocessConfig(img_size=24))
    assert store.manifest(feature_key("e" * 64, PreprocessConfig(img_size=24))) is None


def next_night(pill_dir: Path, out: Path) -> tuple[int, int]:
    """``pill_dir`` a night later in ``out``: one photo gone, one replaced by new bytes at
    its path, two new; (images, unchanged images)."""
    shutil.copytree(pill_dir, out)
    photos = sorted(out.rglob("*.jpg"))
    photos[0].unlink()
    with Image.open(photos[5]) as image:
        image.transpose(Image.Transpose.FLIP_LEFT_RIGHT).save(photos[5], quality=90)
    for n, source in enumerate(photos[20:22]):
        with Image.open(source) as image:
            image.rotate(90).save(source.parent / f"new-{n}.jpg", quality=90)
    return len(photos) - 1 + 2, len(photos) - 2


def rows_of(manifest: FeatureManifest) -> list[tuple[str, str, str, str, str]]:
    """Every row's (path, label, sha256, perceptual hash, localization), by path: a set
    that reads earlier objects in place holds its rows in another order."""
    return sorted(
        row
        for s in manifest.shards
        for row in zip(s.paths, s.labels, s.sha256, s.phash, s.located, strict=True)
    )


def pixels_by_path(manifest: FeatureManifest, dataset: FeatureShardDataset) -> dict:
    paths = [p for shard in manifest.shards for p in shard.paths]
    return {path: dataset[i][0] for i, path in enumerate(paths)}


def assert_same_set(
    warm: FeatureManifest, warm_dir: list[Path], cold: FeatureManifest, cold_dir: list[Path]
) -> None:
    """``warm`` holds exactly the rows and pixels of ``cold`` (decoded from scratch)."""
    assert rows_of(warm) == rows_of(cold)
    ours = pixels_by_path(warm, FeatureShardDataset(warm, warm_dir))
    theirs = pixels_by_path(cold, FeatureShardDataset(cold, cold_dir))
    assert ours.keys() == theirs.keys()
    assert all(np.array_equal(ours[path], theirs[path]) for path in ours)


@dataclass
class TwoNights:
    """Two nights' snapshots (v1, then ``next_night``'s v2 in ``tmp_path / "night2"``)
    and their 40 px pill-crop sets, 16 rows per shard."""

    snapshots: SnapshotStore
    cfg: PreprocessConfig
    first: FeatureManifest
    second: FeatureManifest
    second_built: bool
    images: int
    unchanged: int


def two_cropped_nights(store: FeatureStore, pill_dir: Path, tmp_path: Path) -> TwoNights:
    """Build ``pill_dir``'s set as v1, then the next night's as v2."""
    snapshots = snapshot_store(tmp_path)
    snapshots.create(pill_dir, "v1")
    cfg = PreprocessConfig.for_spec(ImageSpec(img_size=40, crop=CropSpec()), 16)
    first, _ = preprocess_snapshot(snapshots, store, "v1", cfg)
    images, unchanged = next_night(pill_dir, tmp_path / "night2")
    snapshots.create(tmp_path / "night2", "v2")
    second, built = preprocess_snapshot(snapshots, store, "v2", cfg)
    return TwoNights(snapshots, cfg, first, second, built, images, unchanged)


def test_a_new_snapshot_reads_its_unchanged_images_rows_in_place_from_the_last_set(
    store: FeatureStore, pill_dir: Path, tmp_path: Path
) -> None:
    nights = two_cropped_nights(store, pill_dir, tmp_path)
    snapshots, cfg, first, second = nights.snapshots, nights.cfg, nights.first, nights.second
    images, unchanged = nights.images, nights.unchanged
    assert first.extra["reused"] == 0 and "reused_from" not in first.extra
    assert nights.second_built and second.images == images == 49
    assert second.extra["reused"] == second.extra["read_in_place"] == unchanged == 46
    assert second.extra["reused_from"] == first.key and second.sets_read() == [first.key]
    # first's three shards (14, 16 and 16 rows still in the set) are read in place: the
    # new set wrote one shard, of its three new photos
    assert [s.set_key for s in second.shards] == [first.key] * 3 + [""]
    assert second.shards[0].rows is not None and len(second.shards[0].rows) == 14
    written = [k for k in store.s3.list_keys(store.prefix(second.key) + "/") if ".npy" in k]
    assert len(written) == 1 and written[0].endswith(second.shards[3].key)
    # exactly the rows and pixels of the same snapshot decoded from scratch
    cold_store = FeatureStore(store.root_uri + "-cold")
    cold, _ = preprocess_snapshot(snapshots, cold_store, "v2", cfg)
    assert cold.extra["reused"] == 0
    warm_paths = store.download(second, tmp_path / "warm")
    assert_same_set(second, warm_paths, cold, cold_store.download(cold, tmp_path / "cold"))


def test_a_nights_small_shard_is_merged_with_the_next_nights_new_photos(
    store: FeatureStore, pill_dir: Path, tmp_path: Path
) -> None:
    nights = two_cropped_nights(store, pill_dir, tmp_path)
    snapshots, cfg, first, second = nights.snapshots, nights.cfg, nights.first, nights.second
    assert [len(s.paths) for s in second.shards] == [14, 16, 16, 3]
    # night 3: two more new photos. Night 2's own 3-row shard is under half a shard: its
    # rows are copied, with the 2 new, into one shard; first's objects stay read in place
    shutil.copytree(tmp_path / "night2", tmp_path / "night3")
    photos = sorted((tmp_path / "night3").rglob("*.jpg"))
    for n, source in enumerate(photos[30:32]):
        with Image.open(source) as photo:
            photo.rotate(180).save(source.parent / f"third-{n}.jpg", quality=90)
    snapshots.create(tmp_path / "night3", "v3")
    third, built = preprocess_snapshot(snapshots, store, "v3", cfg)
    assert built and third.images == 51 and third.extra["reused_from"] == second.key
    assert third.extra["read_in_place"] == 46 and third.extra["reused"] == 49
    assert [s.set_key for s in third.shards] == [first.key] * 3 + [""]
    assert [len(s.paths) for s in third.shards] == [14, 16, 16, 5]
    assert third.sets_read() == [first.key]
    assert set(second.shards[3].paths) < set(third.shards[3].paths)
    cold_store = FeatureStore(store.root_uri + "-cold")
    cold, _ = preprocess_snapshot(snapshots, cold_store, "v3", cfg)
    warm_paths = store.download(third, tmp_path / "warm")
    assert_same_set(third, warm_paths, cold, cold_store.download(cold, tmp_path / "cold"))


def test_the_next_nights_training_host_links_the_shards_it_already_has(
    store: FeatureStore, pill_dir: Path, tmp_path: Path
) -> None:
    snapshots, cfg, first = first_night(store, pill_dir, tmp_path)
    next_night(pill_dir, tmp_path / "night2")
    snapshots.create(tmp_path / "night2", "v2")
    second, _ = preprocess_snapshot(snapshots, store, "v2", cfg)
    cache = tmp_path / "features"
    had = store.download(first, cache)
    fetched: list[str] = []
    download_file = store.s3.download_file

    def counted(uri: str, path: Path) -> None:
        fetched.append(uri)
        download_file(uri, path)

    store.s3.download_file = counted  # type: ignore[method-assign]
    got = store.download(second, cache)
    # the one new shard is fetched; first's three are hard links to the files already here
    assert fetched == [store.object_uri(second, second.shards[3])]
    assert [p.stat().st_ino for p in got[:3]] == [p.stat().st_ino for p in had]
    assert got[0].name == f"{first.key}--{Path(first.shards[0].key).name}"
    # a third night reads the objects the second read in place, and links them from the
    # second's folder once the first's is gone (its new photo is a copy of one of them);
    # the second's own 3-row shard is under half a shard: copied into one of the third's
    shutil.rmtree(cache / first.key)
    (tmp_path / "night2" / "ndc-extra").mkdir()
    shutil.copy(sorted(pill_dir.rglob("*.jpg"))[3], tmp_path / "night2" / "ndc-extra" / "x.jpg")
    snapshots.create(tmp_path / "night2", "v3")
    third, _ = preprocess_snapshot(snapshots, store, "v3", cfg)
    assert third.sets_read() == [first.key] and "ndc-extra/x.jpg" in third.shards[0].paths
    assert third.shards[3].paths == second.shards[3].paths and not third.shards[3].set_key
    fetched.clear()
    again = store.download(third, cache)
    assert fetched == [store.object_uri(third, s) for s in third.shards if not s.set_key]
    assert [p.stat().st_ino for p in again[:3]] == [p.stat().st_ino for p in got[:3]]
    cold_store = FeatureStore(store.root_uri + "-cold")
    cold, _ = preprocess_snapshot(snapshots, cold_store, "v3", cfg, reuse=False)
    assert_same_set(third, again, cold, cold_store.download(cold, tmp_path / "cold"))


def first_night(
    store: FeatureStore, pill_dir: Path, tmp_path: Path
) -> tuple[SnapshotStore, PreprocessConfig, FeatureManifest]:
    """Snapshot ``pill_dir`` as v1 and build its 24 px set: (snapshots, config, set)."""
    snapshots = snapshot_store(tmp_path)
    snapshots.create(pill_dir, "v1")
    cfg = PreprocessConfig(img_size=24, shard_size=16)
    first, _ = preprocess_snapshot(snapshots, store, "v1", cfg)
    return snapshots, cfg, first


def test_an_adhoc_build_of_a_few_images_leaves_the_next_night_its_reuse(
    store: FeatureStore, pill_dir: Path, tmp_path: Path
) -> None:
    # someone preprocesses a few photos with the nightly's config between two nights: the
    # next night still copies its unchanged rows from last night's set, not the few
    snapshots, cfg, first = first_night(store, pill_dir, tmp_path)
    few = tmp_path / "few"
    product = sorted(p for p in pill_dir.iterdir() if p.is_dir())[0]
    (few / product.name).mkdir(parents=True)
    for photo in sorted(product.glob("*.jpg"))[:3]:
        shutil.copy(photo, few / product.name / photo.name)
    snapshots.create(few, "adhoc")
    adhoc, _ = preprocess_snapshot(snapshots, store, "adhoc", cfg)
    assert adhoc.images == 3 and adhoc.extra["reused_from"] == first.key
    images, unchanged = next_night(pill_dir, tmp_path / "night2")
    snapshots.create(tmp_path / "night2", "v2")
    second, built = preprocess_snapshot(snapshots, store, "v2", cfg)
    assert built and second.images == images
    assert second.extra["reused_from"] == first.key
    assert second.extra["reused"] == unchanged == 46
    # with nothing to tell them apart, the newest set is the one read
    newest = store.earlier_rows(cfg)
    assert newest is not None and newest.set_key == second.key


def test_no_rows_are_reused_from_another_spec_or_a_deleted_set(
    store: FeatureStore, pill_dir: Path, tmp_path: Path
) -> None:
    snapshots, cfg, first = first_night(store, pill_dir, tmp_path)
    assert store.earlier_rows(cfg) is not None
    assert store.earlier_rows(PreprocessConfig(img_size=32, shard_size=16)) is None
    store.s3.delete_prefix(store.prefix(first.key) + "/")
    assert store.earlier_rows(cfg) is None
    next_night(pill_dir, tmp_path / "night2")
    snapshots.create(tmp_path / "night2", "v2")
    second, built = preprocess_snapshot(snapshots, store, "v2", cfg)
    assert built and second.extra["reused"] == 0 and second.images == 49


def test_a_set_written_by_a_newer_version_is_refused_by_name_and_not_reused(
    store: FeatureStore, pill_dir: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    _, cfg, first = first_night(store, pill_dir, tmp_path)
    uri = f"{store.prefix(first.key)}/manifest.json"
    data = json.loads(store.s3.get_bytes(uri))
    data["shards"][0]["mask"] = [0, 1]  # a field a later version might add
    store.s3.put_bytes(uri, json.dumps(data).encode())
    with pytest.raises(FeatureStoreError, match=rf"{first.key}: .*'shards\[\]\.mask'"):
        store.manifest(first.key)
    # the next night reuses nothing from it, and says why, instead of failing
    with caplog.at_level("WARNING"):
        assert store.earlier_rows(cfg) is None
    assert f"not reusing {store.prefix(first.key)}" in caplog.text


def test_an_earlier_shard_gone_from_s3_is_decoded_instead_and_the_build_still_equal(
    store: FeatureStore, pill_dir: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    snapshots, cfg, first = first_night(store, pill_dir, tmp_path)
    lost = first.shards[1].key
    store.s3.client.delete_object(
        Bucket="rxvision-data", Key=f"{store.prefix(first.key)}/{lost}".split("/", 3)[3]
    )
    next_night(pill_dir, tmp_path / "night2")
    snapshots.create(tmp_path / "night2", "v2")
    with caplog.at_level("WARNING"):
        second, built = preprocess_snapshot(snapshots, store, "v2", cfg)
    assert built and 0 < second.extra["reused"] < 46
    assert f"{first.key}/{lost}: cannot read" in caplog.text
    cold_store = FeatureStore(store.root_uri + "-cold")
    cold, _ = preprocess_snapshot(snapshots, cold_store, "v2", cfg, reuse=False)
    warm_paths = store.download(second, tmp_path / "warm")
    assert_same_set(second, warm_paths, cold, cold_store.download(cold, tmp_path / "cold"))


def test_a_training_hosts_cache_keeps_the_feature_sets_used_last(
    store: FeatureStore, pill_dir: Path, tmp_path: Path
) -> None:
    from rxvision.train.data_source import resolve_data

    sets = [
        store.materialize(pill_dir, SNAP, PreprocessConfig(img_size=s))[0] for s in (64, 72, 80)
    ]
    cache = tmp_path / "features"
    (cache / "notes").mkdir(parents=True)  # not a downloaded set: never touched
    uri = [store.prefix(m.key) for m in sets]

    first = resolve_data(uri[0], cache, keep_sets=2)
    resolve_data(uri[1], cache, keep_sets=2)
    assert sorted(p.name for p in cache.iterdir()) == sorted([sets[0].key, sets[1].key, "notes"])
    resolve_data(uri[0], cache, keep_sets=2)  # used again: now the newer of the two
    resolve_data(uri[2], cache, keep_sets=2)
    assert sorted(p.name for p in cache.iterdir()) == sorted([sets[0].key, sets[2].key, "notes"])
    assert all(path.is_file() for path in first.shard_paths)

    # the set deleted is downloaded again when named, and 0 keeps every set
    again = resolve_data(uri[1], cache, keep_sets=0)
    assert len(again.labels) == 48 and all(path.is_file() for path in again.shard_paths)
    assert {p.name for p in cache.iterdir()} == {*(m.key for m in sets), "notes"}
