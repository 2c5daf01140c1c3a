from __future__ import annotations

import stat
from pathlib import Path

import pytest

from rxvision.stack.credentials import load_or_create_credentials, mask

pytestmark = pytest.mark.unit


def test_created_once_with_mode_0600(tmp_path: Path) -> None:
    path = tmp_path / "stack" / "credentials.json"
    creds, created = load_or_create_credentials(path)
    assert created
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    again, created_again = load_or_create_credentials(path)
    assert again == creds and not created_again


def test_two_homes_get_different_secrets(tmp_path: Path) -> None:
    a, _ = load_or_create_credentials(tmp_path / "a.json")
    b, _ = load_or_create_credentials(tmp_path / "b.json")
    assert a.s3_secret_key != b.s3_secret_key


def test_mask_hides_all_but_a_prefix() -> None:
    assert mask("supersecretvalue") == "supe…"
    assert "secret" not in mask("supersecretvalue")
