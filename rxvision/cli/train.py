"""``rxvision train``: train the classifier as a config says, resume a run, write a summary.

Register with ``app.command("train")(train)`` in ``rxvision.cli.main``; ``python -m
rxvision.cli.train`` runs the command alone (with the same error-to-exit-code mapping).
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

if TYPE_CHECKING:
    from rxvision.train.data_source import DataSource
    from rxvision.train.folder_source import FolderCheck
    from rxvision.train.result import TrainResult

log = logging.getLogger(__name__)

# the files rank 0 left out, for the DDP ranks Lightning starts (they inherit the variable)
ENV_EXCLUDE = "RXVISION_TRAIN_EXCLUDE"


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
    report: Annotated[
        Path | None,
        typer.Option(
            "--report",
            help="Where to write the image folder's validation report (default: beside "
            "--summary, else $RXVISION_HOME/reports/).",
        ),
    ] = None,
    skip_invalid: Annotated[
        bool,
        typer.Option(
            "--skip-invalid",
            help="Train on the folder's valid images, leaving the invalid ones out (the "
            "nightly's quarantine rule); they are listed in the MLflow run.",
        ),
    ] = False,
    data_config: Annotated[
        Path | None,
        typer.Option(
            "--data-config",
            help="Data config whose validation policy checks an image folder "
            "(default configs/data.yaml, as the nightly).",
        ),
    ] = None,
) -> None:
    """Train on DATA with CONFIG (plus overrides); resume RUN_ID from its newest checkpoint.

    An image folder is validated first, as the nightly validates its snapshots: a folder
    with invalid files is refused before any run starts (or, with --skip-invalid, trained
    without them)."""
    # imported here: torch and Lightning take seconds, `rxvision --help` must not wait
    from rxvision.train.config import load_train_config
    from rxvision.train.run import train as run_training

    cfg = load_train_config(config, overrides or [])
    source, check = _checked_source(
        data,
        report or _default_report(summary, run_id),
        skip_invalid=skip_invalid,
        data_config=data_config,
    )
    result = run_training(
        cfg,
        source if source is not None else data,
        run_id=run_id,
        snapshot_rev=snapshot_rev,
        snapshot_hash=snapshot_hash,
    )
    if not result.is_global_zero:
        return  # a DDP rank started by Lightning: rank 0 reports
    if check is not None and check.skipped:
        record_skipped(result, check)
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


def _default_report(summary: str | None, run_id: str | None) -> Path:
    # beside the run's other outputs: the summary's folder, else the home's reports
    if summary is not None and not summary.startswith("s3://"):
        path = Path(summary)
        return path.with_name(f"{path.stem}.validation.json")
    from rxvision.home import Home

    stamp = run_id or datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    return Home.from_env().reports_dir / f"train-validation-{stamp}.json"


def _checked_source(
    data: str, report: Path, *, skip_invalid: bool, data_config: Path | None
) -> tuple[DataSource | None, FolderCheck | None]:
    """For an image folder: validate it (refuse, or leave invalid files out) and return
    the source to train on when files were left out (else None: train on ``data``) and
    the check; (None, None) for a shard set, which the nightly validated."""
    from rxvision.train.data_source import resolve_data
    from rxvision.train.folder_source import check_image_folder, image_folder_of
    from rxvision.train.hardware import launch_rank_is_zero

    folder = image_folder_of(data)
    if folder is None:
        return None, None
    if not launch_rank_is_zero():
        # a DDP rank: rank 0 validated the folder and left these files out
        excluded = json.loads(os.environ.get(ENV_EXCLUDE, "[]"))
        return (resolve_data(folder, exclude=excluded) if excluded else None), None
    from rxvision.data.settings import load_data_config, validation_policy

    policy = validation_policy(load_data_config(data_config))
    check = check_image_folder(folder, report, policy, skip_invalid=skip_invalid)
    os.environ[ENV_EXCLUDE] = json.dumps(check.skipped_paths)
    log.info("image folder %s passed validation; report %s", folder, report)
    if not check.skipped:
        return None, check  # the folder as it is: run.train reads it itself
    return resolve_data(folder, exclude=check.skipped_paths), check


def record_skipped(result: TrainResult, check: FolderCheck) -> None:
    """List the files left out in the run: an artifact, and their count as a param (the
    first time) and a tag."""
    from mlflow.tracking import MlflowClient

    from rxvision.train.folder_source import SKIPPED_ARTIFACT, SKIPPED_KEY, write_skipped

    if result.mlflow_run_id is None:
        return
    client = MlflowClient(result.tracking_uri)
    count = str(len(check.skipped))
    with tempfile.TemporaryDirectory(prefix="rxv-skipped-") as tmp:
        path = write_skipped(check, Path(tmp) / Path(SKIPPED_ARTIFACT).name)
        client.log_artifact(result.mlflow_run_id, str(path), str(Path(SKIPPED_ARTIFACT).parent))
    if SKIPPED_KEY not in client.get_run(result.mlflow_run_id).data.params:
        client.log_param(result.mlflow_run_id, SKIPPED_KEY, count)
    client.set_tag(result.mlflow_run_id, SKIPPED_KEY, count)
    log.info("%s files left out, listed in %s of run %s", count, SKIPPED_ARTIFACT, result.run_id)


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
