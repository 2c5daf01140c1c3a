"""A feature set's local copy (``FeatureStore.download``): one folder per set under a
training host's cache, its shards named so that an object read in place from an earlier
set (``feature_references``) is found in that set's folder and hard-linked, not fetched
again: the next night's training downloads only the shards that are new."""

from __future__ import annotations

import logging
import os
from pathlib import Path

from rxvision.data.feature_manifest import USED_MARKER, FeatureManifest, ShardRecord

log = logging.getLogger(__name__)


def local_shard_name(manifest: FeatureManifest, shard: ShardRecord) -> str:
    """The file name of ``shard``'s array in the set's local folder."""
    name = Path(shard.key).name
    owner = shard.set_key or manifest.key
    return name if owner == manifest.key else f"{owner}--{name}"


def link_local_copy(
    cache_dir: Path, manifest: FeatureManifest, shard: ShardRecord, target: Path
) -> bool:
    """Hard-link ``target`` to a copy of ``shard``'s object in another complete local set
    (the set that wrote it, or one that reads it too); False: there is none here."""
    owner = shard.set_key or manifest.key
    if owner == manifest.key:
        return False
    name = Path(shard.key).name
    candidates = [cache_dir / owner / name, *cache_dir.glob(f"*/{owner}--{name}")]
    for copy in candidates:
        if copy.parent != target.parent and (copy.parent / USED_MARKER).is_file():
            target.parent.mkdir(parents=True, exist_ok=True)
            try:
                os.link(copy, target)
                return True
            except FileExistsError:
                return True
            except OSError as exc:  # another file system, or gone since
                log.info("cannot link %s to %s: %s", copy, target, exc)
    return False
