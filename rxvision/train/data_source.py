"""Where training images come from: an image folder, or a feature-store shard set (a
local ``manifest.json`` or its ``s3://`` prefix), as one ``DataSource``.

``resolve_data`` turns what the user names into a ``DataSource``; ``split_source`` splits
it by content (``rxvision.data.splits``). Every image is decoded by
``rxvision.data.imaging.load_image`` under the config's ``ImageSpec``, as scoring does.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import numpy as np
from torch.utils.data import Dataset

from rxvision.data.feature_local import local_shard_name
from rxvision.data.feature_manifest import MANIFEST, USED_MARKER, FeatureManifest
from rxvision.data.feature_shards import FeatureShardDataset
from rxvision.data.feature_store import FeatureStore
from rxvision.data.imaging import ImageSpec
from rxvision.data.kept_folders import prune_used_last
from rxvision.data.splits import (
    ImageKey,
    SplitAssignment,
    assign_splits,
    require_trainable,
)
from rxvision.errors import ConfigError, DataValidationError, NotFound
from rxvision.home import Home
from rxvision.storage.s3 import parse_s3_uri
from rxvision.train.config import DataLoadingConfig
from rxvision.train.folder_source import ImageFolderDataset, folder_key, folder_rows

log = logging.getLogger(__name__)

Transform = Callable[[np.ndarray], Any]


@dataclass(frozen=True)
class DataSource:
    """Labelled images from one place: an image folder or a local copy of a shard set."""

    description: str
    classes: list[str]
    labels: list[int]
    folder: Path | None = None
    paths: list[str] = field(default_factory=list)
    manifest: FeatureManifest | None = None
    shard_paths: list[Path] = field(default_factory=list)

    @property
    def snapshot_hash(self) -> str | None:
        """The content hash of the snapshot the shard set was built from (None: a folder)."""
        return self.manifest.snapshot_hash if self.manifest else None

    def check_spec(self, spec: ImageSpec) -> None:
        """A shard set must hold pixels of ``spec`` (the model's contract)."""
        if self.manifest is not None:
            spec.require_same(self.manifest.spec, what=self.description)

    def row_paths(self) -> list[str]:
        """The relative path of every row (its file in the snapshot or folder)."""
        if self.manifest is not None:
            return [p for shard in self.manifest.shards for p in shard.paths]
        return list(self.paths)

    def content_keys(self, spec: ImageSpec) -> list[ImageKey]:
        """Each row's file sha256 and perceptual hash (stored in a shard set's manifest;
        computed from the files of an image folder)."""
        if self.manifest is not None:
            shas = [h for shard in self.manifest.shards for h in shard.sha256]
            phashes = [h for shard in self.manifest.shards for h in shard.phash]
            if not len(shas) == len(phashes) == len(self.labels):
                raise DataValidationError(
                    f"{self.description}: the manifest lacks content hashes for some rows; "
                    "rebuild the feature set"
                )
            return [
                ImageKey(sha, int(phash, 16), label)
                for sha, phash, label in zip(shas, phashes, self.labels, strict=True)
            ]
        assert self.folder is not None
        log.info("hashing %d images of %s for the content split", len(self.paths), self.folder)
        return [
            folder_key(self.folder / path, spec, label)
            for path, label in zip(self.paths, self.labels, strict=True)
        ]

    def dataset(
        self, indices: Sequence[int], transform: Transform, spec: ImageSpec
    ) -> Dataset[Any]:
        """The rows ``indices`` of this source, each decoded as ``spec`` and transformed."""
        if self.manifest is not None:
            shards = FeatureShardDataset(self.manifest, self.shard_paths, transform, indices)
            return cast("Dataset[Any]", shards)  # map-style: __len__ and __getitem__
        assert self.folder is not None
        rows = [(self.paths[i], self.labels[i]) for i in indices]
        return ImageFolderDataset(self.folder, rows, transform, spec)


def resolve_data(
    spec: str | Path,
    cache_dir: Path | None = None,
    *,
    exclude: Collection[str] = (),
    keep_sets: int = 0,
) -> DataSource:
    """What ``--data`` names: an ImageFolder directory, a shard set's local
    ``manifest.json`` (or its folder), or a shard set in S3 (``s3://.../<key>[/manifest.json]``,
    downloaded once into ``cache_dir``, which then keeps the ``keep_sets`` sets used last;
    0 keeps all). ``exclude``: paths of an image folder (relative to it, as the validation
    report names them) left out."""
    text = str(spec)
    cache = cache_dir or Home.from_env().cache_dir / "features"
    if text.startswith("s3://"):
        return _from_s3(text, cache, keep_sets)
    path = Path(text).expanduser()
    if path.is_file() and path.name.endswith(".json"):
        return _from_local_manifest(path)
    if path.is_dir() and (path / MANIFEST).is_file():
        return _from_local_manifest(path / MANIFEST)
    if path.is_dir():
        return _from_folder(path, exclude)
    raise NotFound(
        f"--data {text}: no such directory or manifest (expected an image folder, "
        f"a feature-store {MANIFEST}, or s3://bucket/prefix/<key>)"
    )


def _from_folder(root: Path, exclude: Collection[str] = ()) -> DataSource:
    rows = folder_rows(root, exclude)
    classes = sorted({label for _, label in rows})
    index = {c: i for i, c in enumerate(classes)}
    left_out = f" ({len(exclude)} invalid files left out)" if exclude else ""
    return _checked(
        DataSource(
            description=f"image folder {root}{left_out}",
            classes=classes,
            labels=[index[label] for _, label in rows],
            folder=root,
            paths=[p for p, _ in rows],
        )
    )


def _from_local_manifest(path: Path) -> DataSource:
    manifest = FeatureManifest.from_json(json.loads(path.read_text()))
    base = path.parent
    shard_paths = []
    for shard in manifest.shards:
        # the store's layout (<key>/attempts/<id>/shard-N.npy, an object read in place
        # under its own set's folder beside this one) or a flat download
        owner = base.parent / shard.set_key if shard.set_key else base
        for candidate in (owner / shard.key, base / local_shard_name(manifest, shard)):
            if candidate.is_file():
                shard_paths.append(candidate)
                break
        else:
            raise NotFound(f"{path}: shard {shard.key} is not next to the manifest")
    return _manifest_source(manifest, shard_paths, f"feature set {path}")


def _from_s3(uri: str, cache_dir: Path, keep_sets: int) -> DataSource:
    prefix = uri.rstrip("/").removesuffix(f"/{MANIFEST}")
    parse_s3_uri(prefix)  # refuses a malformed URI with its own message
    root, _, key = prefix.rpartition("/")
    store = FeatureStore(root)
    manifest = store.manifest(key)
    if manifest is None:
        raise NotFound(f"--data {uri}: no committed shard set ({MANIFEST} missing)")
    paths = store.download(manifest, cache_dir)
    if keep_sets:
        # each night brings a new set about the catalogue's size: a host that trains by
        # hand every day would otherwise keep them all
        prune_used_last(cache_dir, keep_sets, cache_dir / manifest.key, USED_MARKER)
    return _manifest_source(manifest, paths, f"feature set {prefix}")


def _manifest_source(manifest: FeatureManifest, paths: list[Path], what: str) -> DataSource:
    index = {c: i for i, c in enumerate(manifest.classes)}
    labels = [index[label] for shard in manifest.shards for label in shard.labels]
    return _checked(
        DataSource(
            description=what,
            classes=list(manifest.classes),
            labels=labels,
            manifest=manifest,
            shard_paths=paths,
        )
    )


def _checked(source: DataSource) -> DataSource:
    if len(source.classes) < 2:
        raise ConfigError(
            f"{source.description}: {len(source.classes)} class(es) found; "
            "training needs at least 2 class folders"
        )
    return source


def split_source(source: DataSource, config: DataLoadingConfig) -> SplitAssignment:
    """The content split of ``source`` under ``config`` (refused when a class would have
    no training image)."""
    keys = source.content_keys(config.image_spec)
    assignment = assign_splits(
        keys,
        val_fraction=config.val_fraction,
        test_fraction=config.test_fraction,
        salt=config.split_salt,
        max_distance=config.near_duplicate_distance,
    )
    require_trainable(assignment, source.labels, source.classes)
    warn_empty_held_out(assignment, source.description, config)
    return assignment


def warn_empty_held_out(
    assignment: SplitAssignment, description: str, config: DataLoadingConfig
) -> None:
    """Say so when too few images leave the validation or test split empty: training still
    runs, but what those splits decide is not decided."""
    counts = assignment.counts()
    total = len(assignment.splits)
    if counts["val"] == 0:
        log.warning(
            "%s: no validation images (%d images, data.val_fraction %s): checkpoints are "
            "not compared, and no temperature or review threshold is fitted",
            description,
            total,
            config.val_fraction,
        )
    if counts["test"] == 0:
        log.warning(
            "%s: no test images (%d images, data.test_fraction %s): the model has no test "
            "metrics, and the registry's gates refuse it",
            description,
            total,
            config.test_fraction,
        )
