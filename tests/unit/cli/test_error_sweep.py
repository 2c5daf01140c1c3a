"""Every CLI command with a bad input fails in one line: the thing named, a documented
exit code (docs/exit-codes.md), no traceback.

Unreachable endpoints are 127.0.0.1 ports nobody listens on; MLflow gets no retries. Wrong
S3 credentials and a missing bucket against the real SeaweedFS are in
tests/integration/cli/test_cli_stack.py.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
import typer
from PIL import Image

from rxvision.cli.main import needs_store, run_app
from rxvision.cli.store import choose_store
from rxvision.home import Home, repo_root
from rxvision.stack.ports import next_free_port

pytestmark = pytest.mark.unit

CPU_QUICK = str(repo_root() / "configs" / "cpu-quick.yaml")
DEAD = next_free_port(23100, set())  # nobody listens here
EXIT_CODES_DOC = repo_root() / "docs" / "exit-codes.md"


@dataclass(frozen=True)
class Case:
    name: str
    args: list[str]
    code: int
    names: list[str]  # each must appear in the error line
    env: dict[str, str] | None = None


def documented_codes() -> set[int]:
    return {int(c) for c in re.findall(r"^\| (\d+) \|", EXIT_CODES_DOC.read_text(), re.M)}


CASES = [
    Case(
        "train: missing config",
        ["train", "--config", "/no/such.yaml", "--data", "/tmp"],
        2,
        ["/no/such.yaml"],
    ),
    Case(
        "train: missing data",
        ["train", "--config", CPU_QUICK, "--data", "/no/such/dir"],
        4,
        ["/no/such/dir"],
    ),
    Case(
        "train: wrong type in an override",
        ["train", "--config", CPU_QUICK, "--data", "/tmp", "training.epochs=abc"],
        2,
        ["training.epochs"],
    ),
    Case(
        "train: unknown override key",
        ["train", "--config", CPU_QUICK, "--data", "/tmp", "training.epoch=3"],
        2,
        ["training.epoch"],
    ),
    Case(
        "train: missing summary folder is made, bad S3 URI is not",
        ["train", "--config", CPU_QUICK, "--data", "s3://"],
        2,
        ["s3://"],
    ),
    Case(
        "train: unreachable S3",
        ["train", "--config", CPU_QUICK, "--data", "s3://rxvision-data/features/k"],
        11,
        [f"127.0.0.1:{DEAD}"],
        {
            "AWS_ENDPOINT_URL_S3": f"http://127.0.0.1:{DEAD}",
            "AWS_ACCESS_KEY_ID": "k",
            "AWS_SECRET_ACCESS_KEY": "s",
        },
    ),
    Case(
        "data synth: wrong type",
        ["data", "synth", "--out", "/tmp/x", "--classes", "abc"],
        2,
        ["--classes"],
    ),
    Case(
        "data validate: missing folder",
        ["data", "validate", "/no/such", "--report", "/tmp/r.json"],
        4,
        ["/no/such"],
    ),
    Case("data validate: missing option", ["data", "validate", "/tmp"], 2, ["--report"]),
    Case(
        "data snapshot: bad report",
        ["data", "snapshot", "/tmp", "--tag", "t", "--exclude-from", "/no/such.json"],
        2,
        ["/no/such.json"],
    ),
    Case(
        "data preprocess: missing train config",
        ["data", "preprocess", "--rev", "v1", "--train-config", "/no/such.yaml"],
        2,
        ["/no/such.yaml"],
    ),
    Case(
        "model list: unreachable MLflow",
        ["model", "list"],
        11,
        [f"127.0.0.1:{DEAD}"],
        {"MLFLOW_TRACKING_URI": f"http://127.0.0.1:{DEAD}"},
    ),
    Case(
        "model register: missing summary",
        ["model", "register", "--summary", "/no/such.json"],
        2,
        ["/no/such.json"],
    ),
    Case("model register: neither input", ["model", "register"], 2, ["--summary"]),
    Case("model promote: no such version", ["model", "promote", "--version", "99"], 4, ["99"]),
    Case("model rollback: no fallback", ["model", "rollback"], 4, ["fallback"]),
    Case(
        "model export: no such model",
        ["model", "export", "models:/nope/1", "--images", "/tmp"],
        4,
        ["models:/nope/1"],
    ),
    Case(
        "model list: bad override", ["model", "list", "gates.min_top1=abc"], 2, ["gates.min_top1"]
    ),
    Case("config show: missing file", ["config", "show", "/no/such.yaml"], 2, ["/no/such.yaml"]),
    Case(
        "config show: unknown schema",
        ["config", "show", CPU_QUICK, "--kind", "nope"],
        2,
        ["--kind", "nope"],
    ),
    Case("unknown command", ["nope"], 2, ["nope"]),
]


def run_cli(
    args: list[str], home: Path, extra: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "AWS_"))}
    env |= {
        "RXVISION_HOME": str(home),
        "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0",
        "MLFLOW_HTTP_REQUEST_TIMEOUT": "5",
        **(extra or {}),
    }
    return subprocess.run(
        [sys.executable, "-m", "rxvision.cli", *args],
        capture_output=True,
        text=True,
        cwd=repo_root(),
        env=env,
        timeout=180,
    )


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.name)
def test_bad_input_fails_in_one_line(case: Case, tmp_path: Path) -> None:
    proc = run_cli(case.args, tmp_path / "home", case.env)

    assert proc.returncode == case.code, proc.stderr[-3000:]
    assert case.code in documented_codes()
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, proc.stderr[-3000:]
    for thing in case.names:
        assert thing in errors[0], errors[0]
    assert "Traceback" not in proc.stderr


def test_score_names_the_unreachable_tracking_server(tmp_path: Path) -> None:
    images = tmp_path / "in" / "a"
    images.mkdir(parents=True)
    Image.new("RGB", (64, 64), "red").save(images / "x.jpg")
    env = {"MLFLOW_TRACKING_URI": f"http://127.0.0.1:{DEAD}"}
    args = ["score", "--input", str(images.parent), "--output", str(tmp_path / "out")]
    proc = run_cli([*args, "--model", "models:/m@champion"], tmp_path / "home", env)

    assert proc.returncode != 0 and proc.returncode in documented_codes(), proc.stderr[-3000:]
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and f"127.0.0.1:{DEAD}" in errors[0], proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr


def _raising_app() -> typer.Typer:
    small = typer.Typer()

    @small.command()
    def divide(by: int = 0) -> None:
        print(1 / by)

    return small


@pytest.mark.parametrize("verbose", [False, True])
def test_an_unexpected_error_is_one_line_and_its_traceback_is_under_verbose(
    verbose: bool, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sys, "argv", ["rxvision", "--by", "0"])
    monkeypatch.setenv("RXVISION_VERBOSE", "1" if verbose else "0")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "sqlite:///:memory:")
    with pytest.raises(SystemExit) as exited:
        run_app(_raising_app(), setup_logging=False)

    assert exited.value.code == 70
    stderr = capsys.readouterr().err
    [line] = [x for x in stderr.splitlines() if x.startswith("error:")]
    assert line.startswith("error: unexpected ZeroDivisionError: division by zero")
    if verbose:
        assert "Traceback" in stderr and "1 / by" in stderr
    else:
        assert "Traceback" not in stderr
        assert "run with --verbose for the traceback" in line


# every RxVisionError subclass the package defines, wherever it lives: each module is
# imported first (in a child process: some set process-wide state, e.g. OpenCV's threads)
ERROR_CLASSES = """
import importlib, json, pkgutil, rxvision
from rxvision.errors import RxVisionError
for module in pkgutil.walk_packages(rxvision.__path__, "rxvision."):
    if not module.name.endswith("__main__"):
        importlib.import_module(module.name)
