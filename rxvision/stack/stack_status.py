"""What ``rxvision stack status`` reports: each server's PID and health, and the sockets
the stack's processes listen on (the self-check reads these: loopback only)."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any

from rxvision.stack import scale, services
from rxvision.stack.stack_s3 import s3_ready

if TYPE_CHECKING:
    from rxvision.stack.local_stack import LocalStack

# the part of Airflow's /api/v2/monitor/health that answers for each Airflow server
AIRFLOW_HEALTH_PART = {
    "airflow-api-server": "metadatabase",
    "airflow-scheduler": "scheduler",
    "airflow-triggerer": "triggerer",
    "airflow-dag-processor": "dag_processor",
}


def stack_status(stack: LocalStack) -> dict[str, Any]:
    """Each server's PID and health, the Docker engine, and the URLs."""
    layout = stack.layout()
    health = _server_health(stack, layout)
    airflow = services.airflow_health(layout)
    servers = {}
    for name in stack.servers():
        pid = stack.pid_of(name)
        if name in health:
            healthy = health[name]
        elif name in AIRFLOW_HEALTH_PART:
            healthy = airflow.get(AIRFLOW_HEALTH_PART[name]) == "healthy"
        else:
            healthy = False
        servers[name] = {
            "pid": pid,
            "running": pid is not None,
            "healthy": pid is not None and healthy,
        }
    return {
        "home": str(stack.home.root),
        "profile": stack.profile,
        "servers": servers,
        "docker": stack.docker_state().to_json(),
        "urls": stack.urls(layout),
    }


def _server_health(stack: LocalStack, layout: services.StackLayout) -> dict[str, bool]:
    health = {
        "seaweedfs": _answers(lambda: s3_ready(layout)),
        "statsd": _answers(lambda: services.statsd_ready(layout)),
        "mlflow": _answers(lambda: services.mlflow_healthy(layout)),
    }
    if stack.profile == "scale":
        health["postgres"] = _answers(lambda: scale.postgres_ready(layout))
        health["redis"] = _answers(lambda: scale.redis_ready(layout))
        answering = _answering(lambda: scale.celery_workers_answering(layout))
        for worker in stack.config.scale.workers:
            health[scale.worker_server_name(worker)] = scale.celery_node_name(worker) in answering
    return health


def listening_sockets(stack: LocalStack) -> list[tuple[str, int, str, int]]:
    """(server, pid, address, port) of every TCP socket listening in a process of the
    stack (each server and its children)."""
    import psutil

    found = []
    for name in stack.all_known_servers():
        pid = stack.pid_of(name)
        if pid is None:
            continue
        try:
            root = psutil.Process(pid)
            procs = [root, *root.children(recursive=True)]
        except psutil.NoSuchProcess:
            continue
        for proc in procs:
            try:
                conns = proc.net_connections(kind="tcp")
            except (psutil.NoSuchProcess, psutil.AccessDenied):
                continue
            for conn in conns:
                if conn.status == psutil.CONN_LISTEN:
                    found.append((name, proc.pid, conn.laddr.ip, conn.laddr.port))
    return sorted(set(found))


def _answering(check: Callable[[], Iterable[str]]) -> set[str]:
    # a server that is down or refuses answers nothing: status reports, never raises
    try:
        return set(check())
    except Exception:
        return set()


def _answers(check: Callable[[], Any]) -> bool:
    try:
        return bool(check())
    except Exception:
        return False
