"""``rxvision score``: score every image under an S3 prefix or a folder into Parquet.

Register with ``app.command("score")(score)`` (or ``app.add_typer(score_cli.app,
name="score")``: the app runs ``score`` as its callback) in ``rxvision.cli.main``;
``python -m rxvision.cli.score`` runs it alone with the same error-to-exit-code mapping.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Annotated

import typer

log = logging.getLogger(__name__)


def score(
    input_uri: Annotated[
        str, typer.Option("--input", help="s3://bucket/prefix or a local folder of images.")
    ],
    output_uri: Annotated[
        str, typer.Option("--output", help="s3://bucket/prefix or a local folder.")
    ],
    model: Annotated[
        str | None,
        typer.Option(
            "--model",
            help="models:/name@alias, models:/name/version, or a runs:/ model URI "
            "(default: the config's model_uri).",
        ),
    ] = None,
    config: Annotated[
        Path | None, typer.Option("--config", help="Scoring config (configs/serving.yaml).")
    ] = None,
    overrides: Annotated[
        list[str] | None, typer.Argument(help="Config overrides: batch_size=64 ...")
    ] = None,
    summary: Annotated[
        Path | None, typer.Option("--summary", help="Also write the run summary JSON here.")
    ] = None,
    allow_empty: Annotated[
        bool,
        typer.Option(
            "--allow-empty",
            help="An input with no image is an empty success (0 rows, _SUCCESS) instead of "
            "an error; for a scheduler. A local folder that does not exist stays an error.",
        ),
    ] = False,
    require_primary: Annotated[
        bool,
        typer.Option(
            "--require-primary",
            help="Fail (exit 9, nothing written) when the model cannot be loaded, instead "
            "of scoring with the fallback alias.",
        ),
    ] = False,
    no_cache: Annotated[
        bool,
        typer.Option(
            "--no-cache",
            help="Score every image afresh: nothing is served from the inference cache "
            "(its rows are still refreshed with this run's).",
        ),
    ] = False,
) -> None:
    """Score INPUT with MODEL into OUTPUT (shards of Parquet, _manifest.json, _SUCCESS).

    A rerun into the same OUTPUT skips the shards already committed. An unchanged image
    under an unchanged model is served from the inference cache (config ``cache``). An input folder
    that does not exist, or an input with no image, is an error (exit 4) with nothing
    written, unless --allow-empty.
    """
    # imported here: torch and MLflow take seconds, `rxvision --help` must not wait
    from rich.console import Console

    from rxvision.cli.progress import progress_bar
    from rxvision.serving.scoring_config import load_scoring_config
    from rxvision.serving.scoring_run import score_batch

    cfg = load_scoring_config(config, overrides or [])
    if no_cache:
        cfg = cfg.model_copy(update={"cache": cfg.cache.model_copy(update={"reuse": False})})
    rows: dict[str, int] = {}  # by shard: each reports its own count so far
    with progress_bar("scoring", Console(stderr=True)) as (bar, task):

        def report(shard_id: str, done: int) -> None:
            rows[shard_id] = done
            bar.update(task, completed=sum(rows.values()))

        manifest = score_batch(
            model or cfg.model_uri,
            input_uri,
            output_uri,
            config=cfg,
            allow_empty=allow_empty,
            fallback_on_load_failure=not require_primary,
            progress=report,
            planned=lambda images: bar.update(task, total=images),
        )
    if summary is not None:
        summary.parent.mkdir(parents=True, exist_ok=True)
        summary.write_text(json.dumps(manifest, indent=2))
    metrics = manifest["metrics"]
    typer.echo(
        f"scored {manifest['rows']} images into {len(manifest['shards'])} shards at "
        f"{manifest['output_uri']}: {manifest.get('cached', 0)} from the cache, "
        f"{metrics['errors']} errors, "
        f"{metrics['fallback_count']} by the fallback model, "
        f"{metrics['images_per_s']:.1f} images/s",
        err=True,
    )
    review = manifest.get("review") or {}
    if manifest.get("review_uri"):
        where = f"{manifest['needs_review']} to review at {manifest['review_uri']}"
        typer.echo(f"review gallery: {where}", err=True)
    elif review.get("error"):
        typer.echo(f"review gallery not written: {review['error']}", err=True)


app = typer.Typer(
    add_completion=False,
    pretty_exceptions_enable=False,
    help="Score images in S3 or a folder into Parquet predictions.",
)
app.callback(invoke_without_command=True)(score)


def main() -> None:
    """Run ``score`` alone (``python -m rxvision.cli.score``)."""
    from rxvision.cli.main import run_app

    run_app(app)


if __name__ == "__main__":
    main()
