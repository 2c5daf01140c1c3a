"""Batch collation for image tensors that are channel-last in memory.

albumentations' ``ToTensorV2`` returns a CHW *view* of the HWC array it was given (the
channel stride is 1). ``default_collate`` stacks such views into a contiguous NCHW batch:
a strided gather, one byte at a time, ~12x slower than copying each image's contiguous
HWC bytes (measured, 32 images of 224 px). ``collate_channels_last`` stacks the HWC bytes
and returns the NCHW batch as a view with channels-last strides: the same values and
shape, no copy to make it, and the memory format the model converts its input to anyway
(``trainer.channels_last``). In a DataLoader worker it still stacks into shared memory
(``default_collate`` does), so nothing is copied again on its way to the main process.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch.utils.data import default_collate


def is_channel_last_view(tensor: object) -> bool:
    """Whether ``tensor`` is a CHW tensor whose channels are innermost in memory (HWC
    bytes seen as CHW, as ``ToTensorV2`` returns them)."""
    if not isinstance(tensor, torch.Tensor) or tensor.ndim != 3:
        return False
    return tensor.permute(1, 2, 0).is_contiguous()


def stack_channels_last(images: Sequence[torch.Tensor]) -> torch.Tensor:
    """Same-shape CHW channel-last views as one NCHW batch with channels-last strides."""
    hwc = default_collate([image.permute(1, 2, 0) for image in images])
    return hwc.permute(0, 3, 1, 2)


def collate_channels_last(batch: list[Any]) -> Any:
    """``default_collate`` for ``(image, label, ...)`` samples, with the images stacked
    channels-last when each is a channel-last CHW view; any other batch is collated as
    ``default_collate`` does it."""
    first = batch[0] if batch else None
    if not isinstance(first, (tuple, list)) or not first:
        return default_collate(batch)
    images = [sample[0] for sample in batch]
    if not all(is_channel_last_view(image) for image in images):
        return default_collate(batch)
    if len({image.shape for image in images}) != 1:
        return default_collate(batch)  # its own error names the shapes
    rest = default_collate([tuple(sample[1:]) for sample in batch])
    return [stack_channels_last(images), *rest]
