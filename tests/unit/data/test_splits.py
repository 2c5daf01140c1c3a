"""Content splits: copies and near-copies of a photo are never on both sides, and images
added later move no earlier image."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from rxvision.data.imaging import ImageSpec, difference_hash, load_image, sha256_hex
from rxvision.data.splits import (
    TEST,
    TRAIN,
    VAL,
    ImageKey,
    assign_splits,
    content_groups,
    require_trainable,
    split_of,
)
from rxvision.data.synth import generate_dataset
from rxvision.errors import DataValidationError

pytestmark = pytest.mark.unit

SPEC = ImageSpec(img_size=64)


def key_of(data: bytes, label: int) -> ImageKey:
    return ImageKey(sha256_hex(data), difference_hash(load_image(data, SPEC)), label)


def reencode(data: bytes, *, quality: int, scale: float) -> bytes:
    """The same photo saved again: another JPEG quality and size (another sha256)."""
    with Image.open(io.BytesIO(data)) as image:
        rgb = image.convert("RGB")
        size = (round(rgb.width * scale), round(rgb.height * scale))
        buffer = io.BytesIO()
        rgb.resize(size, Image.Resampling.BILINEAR).save(buffer, "JPEG", quality=quality)
    return buffer.getvalue()


@pytest.fixture(scope="module")
def photos(tmp_path_factory: pytest.TempPathFactory) -> list[tuple[bytes, int]]:
    """Real synthetic pill photos: 4 products x 30 photos at 160 px."""
    root = tmp_path_factory.mktemp("pills")
    generate_dataset(root, classes=4, per_class=30, size=160, seed=11, lookalikes=False, workers=1)
    classes = sorted(p.name for p in root.iterdir() if p.is_dir())
    return [
        (path.read_bytes(), label)
        for label, name in enumerate(classes)
        for path in sorted((root / name).iterdir())
    ]


def test_planted_duplicates_and_reencodes_never_straddle_the_split(
    photos: list[tuple[bytes, int]],
) -> None:
    rows = list(photos)
    planted: list[tuple[int, int]] = []  # (original row, copy row)
    for index in range(0, len(photos), 3):
        data, label = photos[index]
        for copy in (
            data,
            reencode(data, quality=60, scale=1.0),
            reencode(data, quality=85, scale=0.8),
        ):
            planted.append((index, len(rows)))
            rows.append((copy, label))
    keys = [key_of(data, label) for data, label in rows]
    assignment = assign_splits(keys, val_fraction=0.2, test_fraction=0.2)
    for original, copy in planted:
        assert assignment.groups[original] == assignment.groups[copy]
        assert assignment.splits[original] == assignment.splits[copy]
    # distinct photos stay apart: each original photo is its own group
    originals = {assignment.groups[i] for i in range(len(photos))}
    assert len(originals) == len(photos)
    assert set(assignment.splits) == {TRAIN, VAL, TEST}


def test_adding_images_moves_no_earlier_image(photos: list[tuple[bytes, int]]) -> None:
    first = photos[:80]
    keys = [key_of(data, label) for data, label in first]
    before = assign_splits(keys, val_fraction=0.15, test_fraction=0.15)
    # a later snapshot: new photos, exact copies of old ones, and the old ones reordered
    later = list(reversed(first)) + photos[80:] + first[:10]
    later_keys = [key_of(data, label) for data, label in later]
    after = assign_splits(later_keys, val_fraction=0.15, test_fraction=0.15)
    split_before = {k.sha256: s for k, s in zip(keys, before.splits, strict=True)}
    for key, split in zip(later_keys, after.splits, strict=True):
        if key.sha256 in split_before:
            assert split == split_before[key.sha256]


def test_the_split_is_a_stable_function_of_content_and_salt() -> None:
    rng = np.random.default_rng(0)
    keys = [ImageKey(f"{i:064x}", int(rng.integers(0, 2**63)), i % 3) for i in range(3000)]
    a = assign_splits(keys, val_fraction=0.15, test_fraction=0.15)
    assert a.splits == assign_splits(keys, val_fraction=0.15, test_fraction=0.15).splits
    counts = a.counts()
    assert counts[TEST] / 3000 == pytest.approx(0.15, abs=0.03)
    assert counts[VAL] / 3000 == pytest.approx(0.15, abs=0.03)
    salted = assign_splits(keys, val_fraction=0.15, test_fraction=0.15, salt="other")
    assert salted.splits != a.splits


def test_near_duplicates_group_transitively_within_a_class_only() -> None:
    base = 0x0F0F_0F0F_0F0F_0F0F
    keys = [
        ImageKey("a" * 64, base, 0),
        ImageKey("b" * 64, base ^ 0b111, 0),  # 3 bits from a
        ImageKey("c" * 64, base ^ 0b111_111_000, 0),  # 6 from a, 6 from b: chained via b
        ImageKey("d" * 64, base, 1),  # the same picture under another label: not grouped
        ImageKey("e" * 64, ~base & (2**64 - 1), 0),  # 64 bits away
    ]
    roots = content_groups(keys, max_distance=6)
    assert roots[0] == roots[1] == roots[2]
    assert len({roots[0], roots[3], roots[4]}) == 3
    # a group's key is its smallest sha256, whatever the row order
    assignment = assign_splits(keys, val_fraction=0.2, test_fraction=0.2)
    assert assignment.groups[:3] == ["a" * 64] * 3


def test_a_class_without_training_images_is_named() -> None:
    salt, fractions = "rxvision-split-v1/0", {"val_fraction": 0.4, "test_fraction": 0.4}
    held_out = next(
        f"{i:064x}"
        for i in range(1000)
        if split_of(f"{i:064x}", fractions["val_fraction"], fractions["test_fraction"], salt)
        != TRAIN
    )
    rng = np.random.default_rng(0)
    keys = [ImageKey(f"{i + 5000:064x}", int(rng.integers(0, 2**63)), 0) for i in range(40)]
    keys.append(ImageKey(held_out, 12345, 1))  # the only photo of class 1: held out
    assignment = assign_splits(keys, salt=salt, **fractions)
    with pytest.raises(DataValidationError, match="class\\(es\\) single"):
        require_trainable(assignment, [k.label for k in keys], ["big", "single"])
