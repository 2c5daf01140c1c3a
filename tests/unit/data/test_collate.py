"""collate_channels_last: the batch default_collate makes, stacked without a strided gather."""

from __future__ import annotations

import numpy as np
import torch
from torch.utils.data import DataLoader, default_collate

from rxvision.data.collate import collate_channels_last, is_channel_last_view
from rxvision.data.presets import TrainPreset


def _samples(count: int, size: int = 32) -> list[tuple[torch.Tensor, int]]:
    rng = np.random.default_rng(0)
    preset = TrainPreset(img_size=size, normalize_in_batch=True, seed=0)
    images = rng.integers(0, 256, (count, size, size, 3), dtype=np.uint8)
    return [(preset(image), index % 3) for index, image in enumerate(images)]


def test_same_values_and_labels_as_default_collate_with_channels_last_strides() -> None:
    samples = _samples(5)
    assert all(is_channel_last_view(image) for image, _ in samples)

    images, labels = collate_channels_last(samples)
    expected_images, expected_labels = default_collate(samples)

    assert images.shape == (5, 3, 32, 32) and images.dtype == torch.uint8
    assert torch.equal(images, expected_images)
    assert torch.equal(labels, expected_labels)
    assert images.is_contiguous(memory_format=torch.channels_last)
    assert not images.is_contiguous()


def test_contiguous_chw_images_are_collated_as_default_collate_does() -> None:
    samples = [(torch.rand(3, 8, 8), 1), (torch.rand(3, 8, 8), 2)]
    assert not is_channel_last_view(samples[0][0])

    images, labels = collate_channels_last(samples)

    assert images.is_contiguous()
    assert torch.equal(images, torch.stack([s[0] for s in samples]))
    assert labels.tolist() == [1, 2]


def test_in_a_worker_the_batch_arrives_equal_to_the_in_process_batch() -> None:
    samples = _samples(8)
    in_process = list(DataLoader(samples, batch_size=4, collate_fn=collate_channels_last))
    with_worker = list(
        DataLoader(samples, batch_size=4, collate_fn=collate_channels_last, num_workers=1)
    )

    assert len(with_worker) == 2
    for (got, got_labels), (want, want_labels) in zip(with_worker, in_process, strict=True):
        assert torch.equal(got, want) and torch.equal(got_labels, want_labels)
        assert got.is_contiguous(memory_format=torch.channels_last)