found, pending = {}, [RxVisionError]
while pending:
    for sub in pending.pop().__subclasses__():
        found[f"{sub.__module__}.{sub.__name__}"] = sub.exit_code
        pending.append(sub)
print(json.dumps(found))
"""


def error_classes() -> dict[str, int]:
    """Each ``RxVisionError`` subclass of the package, by its dotted name, and its code."""
    proc = subprocess.run(
        [sys.executable, "-c", ERROR_CLASSES], capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return dict(json.loads(proc.stdout.splitlines()[-1]))


def test_every_exit_code_is_documented() -> None:
    classes = error_classes()
    assert classes["rxvision.train.monitoring.NonFiniteLoss"] == 14  # the walk reaches them
    undocumented = {name: code for name, code in classes.items() if code not in documented_codes()}
    assert not undocumented
    assert {70, 130} <= documented_codes()


def test_a_fresh_home_uses_its_local_store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for key in ("MLFLOW_TRACKING_URI", "AWS_ENDPOINT_URL_S3"):
        monkeypatch.delenv(key, raising=False)
    home = Home(tmp_path / "home")
    line = choose_store(home)
    assert line == f"using the local store at {home.root / 'mlflow' / 'mlflow.db'}"
    assert os.environ["MLFLOW_TRACKING_URI"] == f"sqlite:///{home.root / 'mlflow' / 'mlflow.db'}"


def test_a_recorded_stack_that_is_down_is_named_and_the_local_store_used(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for key in ("MLFLOW_TRACKING_URI", "AWS_ENDPOINT_URL_S3"):
        monkeypatch.delenv(key, raising=False)
    home = Home(tmp_path / "home").ensure()
    (home.stack_dir / "ports.json").write_text(json.dumps({"s3": DEAD, "mlflow": DEAD + 1}))
    proc = run_cli(["model", "list", "--json"], home.root)

    assert proc.returncode == 0, proc.stderr[-3000:]
    assert (
        f"using the local store at {home.root / 'mlflow' / 'mlflow.db'} (the stack of "
        f"{home.root} is not healthy: seaweedfs is not running)"
    ) in proc.stderr


def test_help_and_stack_commands_choose_no_store() -> None:
    from rxvision.cli.main import app

    assert not needs_store(app, ["model", "list", "--help"])
    assert not needs_store(app, ["stack", "status"])
    assert not needs_store(app, ["--verbose", "config", "show", "x.yaml"])
    assert needs_store(app, ["--verbose", "model", "list"])
    assert needs_store(app, ["status"])
