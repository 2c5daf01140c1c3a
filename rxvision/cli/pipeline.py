"""``rxvision pipeline run`` (the main job through Airflow) and ``rxvision status``."""

from __future__ import annotations

import json
import os
from typing import Any

import typer
from rich.console import Console
from rich.markup import escape

from rxvision.cli.tables import whole_cell_table
from rxvision.orchestration.airflow_client import AirflowClient
from rxvision.pipeline.config import load_pipeline_config

app = typer.Typer(help="Run the DAGs end to end through the local stack.", no_args_is_help=True)
console = Console()


def airflow_client() -> AirflowClient:
    """The Airflow REST API: ``RXVISION_AIRFLOW_API_URL`` with ``RXVISION_AIRFLOW_USER`` /
    ``RXVISION_AIRFLOW_PASSWORD`` when set, else the local stack's admin."""
    url, password = (
        os.environ.get("RXVISION_AIRFLOW_API_URL"),
        os.environ.get("RXVISION_AIRFLOW_PASSWORD"),
    )
    if url and password:
        return AirflowClient(url, os.environ.get("RXVISION_AIRFLOW_USER", "admin"), password)
    from rxvision.stack.local_stack import LocalStack
    from rxvision.stack.selfcheck import airflow_client as stack_client

    return stack_client(LocalStack())


def _use_stack_env() -> None:
    # the local stack's endpoints, unless the caller pointed the variables elsewhere
    if os.environ.get("AWS_ENDPOINT_URL_S3"):
        return
    from rxvision.stack.local_stack import LocalStack

    stack = LocalStack()
    if stack.ports_file.is_file():
        for key, value in stack.client_env().items():
            os.environ.setdefault(key, value)
        os.environ["MLFLOW_TRACKING_URI"] = stack.client_env()["MLFLOW_TRACKING_URI"]


@app.command("run")
def run(
    timeout: float = typer.Option(1800, help="Seconds to wait for the DAG runs."),
    summary: str | None = typer.Option(
        None, "--summary", help="Write the run's summary JSON here."
    ),
    epochs: int | None = typer.Option(
        None,
        min=1,
        help="Override the training config's epochs (test tiers; the main job uses the "
        "shipped recipe).",
    ),
) -> None:
    """Run the nightly DAG on the synthetic pills, then the scoring its champion starts.

    Snapshots the synthetic pills, triggers the nightly DAG through the REST API, waits
    for it and for the scoring DAG its new champion starts, and prints the status."""
    from rxvision.pipeline.end_to_end import run_pipeline

    _use_stack_env()
    cfg = load_pipeline_config()
    result = run_pipeline(
        airflow_client(), cfg, timeout_s=timeout, epochs=epochs, say=console.print
    )
    if summary:
        with open(summary, "w") as fh:
            json.dump(result, fh, indent=2)
    console.print(f"pipeline done in {result['seconds']:.0f}s")
    _print_status(_collect())


def _collect() -> dict[str, Any]:
    from rxvision.pipeline.status import collect_status

    cfg = load_pipeline_config()
    try:
        client: AirflowClient | None = airflow_client()
    except Exception:
        client = None
    return collect_status(cfg, client)


def status(as_json: bool = typer.Option(False, "--json", help="Machine-readable output.")) -> None:
    """The champion, each DAG's last run, SLA misses, open incidents, the latest predictions."""
    _use_stack_env()
    info = _collect()
    if as_json:
        typer.echo(json.dumps(info, indent=2, default=str))
        return
    _print_status(info)


def _incidents_line(incidents: dict[str, Any]) -> str:
    """``2: <id> (open), <id> (acked by ann)`` (``rxvision incidents show ID`` for more)."""
    if "error" in incidents or incidents.get("count") is None:
        return escape(str(incidents.get("error", incidents.get("note", "?"))))
    items = [
        f"{i['id']} ({i['state']}{' by ' + str(i['acked_by']) if i.get('acked_by') else ''})"
        for i in incidents.get("open", [])
    ]
    return escape(f"{incidents['count']}" + (": " + ", ".join(items) if items else ""))


