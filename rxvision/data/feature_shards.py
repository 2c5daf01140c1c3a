"""Reading a committed shard set: its rows as a map-style dataset over the local shard
files, memory-mapped (``FeatureStore.download`` fetches them), for training and benchmarks."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from rxvision.data.feature_manifest import FeatureManifest


class FeatureShardDataset:
    """A map-style dataset over local shard files (memory-mapped), with a transform.

    ``transform`` takes an HWC uint8 array and returns the model input (e.g. an
    albumentations pipeline from ``rxvision.data.presets``); labels are class indices.
    """

    def __init__(
        self,
        manifest: FeatureManifest,
        shard_paths: Sequence[Path],
        transform: Callable[[np.ndarray], Any] | None = None,
        indices: Sequence[int] | None = None,
    ) -> None:
        self.manifest = manifest
        self.class_to_idx = {c: i for i, c in enumerate(manifest.classes)}
        self.shard_paths = list(shard_paths)
        self.transform = transform
        self._arrays: list[np.ndarray | None] = [None] * len(self.shard_paths)
        # (shard, row of its stored array, class): a shard read in place from an earlier
        # set holds only some of its object's rows
        self._rows = [
            (s, stored, self.class_to_idx[label])
            for s, shard in enumerate(manifest.shards)
            for stored, label in zip(shard.array_rows(), shard.labels, strict=True)
        ]
        if indices is not None:
            self._rows = [self._rows[i] for i in indices]

    def __len__(self) -> int:
        return len(self._rows)

    def _array(self, shard: int) -> np.ndarray:
        # Opened lazily in each DataLoader worker: memory maps do not survive pickling.
        array = self._arrays[shard]
        if array is None:
            array = np.load(self.shard_paths[shard], mmap_mode="r", allow_pickle=False)
            self._arrays[shard] = array
        return array

    def __getitem__(self, index: int) -> tuple[Any, int]:
        shard, row, label = self._rows[index]
        image = np.array(self._array(shard)[row])
        return (self.transform(image) if self.transform else image), label

    def labels(self) -> list[int]:
        """The class index of every row (for stratified splits and metrics)."""
        return [label for _, _, label in self._rows]

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state["_arrays"] = [None] * len(self.shard_paths)
        return state
