"""``rxvision model``: register a trained model through the production gates, move the
aliases (promote, rollback), list versions, export a version for serving.

Each command makes one library call (``rxvision.registry.ModelRegistry`` or
``rxvision.serving.version_export.export_version``) and prints the outcome; ``RxVisionError``
(e.g. ``ModelQualityError``, exit 7) propagates to ``rxvision.cli.main``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.console import Console

from rxvision.cli.tables import whole_cell_table
from rxvision.errors import ConfigError
from rxvision.serving.int8_record import MAX_ECE_RISE, MAX_TOP1_DROP_POINTS

if TYPE_CHECKING:
    from rxvision.registry.model_registry import ModelRegistry

app = typer.Typer(
    help="Model registry: gated registration, champion/fallback aliases, exports.",
    no_args_is_help=True,
)
console = Console(stderr=True)

ConfigOption = Annotated[
    Path | None,
    typer.Option("--config", help="Registry config (default configs/registry.yaml)."),
]
OverridesArg = Annotated[
    list[str] | None, typer.Argument(help="Config overrides: gates.min_top1=0.9 ...")
]


def _registry(config: Path | None, overrides: list[str] | None) -> ModelRegistry:
    # imported here: MLflow takes seconds and `rxvision --help` must not wait
    from rxvision.registry.config import load_registry_config
    from rxvision.registry.model_registry import ModelRegistry

    return ModelRegistry(load_registry_config(config, overrides or []))


@app.command()
def register(
    summary: Annotated[
        Path | None,
        typer.Option("--summary", help="Training summary JSON (rxvision train --summary)."),
    ] = None,
    model_uri: Annotated[
        str | None, typer.Option("--model-uri", help="Logged model (models:/m-... or runs:/).")
    ] = None,
    metrics: Annotated[
        Path | None, typer.Option("--metrics", help="JSON of metrics, with --model-uri.")
    ] = None,
    snapshot_rev: Annotated[str | None, typer.Option(help="Dataset snapshot tag.")] = None,
    snapshot_hash: Annotated[str | None, typer.Option(help="Dataset content hash.")] = None,
    config_hash: Annotated[str | None, typer.Option(help="Training config hash.")] = None,
    dag_run_id: Annotated[str | None, typer.Option(help="Airflow dag_run id.")] = None,
    image: Annotated[str | None, typer.Option("--image", help="Container image.")] = None,
    compare_on: Annotated[
        Path | None,
        typer.Option(
            "--compare-on",
            help="Held-out images DIR/<class>/* that neither model trained on: the champion "
            "and this model are both scored on them for the regression gate.",
        ),
    ] = None,
    config: ConfigOption = None,
    overrides: OverridesArg = None,
) -> None:
    """Register a trained model if it passes the gates; it becomes the challenger.

    Without ``--compare-on`` the champion's recorded score is used, and a champion
    measured on another test split fails the regression gate (``on_split_mismatch``)."""
    from rxvision.registry.lineage import VersionMetadata

    meta = VersionMetadata(
        snapshot_rev=snapshot_rev,
        snapshot_hash=snapshot_hash,
        config_hash=config_hash,
        dag_run_id=dag_run_id,
        container_image=image,
    )
    if summary is None and (model_uri is None or metrics is None):
        raise ConfigError("give --summary, or --model-uri with --metrics")
    registry = _registry(config, overrides)
    comparator = None
    if compare_on is not None:
        from rxvision.serving.evaluation import evaluate_model

        folder = compare_on
        comparator = lambda uri: evaluate_model(uri, folder, prefix="test_")  # noqa: E731
    if summary is not None:
        version = registry.register_summary(_read_json(summary), meta, comparator=comparator)
    else:
        assert model_uri is not None and metrics is not None
        version = registry.register_model(
            model_uri, _read_json(metrics), meta, comparator=comparator
        )
    if registry.last_report is not None:
        for criterion in registry.last_report.criteria:
            console.print(f"  {criterion.describe()}", highlight=False)
    typer.echo(json.dumps({"name": registry.name, "version": version}))


@app.command()
def promote(
    version: Annotated[
        str | None, typer.Option("--version", help="Version to promote (default: the challenger).")
    ] = None,
    config: ConfigOption = None,
    overrides: OverridesArg = None,
) -> None:
    """Make the challenger (or --version) the champion; the old champion the fallback."""
    change = _registry(config, overrides).promote(version)
    _print_change("promoted", change)


@app.command()
def rollback(config: ConfigOption = None, overrides: OverridesArg = None) -> None:
    """Make the fallback the champion again."""
    change = _registry(config, overrides).rollback()
    _print_change("rolled back", change)


@app.command("list")
def list_versions(
    as_json: Annotated[bool, typer.Option("--json", help="JSON instead of a table.")] = False,
    config: ConfigOption = None,
    overrides: OverridesArg = None,
) -> None:
    """Every version, newest first, with its aliases and lineage."""
    registry = _registry(config, overrides)
    versions = registry.list_versions()
    if as_json:
        typer.echo(json.dumps([v.to_dict() for v in versions], indent=2))
        return
    table = whole_cell_table(
        *("version", "aliases", "top-1", "pairs (recall)", "snapshot", "git", "run"),
        title=registry.name,
    )
    for v in versions:
        tags = v.tags
        table.add_row(
            v.version,
            ", ".join(v.aliases),
            tags.get("rxvision.eval.top1", ""),
            tags.get("rxvision.eval.pairs", "none confused").replace("; ", "\n"),
            tags.get("rxvision.dataset.snapshot_rev", ""),
            tags.get("rxvision.git.commit", "")[:10],
            v.run_id or "",
        )
    Console().print(table)


@app.command()
def export(
    model: Annotated[str, typer.Argument(help="models:/name/version or models:/name@alias.")],
    images: Annotated[
        Path, typer.Option("--images", help="Held-out (test) images: DIR/<class>/*.jpg.")
    ],
    calibration: Annotated[
        Path | None,
        typer.Option(
            "--calibration",
            help="Training images for INT8 calibration (DIR/<class>/*.jpg); without: no INT8.",
        ),
    ] = None,
    tolerance: Annotated[float, typer.Option(help="Parity tolerance (max |logit diff|).")] = 1e-3,
    max_int8_drop: Annotated[
        float, typer.Option(help="Keep static INT8 if top-1 drops at most this (points).")
    ] = MAX_TOP1_DROP_POINTS,
    max_int8_ece_rise: Annotated[
        float,
        typer.Option(help="Keep static INT8 if its calibration error (ECE) rises at most this."),
    ] = MAX_ECE_RISE,
) -> None:
    """Export to TorchScript and ONNX (+ static INT8), check parity, log with the version."""
    from rxvision.serving.version_export import export_version

    result = export_version(
        model,
        image_folder=images,
        calibration_folder=calibration,
        tolerance=tolerance,
        max_int8_drop_points=max_int8_drop,
        max_int8_ece_rise=max_int8_ece_rise,
    )
    for item in result.exports:
        console.print(f"  {item.runtime}: {item.parity.describe()}", highlight=False)
    if result.int8 is not None:
        console.print(f"  {result.int8.describe()}", highlight=False)
    typer.echo(json.dumps(result.tags, indent=2))


def _print_change(verb: str, change: Any) -> None:
    console.print(
        f"{verb}: champion v{change.champion} (was {change.previous_champion or 'none'}), "
        f"fallback {change.fallback or 'none'}" + ("" if change.changed else " (no change)"),
        highlight=False,
    )
    typer.echo(
        json.dumps(
            {
                "champion": change.champion,
                "previous_champion": change.previous_champion,
                "fallback": change.fallback,
                "changed": change.changed,
            }
        )
    )


def _read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise ConfigError(f"cannot read JSON from {path}: {exc}") from exc
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a JSON object")
    return data
