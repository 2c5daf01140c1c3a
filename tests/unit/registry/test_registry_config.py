"""The registry's configuration: the shipped file, overrides, unknown keys, the environment."""

from __future__ import annotations

from pathlib import Path

import pytest

from rxvision.errors import ConfigError
from rxvision.registry.config import RegistryConfig, load_registry_config

pytestmark = pytest.mark.unit


def test_registry_config_file_and_unknown_keys() -> None:
    config = load_registry_config(overrides=["gates.min_top1=0.9"])
    assert isinstance(config, RegistryConfig) and config.gates.min_top1 == 0.9
    assert config.aliases.champion == "champion"
    with pytest.raises(ConfigError, match=r"unknown key 'gates\.min_top2'"):
        load_registry_config(overrides=["gates.min_top2=0.9"])


def test_registry_config_file_gates_the_test_split(monkeypatch: pytest.MonkeyPatch) -> None:
    # the shipped file, whatever an earlier tier left in the environment (the scale
    # tier's stack points RXVISION_REGISTRY_CONFIG at permissive gates)
    monkeypatch.delenv("RXVISION_REGISTRY_CONFIG", raising=False)
    gates = load_registry_config().gates
    assert (gates.top1_key, gates.ece_key, gates.recall_prefix) == (
        "test_top1",
        "test_ece",
        "test_recall_",
    )
    assert (gates.min_top1, gates.min_class_recall, gates.max_ece) == (0.80, 0.80, 0.15)
    assert (gates.max_top1_regression, gates.on_split_mismatch) == (0.01, "fail")


def test_registry_config_from_the_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = tmp_path / "registry.yaml"
    config.write_text("model_name: other-model\ngates:\n  min_top1: 0.5\n")
    monkeypatch.setenv("RXVISION_REGISTRY_CONFIG", str(config))
    loaded = load_registry_config()
    assert (loaded.model_name, loaded.gates.min_top1) == ("other-model", 0.5)
    monkeypatch.delenv("RXVISION_REGISTRY_CONFIG")
    assert load_registry_config().model_name == "rxvision-pill-classifier"
