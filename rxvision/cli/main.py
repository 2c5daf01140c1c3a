"""The ``rxvision`` command: one sub-command group per module, errors mapped to exit codes."""

from __future__ import annotations

import logging
import os
import sys

import typer
from rich.console import Console

from rxvision.errors import RxVisionError

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


@app.callback()
def _root(
    verbose: bool = typer.Option(False, "--verbose", "-v", help="Debug logging."),
) -> None:
    level = logging.DEBUG if verbose else logging.INFO
    logging.basicConfig(
        level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr
    )


_register_groups()


def run_app(typer_app: typer.Typer, *, configure_logging: bool = True) -> None:
    """Run a typer app as a program: ``RxVisionError`` and ``typer.Exit`` become exit codes.

    Also used by the modules that run alone (``python -m rxvision.cli.train``), so every
    entry point maps errors and picks the MLflow store the same way.
    """
    if configure_logging:
        logging.basicConfig(
            level=logging.INFO,
            format="%(asctime)s %(levelname)s %(name)s: %(message)s",
            stream=sys.stderr,
        )
    os.environ.setdefault("DVC_NO_ANALYTICS", "1")
    if not os.environ.get("MLFLOW_TRACKING_URI"):
        # One local store for every command (train logs there, score and model read it),
        # so the CLI works on a laptop with no tracking server.
        from rxvision.home import Home

        os.environ["MLFLOW_TRACKING_URI"] = Home.from_env().local_mlflow_uri()
    try:
        # Without standalone mode click returns the code of typer.Exit instead of exiting.
        code = typer_app(standalone_mode=False)
    except RxVisionError as exc:
        err_console.print(f"[bold red]error:[/] {exc}", highlight=False)
        raise SystemExit(exc.exit_code) from None
    except typer.Abort:
        raise SystemExit(130) from None
    except SystemExit:
        raise
    except Exception as exc:  # click's usage errors carry their own exit code
        code = getattr(exc, "exit_code", None)
        show = getattr(exc, "show", None)
        if code is not None and callable(show):
            show()
            raise SystemExit(code) from None
        raise
    raise SystemExit(code if isinstance(code, int) else 0)


def main() -> None:
    """Console entry point of ``rxvision`` (its root callback configures logging)."""
    run_app(app, configure_logging=False)
