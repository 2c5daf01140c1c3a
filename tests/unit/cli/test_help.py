"""Every sub-command answers --help."""

from __future__ import annotations

import pytest
import typer
from typer.testing import CliRunner

from rxvision.cli.main import app

pytestmark = pytest.mark.unit


def all_command_paths() -> list[list[str]]:
    root = typer.main.get_command(app)
    paths: list[list[str]] = []

    def walk(cmd: object, prefix: list[str]) -> None:
        paths.append(prefix)
        # typer vendors its own click: test for a group by its sub-commands, not its class.
        if hasattr(cmd, "commands"):
            for name, sub in cmd.commands.items():
                walk(sub, [*prefix, name])

    walk(root, [])
    return paths


@pytest.mark.parametrize("path", all_command_paths(), ids=lambda p: " ".join(p) or "rxvision")
def test_help(path: list[str]) -> None:
    result = CliRunner().invoke(app, [*path, "--help"])
    assert result.exit_code == 0, result.output
    assert "Usage" in result.output


def group_paths() -> list[list[str]]:
    root = typer.main.get_command(app)
    groups = []
    for path in all_command_paths():
        cmd = root
        for name in path:
            cmd = cmd.commands[name]  # type: ignore[attr-defined]
        if hasattr(cmd, "commands"):
            groups.append(path)
    return groups


@pytest.mark.parametrize("path", group_paths(), ids=lambda p: " ".join(p) or "rxvision")
def test_each_commands_summary_fits_on_its_row(path: list[str]) -> None:
    """A docstring's first paragraph is the group's one-line summary of a command: a line
    break inside it shows as a broken row even on a wide terminal."""
    result = CliRunner().invoke(app, [*path, "--help"], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    panel = result.output.split("Commands")[1].split("╰")[0]
    rows = [line for line in panel.splitlines() if line.startswith("│")]
    assert rows, result.output
    broken = [line.rstrip(" │") for line in rows if line.startswith("│  ") and line.strip("│ ")]
    assert not broken, f"rows continued on a 200-column terminal: {broken}"


def test_stack_group_has_every_command() -> None:
    names = {tuple(p) for p in all_command_paths()}
    for cmd in ("up", "down", "status", "env", "logs", "metrics", "check"):
        assert ("stack", cmd) in names


def test_config_show_reports_bad_key_with_exit_code_2(tmp_path) -> None:
    import subprocess
    import sys

    bad = tmp_path / "bad.yaml"
    bad.write_text("model:\n  architecure: x\n")
    proc = subprocess.run(
        [sys.executable, "-m", "rxvision.cli", "config", "show", str(bad)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 2
    assert "model.architecure" in proc.stderr


def test_typer_exit_codes_reach_the_shell(tmp_path) -> None:
    import os
    import subprocess
    import sys

    # No stack runs in an empty home: status must say so with exit code 1, not 0.
    env = {**os.environ, "RXVISION_HOME": str(tmp_path / "home")}
    proc = subprocess.run(
        [sys.executable, "-m", "rxvision.cli", "stack", "status", "--json"],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
    )
    assert proc.returncode == 1, proc.stdout + proc.stderr
