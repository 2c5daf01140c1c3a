"""The batch scorer's config file and overrides."""

from __future__ import annotations

import pytest

from rxvision.errors import ConfigError
from rxvision.serving.scoring_config import load_scoring_config

pytestmark = pytest.mark.unit


def test_serving_config_file_validates(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("STATSD_PORT", "8125")
    config = load_scoring_config(overrides=["batch_size=8", "runtimes=[torchscript,eager]"])
    assert config.batch_size == 8 and config.runtimes == ["torchscript", "eager"]
    assert config.statsd.port == 8125 and config.circuit.window == 50
    with pytest.raises(ConfigError, match="runtimes"):
        load_scoring_config(overrides=["runtimes=[tensorrt]"])
