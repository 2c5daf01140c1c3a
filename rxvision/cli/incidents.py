"""``rxvision incidents``: see, acknowledge and resolve the incidents alerts opened."""

from __future__ import annotations

import json
import os
from typing import Any

import typer
from rich.console import Console
from rich.markup import escape

from rxvision.cli.tables import whole_cell_table
from rxvision.errors import ConfigError
from rxvision.pipeline.incident_store import IncidentStore
from rxvision.pipeline.incidents import STATES, incidents_uri_for, summary_row

app = typer.Typer(
    help="Incidents: the alerts of one problem, with their history (ack, resolve).",
    no_args_is_help=True,
)
console = Console()

URI_HELP = "Where incidents live (default: the sibling incidents/ of the config's alerts_uri)."


def open_store(uri: str | None) -> IncidentStore:
    """The incident store at ``uri``, else beside the pipeline config's alert records."""
    if uri is None:
        from rxvision.pipeline.config import load_pipeline_config

        uri = incidents_uri_for(load_pipeline_config().alerts_uri)
        if uri is None:
            raise ConfigError("alerts_uri is null in the pipeline config: no incidents are kept")
    return IncidentStore(uri)


def _who() -> str:
    return os.environ.get("USER") or os.environ.get("LOGNAME") or "unknown"


@app.command("list")
def list_incidents(
    as_json: bool = typer.Option(False, "--json", help="A JSON array of incidents."),
    state: str | None = typer.Option(None, "--state", help="open, acked or resolved."),
    uri: str | None = typer.Option(None, "--uri", help=URI_HELP),
) -> None:
    """Every incident, oldest first (--state keeps one state)."""
    if state is not None and state not in STATES:
        raise ConfigError(f"--state {state!r}: expected one of {', '.join(STATES)}")
    rows = [summary_row(i) for i in open_store(uri).find(state)]
    if as_json:
        typer.echo(json.dumps(rows, indent=2))
        return
    table = whole_cell_table(
        *("id", "state", "kind", "dag.task", "run", "opened", "alerts"),
        title=f"incidents ({len(rows)})",
    )
    for row in rows:
        table.add_row(
            escape(row["id"]),
            _state(row),
            escape(str(row["kind"])),
            escape(f"{row['dag_id']}.{row['task_id']}"),
            escape(str(row["run_id"])),
            str(row["opened"]),
            str(row["alerts"]),
        )
    console.print(table)


def _state(row: dict[str, Any]) -> str:
    colour = {"open": "red", "acked": "yellow", "resolved": "green"}.get(str(row["state"]), "")
    by = f" by {escape(str(row['acked_by']))}" if row["state"] == "acked" else ""
    return f"[{colour}]{row['state']}[/]{by}" if colour else str(row["state"])


@app.command("show")
def show(
    incident_id: str = typer.Argument(..., metavar="ID", help="An id from `incidents list`."),
    as_json: bool = typer.Option(False, "--json", help="The incident as stored."),
    uri: str | None = typer.Option(None, "--uri", help=URI_HELP),
) -> None:
    """One incident and its history."""
    incident = open_store(uri).get(incident_id)
    if as_json:
        typer.echo(json.dumps(incident, indent=2))
        return
    console.print(f"[bold]{escape(incident['id'])}[/]: {_state(summary_row(incident))}")
    for key in ("kind", "dag_id", "task_id", "run_id", "severity", "summary", "opened"):
        console.print(f"  {key}: {escape(str(incident.get(key)))}", highlight=False)
    if incident.get("resolution"):
        console.print(f"  resolution: {escape(str(incident['resolution']))}", highlight=False)
    console.print("  history:")
    for event in incident["events"]:
        extra = {k: v for k, v in event.items() if k not in ("id", "type", "at", "delivery")}
        detail = ", ".join(f"{k}={v}" for k, v in extra.items() if v is not None)
        console.print(f"    {event['at']} {event['type']}: {escape(detail)}", highlight=False)


@app.command("ack")
def ack(
    incident_id: str = typer.Argument(..., metavar="ID"),
    by: str | None = typer.Option(None, "--by", help="Who takes it (default: $USER)."),
    uri: str | None = typer.Option(None, "--uri", help=URI_HELP),
) -> None:
    """Acknowledge an incident: someone is on it."""
    by = by or _who()
    incident, changed = open_store(uri).ack(incident_id, by)
    if changed:
        typer.echo(f"{incident_id}: acknowledged by {by} at {incident['acked_at']}")
    else:
        typer.echo(
            f"{incident_id}: already resolved at {incident['resolved_at']} "
            f"({incident['resolution']}): not acknowledged"
        )


@app.command("resolve")
def resolve(
    incident_id: str = typer.Argument(..., metavar="ID"),
    note: str = typer.Option(..., "--note", help="How it was resolved."),
    by: str | None = typer.Option(None, "--by", help="Who resolved it (default: $USER)."),
    uri: str | None = typer.Option(None, "--uri", help=URI_HELP),
) -> None:
    """Resolve an incident (resolving a resolved one changes nothing)."""
    by = by or _who()
    incident, changed = open_store(uri).resolve(incident_id, note, by)
    if changed:
        typer.echo(f"{incident_id}: resolved by {by} at {incident['resolved_at']}: {note}")
    else:
        typer.echo(
            f"{incident_id}: already resolved at {incident['resolved_at']} by "
            f"{incident['resolved_by']} ({incident['resolution']}): nothing changed"
        )
