"""One row of a feature set: an image decoded into its stored pixels and content facts
(by a pool worker), or copied from an earlier set when its bytes are unchanged."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from rxvision.data.feature_reuse import EarlierRows
from rxvision.data.imaging import ImageDecodeError, ImageSpec, decode_hashed, sha256_hex
from rxvision.data.source_image import SourceImage
from rxvision.errors import FeatureStoreError


@dataclass(frozen=True)
class DecodedBatch:
    """Images of one decode job and their content hashes."""

    pixels: np.ndarray
    sha256: list[str]
    phash: list[str]
    located: list[str]

    @classmethod
    def from_rows(cls, rows: list[tuple[np.ndarray, str, str, str]]) -> DecodedBatch:
        """Rows of (pixels, sha256, perceptual hash, localization), stacked."""
        return cls(
            np.stack([r[0] for r in rows]),
            [r[1] for r in rows],
            [r[2] for r in rows],
            [r[3] for r in rows],
        )


def load_row(image: SourceImage, spec: ImageSpec) -> tuple[np.ndarray, str, str, str]:
    """One image as stored (``load_image``), its file sha256, its perceptual hash and its
    localization status; bytes that differ from the sha256 the image must have are refused."""
    try:
        data = image.read()
    except OSError as exc:
        raise FeatureStoreError(f"{image.name}: cannot read: {exc}") from exc
    digest = sha256_hex(data)
    if image.sha256 and digest != image.sha256:
        raise FeatureStoreError(
            f"{image.name}: content differs from the snapshot's index "
            f"(sha256 {digest[:12]}, expected {image.sha256[:12]})"
        )
    try:
        pixels, located, frame_hash = decode_hashed(data, spec, name=image.name)
    except ImageDecodeError as exc:
        raise FeatureStoreError(f"{image.name}: cannot decode image: {exc.reason}") from exc
    return pixels, digest, f"{frame_hash:016x}", located


def load_batch(args: tuple[list[SourceImage], dict[str, Any]]) -> DecodedBatch:
    images, spec_dict = args
    spec = ImageSpec.from_dict(spec_dict, source="the feature store's spec")
    return DecodedBatch.from_rows([load_row(image, spec) for image in images])


def reuse_mask(chunk: list[SourceImage], earlier: EarlierRows | None) -> list[bool]:
    """Which images of ``chunk`` are copied from ``earlier`` (decided once per shard, as
    its decodes are submitted)."""
    return [earlier is not None and bool(i.sha256) and i.sha256 in earlier for i in chunk]


def assembled(
    chunk: list[SourceImage],
    mask: list[bool],
    parts: list[DecodedBatch],
    earlier: EarlierRows | None,
    spec: ImageSpec,
) -> tuple[DecodedBatch, int]:
    """One shard's rows in ``chunk`` order and how many were copied: the decoded ones
    from ``parts`` (in order), the masked ones from ``earlier``. A row whose earlier shard
    cannot be read is decoded here instead: a damaged earlier set costs time, never the
    build."""
    decoded = iter(
        (pixels, digest, phash, located)
        for part in parts
        for pixels, digest, phash, located in zip(
            part.pixels, part.sha256, part.phash, part.located, strict=True
        )
    )
    rows: list[tuple[np.ndarray, str, str, str]] = []
    reused = 0
    for image, reuse in zip(chunk, mask, strict=True):
        if not reuse or earlier is None:
            rows.append(next(decoded))
            continue
        try:
            row = earlier.row(image.sha256)
        except FeatureStoreError:
            rows.append(load_row(image, spec))
            continue
        rows.append((row.pixels, image.sha256, row.phash, row.located))
        reused += 1
    return DecodedBatch.from_rows(rows), reused
