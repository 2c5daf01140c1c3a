"""Preprocess a snapshot into the feature store: ``rxvision data preprocess``.

The cache is checked before anything is fetched, so a hit costs one S3 read; a miss
fetches the snapshot's shards and reads each image where it lies inside them. (The
nightly DAG's ``preprocess`` task, ``rxvision.pipeline.nightly.preprocess``, reads the
folder its ``validate`` task pulled, keeping only the files validation accepted.)
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from rxvision.data.feature_store import FeatureManifest, FeatureStore, PreprocessConfig, feature_key
from rxvision.data.snapshot import SnapshotStore

log = logging.getLogger(__name__)


def preprocess_snapshot(
    snapshots: SnapshotStore,
    features: FeatureStore,
    tag: str,
    config: PreprocessConfig,
    workers: int = 2,
    progress: Callable[[int, int], None] | None = None,
    reuse: bool = True,
) -> tuple[FeatureManifest, bool]:
    """The feature set of snapshot ``tag``: found (False) or built now (True); with
    ``reuse``, unchanged images' rows are copied from the newest set of ``config``."""
    info = snapshots.info(tag)
    found = features.manifest(feature_key(info.content_hash, config))
    if found is not None:
        log.info("snapshot %s: features already at %s", tag, features.prefix(found.key))
        return found, False
    # the shards are read in place: unpacking 100,000 images to files first cost ~20 s
    with snapshots.fetched(tag) as packed:
        return features.materialize_images(
            packed.images(),
            info.content_hash,
            config,
            workers=workers,
            progress=progress,
            reuse=reuse,
        )
