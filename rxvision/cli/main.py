"""The ``rxvision`` command: one sub-command group per module, errors mapped to exit codes."""

from __future__ import annotations

import logging
import os
import sys
import traceback
from typing import Any, NoReturn

import typer
from rich.console import Console
from rich.markup import escape

from rxvision.cli.errors import UNEXPECTED_EXIT_CODE, translate
from rxvision.cli.store import choose_store
from rxvision.errors import RxVisionError
from rxvision.home import Home

app = typer.Typer(
    name="rxvision",
    help="RxVision: nightly retraining and batch scoring of a pill-image classifier.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
err_console = Console(stderr=True)


def _register_groups() -> None:
    # Imported here so that `rxvision --help` stays fast and each group stays optional.
    from rxvision.cli import config as config_cli
    from rxvision.cli import data as data_cli
    from rxvision.cli import incidents as incidents_cli
    from rxvision.cli import model as model_cli
    from rxvision.cli import pipeline as pipeline_cli
    from rxvision.cli import score as score_cli
    from rxvision.cli import stack as stack_cli
    from rxvision.cli.train import train as train_cmd

    app.add_typer(stack_cli.app, name="stack")
    app.add_typer(data_cli.app, name="data")
    app.command("train")(train_cmd)
    app.add_typer(model_cli.app, name="model")
    app.command("score")(score_cli.score)
    app.add_typer(config_cli.app, name="config")
    app.add_typer(pipeline_cli.app, name="pipeline")
    app.command("status")(pipeline_cli.status)
    app.add_typer(incidents_cli.app, name="incidents")


# INFO lines of libraries that say nothing a user acts on (botocore says where it found
# the credentials once per client); --verbose shows them again
QUIET_LOGGERS = ("botocore.credentials",)


def configure_logging(verbose: bool) -> None:
    """Log lines on stderr: INFO (DEBUG with ``verbose``), the chatty libraries at WARNING."""
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    for name in QUIET_LOGGERS:
        logging.getLogger(name).setLevel(logging.NOTSET if verbose else logging.WARNING)


@app.callback()
def _root(
    verbose: bool = typer.Option(
        False, "--verbose", "-v", help="Debug logging, and the traceback of an unexpected error."
    ),
) -> None:
    configure_logging(verbose)


_register_groups()


# groups that never read MLflow or S3 through the environment: no store is chosen for them
STORE_FREE_COMMANDS = {"stack", "config"}


def _arguments(argv: list[str]) -> list[str]:
    # what the user typed before a `--` (after it, every word is an argument)
    return argv[: argv.index("--")] if "--" in argv else argv


def is_verbose(argv: list[str]) -> bool:
    """``--verbose``/``-v`` among the options, or ``RXVISION_VERBOSE=1``."""
    return os.environ.get("RXVISION_VERBOSE", "") in {"1", "true", "yes"} or any(
        word in ("--verbose", "-v") for word in _arguments(argv)
    )


def needs_store(typer_app: typer.Typer, argv: list[str]) -> bool:
    """Whether this command line reads MLflow or S3 (help and the stack's own commands do
    not, so they print no store line)."""
    words = _arguments(argv)
    if not words or "--help" in words:
        return False
    if typer_app is not app:
        return True  # a command run alone (python -m rxvision.cli.train)
    command = next((w for w in words if not w.startswith("-")), None)
    return command is not None and command not in STORE_FREE_COMMANDS


def print_error(message: str) -> None:
    """One ``error: ...`` line on stderr (never wrapped, never read as markup)."""
    one_line = " ".join(str(message).split())
    err_console.print(f"[bold red]error:[/] {escape(one_line)}", highlight=False, soft_wrap=True)


def _usage_message(exc: Any) -> str:
    # click's usage errors print a usage block; the CLI says it in one line instead
    message = exc.format_message()
    ctx = getattr(exc, "ctx", None)
    if ctx is not None:
        message += f" (see {ctx.command_path} --help)"
    return str(message)


def run_app(typer_app: typer.Typer, *, setup_logging: bool = True) -> None:
    """Run a typer app as a program: every error becomes one line and an exit code.

    ``RxVisionError`` keeps its code, click's usage errors exit 2, known library errors
    (``rxvision.cli.errors.translate``) theirs; an unexpected error exits 70 with its
    traceback under ``--verbose``. Also used by the modules that run alone (``python -m
    rxvision.cli.train``), so every entry point maps errors and picks the store the same way.
    """
    argv = sys.argv[1:]
    verbose = is_verbose(argv)
    if setup_logging:
        configure_logging(verbose)
    os.environ.setdefault("DVC_NO_ANALYTICS", "1")
    try:
        home = Home.from_env()
        if needs_store(typer_app, argv):
            err_console.print(escape(choose_store(home)), highlight=False, soft_wrap=True)
        elif not os.environ.get("MLFLOW_TRACKING_URI"):
            os.environ["MLFLOW_TRACKING_URI"] = home.local_mlflow_uri()
        # Without standalone mode click returns the code of typer.Exit instead of exiting.
        code = typer_app(standalone_mode=False)
    except RxVisionError as exc:
        _fail(exc, exc.exit_code, verbose)
    except (typer.Abort, KeyboardInterrupt):
        raise SystemExit(130) from None
    except SystemExit:
        raise
    except Exception as exc:
        usage_code = getattr(exc, "exit_code", None)
        if isinstance(usage_code, int) and callable(getattr(exc, "format_message", None)):
            _fail(exc, usage_code, verbose, message=_usage_message(exc))
        mapped = translate(exc)
        if mapped is not None:
            _fail(exc, mapped.exit_code, verbose, message=str(mapped))
        if verbose:
            traceback.print_exc()
        hint = "the traceback is above" if verbose else "run with --verbose for the traceback"
        print_error(f"unexpected {type(exc).__name__}: {exc} ({hint})")
        raise SystemExit(UNEXPECTED_EXIT_CODE) from None
    raise SystemExit(code if isinstance(code, int) else 0)


def _fail(exc: BaseException, code: int, verbose: bool, message: str | None = None) -> NoReturn:
    # the traceback of an expected error helps only when debugging
    if verbose:
        traceback.print_exception(exc)
    print_error(str(exc) if message is None else message)
    raise SystemExit(code) from None


def main() -> None:
    """Console entry point of ``rxvision`` (its root callback configures logging)."""
    run_app(app, setup_logging=False)
