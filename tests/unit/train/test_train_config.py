"""The training config schema: the seed's experiment config still validates, typos do not."""

from __future__ import annotations

from pathlib import Path

import pytest

from rxvision.config.load import validate_config
from rxvision.errors import ConfigError
from rxvision.home import repo_root
from rxvision.train.config import TrainConfig, load_train_config

pytestmark = pytest.mark.unit

CONFIGS = repo_root() / "configs"


def test_experiment_yaml_is_a_train_config() -> None:
    cfg = load_train_config(CONFIGS / "experiment.yaml")
    assert cfg.model.architecture == "resnet50"
    assert cfg.model.fine_tuning.gradual_unfreeze
    assert cfg.training.optimizer.lr == pytest.approx(1e-4)


def test_cpu_quick_yaml_is_small_and_may_start_from_random_weights() -> None:
    cfg = load_train_config(CONFIGS / "cpu-quick.yaml")
    assert cfg.model.architecture in {"resnet18", "mobilenet_v3_small"}
    assert cfg.model.allow_random_init
    assert cfg.data.img_size <= 112
    assert cfg.trainer.accelerator == "cpu"


def test_defaults_are_the_seeds_optimizer_and_scheduler() -> None:
    cfg = TrainConfig()
    opt, sched = cfg.training.optimizer, cfg.training.scheduler
    assert (opt.name, opt.lr, opt.weight_decay) == ("AdamW", 1e-4, 1e-5)
    assert (sched.name, sched.T_0, sched.eta_min) == ("CosineAnnealingWarmRestarts", 10, 1e-6)
    assert not cfg.trainer.compile


def test_overrides_apply() -> None:
    cfg = load_train_config(CONFIGS / "cpu-quick.yaml", ["training.epochs=3", "trainer.devices=2"])
    assert cfg.training.epochs == 3
    assert cfg.trainer.devices == 2


@pytest.mark.parametrize(
    ("override", "key"),
    [
        ("training.epoch=3", "training.epoch"),
        ("model.weights=/x.pth", "model.weights"),
        ("trainer.precision=fp8", "trainer.precision"),
    ],
)
def test_bad_keys_are_named(override: str, key: str) -> None:
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        validate_config({}, TrainConfig, [override])


def test_missing_file_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not found"):
        load_train_config(tmp_path / "nope.yaml")
