"""``rxvision config``: check and show configs as RxVision reads them."""

from __future__ import annotations

from pathlib import Path

import typer
from omegaconf import OmegaConf
from pydantic import BaseModel

from rxvision.config.load import load_config
from rxvision.config.schema import ExperimentConfig, StackConfig

app = typer.Typer(help="Validate and show YAML configs.", no_args_is_help=True)

SCHEMAS: dict[str, type[BaseModel]] = {"experiment": ExperimentConfig, "stack": StackConfig}


@app.command("show")
def show(
    path: Path = typer.Argument(..., help="A YAML config, e.g. configs/experiment.yaml."),
    kind: str = typer.Option("experiment", help=f"Schema: {', '.join(SCHEMAS)}."),
    overrides: list[str] = typer.Argument(None, help="Dotlist overrides: training.epochs=3"),
) -> None:
    """Validate a config (with overrides) and print it resolved, defaults filled in."""
    if kind not in SCHEMAS:
        raise typer.BadParameter(
            f"unknown schema {kind!r}; choose one of {', '.join(SCHEMAS)}", param_hint="--kind"
        )
    cfg = load_config(path, SCHEMAS[kind], overrides or [])
    typer.echo(OmegaConf.to_yaml(OmegaConf.create(cfg.model_dump(mode="json"))), nl=False)
