from __future__ import annotations

from pathlib import Path

import pytest

from rxvision.config.load import load_config, to_flat_dict
from rxvision.config.schema import ExperimentConfig, StackConfig
from rxvision.errors import ConfigError

pytestmark = pytest.mark.unit

REPO = Path(__file__).resolve().parents[3]


def test_seed_experiment_config_loads_with_its_values(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://127.0.0.1:9")
    monkeypatch.setenv("USER", "alice")
    cfg = load_config(REPO / "configs" / "experiment.yaml", ExperimentConfig)
    assert cfg.model.architecture == "resnet50"
    assert cfg.model.fine_tuning.gradual_unfreeze is True
    assert cfg.training.optimizer.lr == pytest.approx(1e-4)
    assert cfg.training.scheduler.T_0 == 10
    assert cfg.tracking.mlflow.tracking_uri == "http://127.0.0.1:9"
    assert cfg.tracking.mlflow.tags == {"owner": "alice", "priority": "high"}


def test_unset_tracking_uri_resolves_to_none(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    cfg = load_config(REPO / "configs" / "experiment.yaml", ExperimentConfig)
    assert cfg.tracking.mlflow.tracking_uri is None


def test_dotlist_overrides_win() -> None:
    cfg = load_config(
        REPO / "configs" / "experiment.yaml",
        ExperimentConfig,
        ["model.architecture=resnet18", "training.optimizer.lr=0.01"],
    )
    assert cfg.model.architecture == "resnet18"
    assert cfg.training.optimizer.lr == pytest.approx(0.01)


def test_unknown_key_is_named(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text("model:\n  architecure: resnet50\n")
    with pytest.raises(ConfigError, match=r"unknown key 'model\.architecure'"):
        load_config(path, ExperimentConfig)


def test_bad_value_names_key_and_value(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text("training:\n  optimizer:\n    lr: -1\n")
    with pytest.raises(ConfigError, match=r"key 'training\.optimizer\.lr'.*-1"):
        load_config(path, ExperimentConfig)


def test_bad_architecture_lists_allowed_ones(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"model\.architecture.*resnet18"):
        load_config(
            REPO / "configs" / "experiment.yaml", ExperimentConfig, ["model.architecture=vgg11"]
        )


def test_missing_file_is_named(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"nope\.yaml"):
        load_config(tmp_path / "nope.yaml", ExperimentConfig)


def test_broken_yaml_names_the_file(tmp_path: Path) -> None:
    path = tmp_path / "broken.yaml"
    path.write_text("model: [unclosed\n")
    with pytest.raises(ConfigError, match=r"broken\.yaml"):
        load_config(path, ExperimentConfig)


def test_missing_env_without_default_names_the_key(tmp_path: Path) -> None:
    path = tmp_path / "env.yaml"
    path.write_text("tracking:\n  mlflow:\n    tracking_uri: ${oc.env:RXV_SURELY_UNSET_VAR}\n")
    with pytest.raises(ConfigError, match=r"tracking\.mlflow\.tracking_uri"):
        load_config(path, ExperimentConfig)


def test_stack_config_file_matches_schema_defaults() -> None:
    assert load_config(REPO / "configs" / "stack.yaml", StackConfig).ports == StackConfig().ports


def test_flat_dict_for_mlflow_params() -> None:
    flat = to_flat_dict(ExperimentConfig())
    assert flat["training.optimizer.name"] == "AdamW"
    assert flat["model.fine_tuning.freeze_backbone"] is False
