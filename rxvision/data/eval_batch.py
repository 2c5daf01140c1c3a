"""The evaluation preset applied to a whole batch of crops at once, in NumPy.

Scoring used to run the preset per image (albumentations' ``Normalize``, then
``ToTensorV2``: a CHW view with channels innermost) and ``torch.stack`` the views. That
stack is a strided gather run by torch's OpenMP threads, and those threads spin-wait
after every batch: in the scoring job on 2 cores, with decode workers wanting the same
cores, the stack, its spin and the per-image preset cost 0.6-0.9 ms of CPU per image
(measured: ``OMP_WAIT_POLICY=PASSIVE`` alone took the job's own process from ~11.4 to
~10.6 ms per image; this module, from 11.2 to 10.5).

``Normalize`` maps each channel's value on its own (albumentations does it with a lookup
table for uint8 input), so the preset is a table of 256 values per channel. The table
is read from the preset itself, by passing the 256 values through it, and checked
against the per-image preset once; the batch is then one table lookup per channel into
the NCHW float batch: the same values bit for bit, in one thread, with no torch op.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import numpy as np
import torch

from rxvision.data.imaging import PreprocessingMismatch
from rxvision.data.presets import EvalPreset

log = logging.getLogger(__name__)

CHANNELS = 3


class EvalBatch:
    """``torch.stack([preset(image) for image in images])``, the same values, faster."""

    def __init__(self, preset: EvalPreset) -> None:
        self.preset = preset
        ramp = np.repeat(np.arange(256, dtype=np.uint8).reshape(1, 256, 1), CHANNELS, axis=2)
        table = preset.transform(image=ramp)["image"]  # (3, 1, 256): channel, value
        self.table = np.ascontiguousarray(np.asarray(table)[:, 0, :], dtype=np.float32)
        self.exact = self._matches_preset()
        if not self.exact:  # a preset that is not per value: stay exact, per image
            log.warning("the evaluation preset is not a per-value table: batches per image")

    def __call__(self, images: Sequence[np.ndarray]) -> torch.Tensor:
        """The (N, 3, H, W) float32 model input of HWC uint8 RGB crops at the preset's
        size; ``PreprocessingMismatch`` naming the first crop of another shape."""
        for image in images:
            self._check(image)
        if not self.exact:
            return torch.stack([self.preset(image) for image in images])
        return torch.from_numpy(self._lookup(np.stack(images)))

    def _lookup(self, hwc: np.ndarray) -> np.ndarray:
        """The (N, 3, H, W) float32 table values of an (N, H, W, 3) uint8 batch."""
        n, height, width, _ = hwc.shape
        out = np.empty((n, CHANNELS, height, width), dtype=np.float32)
        for channel in range(CHANNELS):
            np.take(self.table[channel], hwc[..., channel], out=out[:, channel])
        return out

    def _check(self, image: np.ndarray) -> None:
        height, width = self.preset.img_size
        if image.dtype != np.uint8 or image.shape != (height, width, CHANNELS):
            raise PreprocessingMismatch(
                f"a {image.dtype} crop of shape {image.shape} given to a {width}x{height} "
                "RGB preset: decode it with rxvision.data.imaging.load_image at the model's spec"
            )

    def _matches_preset(self) -> bool:
        height, width = self.preset.img_size
        probe = np.random.default_rng(0).integers(0, 256, (height, width, CHANNELS), np.uint8)
        probe[0, : min(width, 256), :] = np.arange(min(width, 256), dtype=np.uint8)[:, None]
        by_image = self.preset(probe).unsqueeze(0)
        by_table = torch.from_numpy(self._lookup(probe[None]))
        return by_image.dtype == torch.float32 and torch.equal(by_image, by_table)
