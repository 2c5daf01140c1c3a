"""``rxvision train``: train the classifier as a config says, resume a run, write a summary.

Register with ``app.command("train")(train)`` in ``rxvision.cli.main``; ``python -m
rxvision.cli.train`` runs the command alone (with the same error-to-exit-code mapping).
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Annotated

import typer

log = logging.getLogger(__name__)


def train(
    config: Annotated[
        Path, typer.Option("--config", help="Training config, e.g. configs/cpu-quick.yaml.")
    ],
    data: Annotated[
        str,
        typer.Option(
            "--data",
            help="Image folder (DIR/<class>/*.jpg), a feature-store manifest.json, "
            "or a shard set in S3 (s3://bucket/prefix/<key>).",
        ),
    ],
    overrides: Annotated[
        list[str] | None, typer.Argument(help="Config overrides: training.epochs=3 ...")
    ] = None,
    summary: Annotated[
        str | None,
        typer.Option("--summary", help="Write the run's summary JSON here (a path or s3://)."),
    ] = None,
    run_id: Annotated[
        str | None,
        typer.Option("--run-id", help="Resume this run (or start it under this id)."),
    ] = None,
    snapshot_rev: Annotated[
        str | None, typer.Option("--snapshot-rev", help="Dataset snapshot tag, for lineage.")
    ] = None,
    snapshot_hash: Annotated[
        str | None, typer.Option("--snapshot-hash", help="Dataset content hash, for lineage.")
    ] = None,
) -> None:
    """Train on DATA with CONFIG (plus overrides); resume RUN_ID from its newest checkpoint."""
    # imported here: torch and Lightning take seconds, `rxvision --help` must not wait
    from rxvision.train.config import load_train_config
    from rxvision.train.run import train as run_training

    cfg = load_train_config(config, overrides or [])
    result = run_training(
        cfg, data, run_id=run_id, snapshot_rev=snapshot_rev, snapshot_hash=snapshot_hash
    )
    if not result.is_global_zero:
        return  # a DDP rank started by Lightning: rank 0 reports
    if summary is not None:
        write_summary(result.summary(), summary)
    top1 = result.metrics.get("test_top1")
    images = int(result.metrics.get("test_images", 0))
    typer.echo(
        f"run {result.run_id}: step {result.global_step}/{result.max_steps}, test top-1 "
        f"{top1 if top1 is None else round(top1, 4)} on {images} held-out images, "
        f"model {result.model_uri}",
        err=True,
    )


def write_summary(summary: dict[str, object], target: str) -> None:
    """Write the summary JSON to a file (atomically) or an ``s3://`` object."""
    body = json.dumps(summary, indent=2, sort_keys=True)
    if target.startswith("s3://"):
        from rxvision.storage.s3 import S3Store

        S3Store().put_bytes(target, body.encode())
    else:
        path = Path(target)
        path.parent.mkdir(parents=True, exist_ok=True)
        temp = path.with_name(f".{path.name}.tmp")
        temp.write_text(body)
        temp.replace(path)
    log.info("summary written to %s", target)


app = typer.Typer(add_completion=False, pretty_exceptions_enable=False)
app.command()(train)


def main() -> None:
    """Run ``train`` alone (``python -m rxvision.cli.train``)."""
    from rxvision.cli.main import run_app

    run_app(app)


if __name__ == "__main__":
    main()
