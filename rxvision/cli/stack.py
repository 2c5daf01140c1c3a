"""``rxvision stack``: the local stack of real servers (S3, MLflow, Airflow, statsd)."""

from __future__ import annotations

import json
import time

import typer
from rich.console import Console

from rxvision.cli.tables import whole_cell_table
from rxvision.stack.local_stack import SERVER_NAMES, LocalStack

app = typer.Typer(
    help="Run the local stack: SeaweedFS (S3), MLflow, Airflow, statsd.", no_args_is_help=True
)
console = Console()


@app.command("up")
def up(
    timeout: float = typer.Option(240, help="Seconds to wait for each server's health."),
    profile: str | None = typer.Option(
        None,
        help="local: LocalExecutor on SQLite. scale: CeleryExecutor with Redis, Postgres for "
        "Airflow and MLflow, and the Celery workers of configs/stack.yaml. Default: the "
        "profile this home last ran, else local.",
    ),
) -> None:
    """Start every server not yet running and wait until each is healthy (idempotent)."""
    stack = LocalStack(profile=profile)
    with console.status(f"starting the stack ({stack.profile} profile)…"):
        report = stack.up(timeout_s=timeout)
    for name, (old, new) in report.moved_ports.items():
        console.print(f"[yellow]port {old} for {name} was taken: using {new}[/]")
    started = ", ".join(report.started) or "nothing (all running)"
    console.print(f"stack up in {report.seconds:.0f}s; started: {started}")
    style = "red" if "NOT RUNNING" in report.docker or "could not" in report.docker else "none"
    console.print(f"docker engine: {report.docker}", style=style, highlight=False)
    _print_urls(stack)
    if report.credentials_created:
        # Shown once, when created; afterwards they live (mode 0600) in the home only.
        creds = stack.creds
        console.print(
            f"[bold]Airflow login (shown once):[/] user "
            f"{stack.config.airflow.admin_user} / password {creds.airflow_admin_password}"
        )
        console.print(f"credentials stored in {stack.home.stack_dir / 'credentials.json'}")
    console.print('clients: eval "$(rxvision stack env)"')


def _print_urls(stack: LocalStack) -> None:
    for name, url in stack.urls().items():
        console.print(f"  {name:8} {url}")


@app.command("down")
def down() -> None:
    """Stop every server this home's ``up`` started, leaving no process behind."""
    stopped = LocalStack().down()
    console.print(f"stopped: {', '.join(stopped) if stopped else 'nothing was running'}")


@app.command("status")
def status(as_json: bool = typer.Option(False, "--json", help="Machine-readable output.")) -> None:
    """Each server's PID and health, and the URLs. Exit 1 when one is down."""
    stack = LocalStack()
    info = stack.status()
    if as_json:
        typer.echo(json.dumps(info, indent=2))
    else:
        table = whole_cell_table("server", "pid", "healthy")
        for name, s in info["servers"].items():
            table.add_row(name, str(s["pid"] or "-"), "yes" if s["healthy"] else "[red]no[/]")
        console.print(table)
        docker = info["docker"]
        shown = "ok" if docker["healthy"] else "[red]NOT RUNNING[/]"
        console.print(f"docker engine ({docker['launcher']} launcher): {shown}: {docker['detail']}")
        _print_urls(stack)
    if not all(s["healthy"] for s in info["servers"].values()) or not info["docker"]["healthy"]:
        raise typer.Exit(1)


@app.command("env")
def env() -> None:
    """Shell exports of the standard variables: eval "$(rxvision stack env)".

    They include the S3 secret, so that ``aws``, ``mlflow`` and boto3 work as they are:
    print them to a terminal or an eval, never into a log.
    """
    typer.echo(LocalStack().env_exports())


@app.command("logs")
def logs(
    server: str = typer.Argument(
        ...,
        help=f"One of: {', '.join(SERVER_NAMES)}; with --profile scale also postgres, "
        "redis, airflow-worker-NAME.",
    ),
    lines: int = typer.Option(50, "-n", help="How many lines."),
    follow: bool = typer.Option(False, "-f", help="Keep printing new lines."),
) -> None:
    """Print a server's log tail."""
    path = LocalStack().log_path(server)
    if not path.is_file():
        console.print(f"no log yet: {path}")
        raise typer.Exit(1)
    text = path.read_text(errors="replace").splitlines()[-lines:]
    typer.echo("\n".join(text))
    if follow:
        with path.open(errors="replace") as fh:
            fh.seek(0, 2)
            while True:
                line = fh.readline()
                if line:
                    typer.echo(line, nl=False)
                else:
                    time.sleep(0.5)


@app.command("metrics")
def metrics(
    as_json: bool = typer.Option(False, "--json", help="Machine-readable output."),
    prefix: str = typer.Option("", help="Only metrics whose name starts with this."),
) -> None:
    """Counters, gauges and timers the stack's statsd receiver has kept."""
    data = LocalStack().metrics()
    sel = {
        kind: {k: v for k, v in data.get(kind, {}).items() if k.startswith(prefix)}
        for kind in ("counters", "gauges", "timers")
    }
    if as_json:
        for t in sel["timers"].values():
            t.pop("samples", None)
        typer.echo(json.dumps(sel, indent=2))
        return
    table = whole_cell_table("kind", "metric", "value")
    for name, value in sorted(sel["counters"].items()):
        table.add_row("counter", name, f"{value:g}")
    for name, value in sorted(sel["gauges"].items()):
        table.add_row("gauge", name, f"{value:g}")
    for name, t in sorted(sel["timers"].items()):
        table.add_row("timer", name, f"n={t['count']} p50={t['p50']:.1f}ms p95={t['p95']:.1f}ms")
    console.print(table)


@app.command("check")
def check(
    dag_run: bool = typer.Option(True, help="Also run the smoke DAG through the scheduler."),
) -> None:
    """Prove each server works: S3 round trip and auth, MLflow artifact in S3, statsd, Airflow."""
    from rxvision.stack.selfcheck import run_checks

    stack = LocalStack()
    with console.status("checking the stack…"):
        results = run_checks(stack, with_dag_run=dag_run)
    table = whole_cell_table("check", "result", "seconds", "detail")
    for r in results:
        table.add_row(
            r.name, "[green]ok[/]" if r.passed else "[red]FAILED[/]", f"{r.seconds:.1f}", r.detail
        )
    console.print(table)
    if not all(r.passed for r in results):
        raise typer.Exit(1)
