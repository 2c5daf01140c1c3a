"""Backbones are built without downloads; pretrained weights come only from weights_uri."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torchvision import models

from rxvision.train.backbones import (
    PretrainedWeightsError,
    build_backbone,
    load_pretrained,
)

pytestmark = pytest.mark.unit


@pytest.mark.parametrize(("arch", "features"), [("resnet18", 512), ("mobilenet_v3_small", 1024)])
def test_backbone_outputs_pooled_features(arch: str, features: int) -> None:
    backbone = build_backbone(arch)
    assert backbone.num_features == features
    with torch.no_grad():
        out = backbone.net.eval()(torch.zeros(2, 3, 32, 32))
    assert out.shape == (2, features)
    assert len(backbone.blocks()) >= 5


def test_unknown_architecture_names_the_choices() -> None:
    with pytest.raises(Exception, match="resnet18"):
        build_backbone("vgg16")


@pytest.fixture
def resnet18_weights(tmp_path: Path) -> tuple[Path, dict[str, torch.Tensor]]:
    """A torchvision-format state_dict file (1000-class head included, as torchvision's)."""
    torch.manual_seed(3)
    state = models.resnet18(weights=None).state_dict()
    path = tmp_path / "resnet18-test.pth"
    torch.save(state, path)
    return path, state


def test_weights_load_from_a_file(
    resnet18_weights: tuple[Path, dict[str, torch.Tensor]], tmp_path: Path
) -> None:
    path, state = resnet18_weights
    backbone = build_backbone("resnet18")
    assert load_pretrained(backbone, str(path), allow_random_init=False, cache_dir=tmp_path)
    loaded = backbone.net.state_dict()
    assert torch.equal(loaded["layer4.1.conv2.weight"], state["layer4.1.conv2.weight"])
    assert torch.equal(loaded["bn1.running_mean"], state["bn1.running_mean"])


def test_weights_wrapped_by_the_reference_scripts_load(
    resnet18_weights: tuple[Path, dict[str, torch.Tensor]], tmp_path: Path
) -> None:
    _, state = resnet18_weights
    wrapped = tmp_path / "checkpoint.pth"
    torch.save({"model": {f"module.{k}": v for k, v in state.items()}, "epoch": 3}, wrapped)
    backbone = build_backbone("resnet18")
    assert load_pretrained(backbone, str(wrapped), allow_random_init=False, cache_dir=tmp_path)
    assert torch.equal(backbone.net.state_dict()["conv1.weight"], state["conv1.weight"])


def test_missing_weights_say_where_to_put_them(tmp_path: Path) -> None:
    backbone = build_backbone("resnet18")
    with pytest.raises(PretrainedWeightsError, match=r"model\.weights_uri") as info:
        load_pretrained(backbone, None, allow_random_init=False, cache_dir=tmp_path)
    assert "allow_random_init" in str(info.value)
    assert info.value.exit_code == 2  # a ConfigError
    with pytest.raises(PretrainedWeightsError, match="no such file"):
        load_pretrained(
            backbone, str(tmp_path / "absent.pth"), allow_random_init=False, cache_dir=tmp_path
        )


def test_random_init_when_allowed(tmp_path: Path) -> None:
    backbone = build_backbone("resnet18")
    before = backbone.net.conv1.weight.clone()
    assert not load_pretrained(backbone, None, allow_random_init=True, cache_dir=tmp_path)
    assert torch.equal(before, backbone.net.conv1.weight)


def test_weights_of_another_architecture_are_refused(
    resnet18_weights: tuple[Path, dict[str, torch.Tensor]], tmp_path: Path
) -> None:
    path, _ = resnet18_weights
    with pytest.raises(PretrainedWeightsError, match="does not fit resnet34"):
        load_pretrained(
            build_backbone("resnet34"), str(path), allow_random_init=False, cache_dir=tmp_path
        )


def test_a_file_that_is_not_weights_is_refused(tmp_path: Path) -> None:
    bad = tmp_path / "bad.pth"
    bad.write_bytes(b"not a torch file")
    with pytest.raises(PretrainedWeightsError, match="cannot read"):
        load_pretrained(
            build_backbone("resnet18"), str(bad), allow_random_init=True, cache_dir=tmp_path
        )


def test_the_fine_resnet18_keeps_twice_the_resolution_and_loads_resnet18_weights(
    resnet18_weights: tuple[Path, dict[str, torch.Tensor]], tmp_path: Path
) -> None:
    fine, plain = build_backbone("resnet18_fine").net.eval(), build_backbone("resnet18").net.eval()
    x = torch.zeros(1, 3, 64, 64)
    with torch.no_grad():
        # after the stem and the first stage: 32x32 without the max-pool, 16x16 with it
        fine_map = fine.layer1(fine.maxpool(fine.relu(fine.bn1(fine.conv1(x)))))
        plain_map = plain.layer1(plain.maxpool(plain.relu(plain.bn1(plain.conv1(x)))))
    assert fine_map.shape[-1] == 2 * plain_map.shape[-1] == 32
    path, state = resnet18_weights
    backbone = build_backbone("resnet18_fine")
    assert load_pretrained(backbone, str(path), allow_random_init=False, cache_dir=tmp_path)
    assert torch.equal(backbone.net.state_dict()["conv1.weight"], state["conv1.weight"])