def _int8_line(int8: dict[str, Any] | None) -> str:
    """How the champion scores on a CPU: its judged INT8 model, or fp32 and why."""
    if int8 is None:
        return "fp32 ONNX Runtime (no INT8 model tried at export)"
    figures = (
        f"top-1 {int8.get('top1_int8', '?')} vs fp32 {int8.get('top1_fp32', '?')}, "
        f"ECE {int8.get('ece_int8', '?')} vs {int8.get('ece_fp32', '?')}, wrong without "
        f"review {int8.get('silent_errors_int8', '?')} vs {int8.get('silent_errors_fp32', '?')}"
    )
    if int8["scores"]:
        return escape(f"static INT8 ({figures})")
    if int8.get("kept") == "true":
        return "fp32 ONNX Runtime (INT8 kept on top-1 alone: export the version again)"
    return escape(f"fp32 ONNX Runtime (INT8 refused: {int8.get('refused', '')}; {figures})")


def _metric_text(name: str, value: float) -> str:
    """``test_top1 0.996``; a count (``test_images``) as a whole number, ``test_images 78``."""
    if name.endswith("_images") and float(value).is_integer():
        return f"{name} {int(value)}"
    return f"{name} {value:.3f}"


def _print_status(info: dict[str, Any]) -> None:
    from rxvision.pipeline.status import NOT_PROMOTED_STATE

    table = whole_cell_table("what", "state", title="RxVision status")
    champ = info.get("champion")
    if champ and "error" not in champ:
        metrics = ", ".join(_metric_text(k, v) for k, v in champ["metrics"].items())
        table.add_row("champion", f"{champ['name']} v{champ['version']} ({metrics})")
        table.add_row("look-alike pairs", champ.get("pairs") or "none confused on its test split")
        table.add_row("cpu runtime", _int8_line(champ.get("int8")))
    else:
        table.add_row("champion", str((champ or {}).get("error", "none yet")))
    for dag_id, run in (info.get("dag_runs") or {}).items():
        if isinstance(run, dict) and run.get("outcome") == NOT_PROMOTED_STATE:
            # Airflow says success, but the gates refused the model: the champion stayed
            table.add_row(
                dag_id,
                f"[yellow]{run['outcome']}[/]: {escape(str(run.get('failed_gates', '')))} "
                f"({escape(str(run['run_id']))})",
            )
        elif isinstance(run, dict) and run.get("outcome"):
            table.add_row(
                dag_id,
                escape(f"{run['state']}, {run['outcome']}: {run.get('reason')} ({run['run_id']})"),
            )
        elif isinstance(run, dict) and "run_id" in run:
            table.add_row(dag_id, f"{run['state']} ({run['run_id']})")
        else:
            table.add_row(dag_id, "no runs" if run is None else str(run))
    sla = info.get("sla_misses") or {}
    table.add_row("SLA misses", str(sla.get("count", sla.get("error", "?"))))
    table.add_row("open incidents", _incidents_line(info.get("incidents") or {}))
    pred = info.get("predictions")
    if pred and "error" not in pred:
        table.add_row(
            "predictions", f"{pred['rows']} rows, error rate {pred['error_rate']}: {pred['uri']}"
        )
    else:
        table.add_row("predictions", str((pred or {}).get("error", "none yet")))
    if pred and "error" not in pred:
        table.add_row("review gallery", _gallery_line(pred))
    console.print(table)
    if pred and pred.get("review_url"):
        # unwrapped, after the table: a link to click or copy whole
        typer.echo(f"open the review gallery (link valid 7 days): {pred['review_url']}")


def _gallery_line(pred: dict[str, Any]) -> str:
    """``3 to review: s3://.../review/index.html``."""
    if not pred.get("review_uri"):
        return "none for this run (its _manifest.json says why under review)"
    return escape(f"{pred.get('needs_review')} to review: {pred['review_uri']}")
