"""ValidationPolicy: severities, and reading it from a mapping or a config file."""

from __future__ import annotations

from pathlib import Path

import pytest

from rxvision.data.validation import ValidationPolicy
from rxvision.errors import ConfigError

pytestmark = pytest.mark.unit


def test_policy_refuses_integrity_as_warning() -> None:
    with pytest.raises(ConfigError, match="integrity cannot be a warning"):
        ValidationPolicy.from_mapping({"severity": {"integrity": "warning"}})


@pytest.mark.parametrize(
    ("data", "named"),
    [
        ({"min_widht": 10}, "min_widht"),
        ({"severity": {"sharpness": "warning"}}, "sharpness"),
        ({"max_imbalance": 1.5}, "max_imbalance"),
    ],
)
def test_policy_errors_name_the_key(data: dict[str, object], named: str) -> None:
    with pytest.raises(ConfigError, match=named):
        ValidationPolicy.from_mapping(data)


def test_policy_from_a_config_file(tmp_path: Path) -> None:
    config = tmp_path / "data.yaml"
    config.write_text(
        "data:\n  validation:\n    min_width: 128\n    severity:\n      class_balance: warning\n"
    )
    policy = ValidationPolicy.from_file(config, min_height=96)
    assert (policy.min_width, policy.min_height) == (128, 96)
    assert not policy.is_blocking("class_balance")
    assert policy.is_blocking("integrity")
