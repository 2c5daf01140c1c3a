"""The ``scale`` profile's servers: Postgres, Redis and Airflow's Celery workers.

This is the topology a team runs once one machine is not enough: Airflow's own
CeleryExecutor with Redis as broker, Postgres as the metadata database (and as MLflow's
backend), and Celery workers that each consume named queues (the nightly DAG's train
task goes to ``gpu``). All are Debian's or PyPI's packages, bound to 127.0.0.1 on the
home's ports, with their state in the home.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import tempfile
from pathlib import Path
from urllib.parse import quote

from rxvision.config.schema import CeleryWorker
from rxvision.errors import StackError
from rxvision.stack import services
from rxvision.stack.process import ProcessSpec

PG_USER = "rxvision"
PG_DATABASES = ("airflow", "mlflow")
# Postgres refuses to run as root: under root its cluster lives where the postgres user
# can reach it (a pytest or home folder may be 0700 root), one folder per stack.
ROOT_PG_DIR = Path("/var/lib/rxvision/postgres")


def _is_root() -> bool:
    return os.geteuid() == 0


# --- Postgres ---------------------------------------------------------------------------


def postgres_tool(tool: str) -> str:
    """A Postgres server binary (``initdb``, ``postgres``): Debian keeps them off PATH."""
    versions = sorted(
        Path("/usr/lib/postgresql").glob(f"*/bin/{tool}"),
        key=lambda p: int(p.parent.parent.name) if p.parent.parent.name.isdigit() else 0,
    )
    if versions:
        return str(versions[-1])
    found = shutil.which(tool)
    if not found:
        raise StackError(
            f"Postgres' {tool} not found: install Debian's postgresql (scripts/install.sh)"
        )
    return found


def postgres_data_dir(layout: services.StackLayout) -> Path:
    """The cluster's data folder (under the home, or ``ROOT_PG_DIR`` when we are root)."""
    if _is_root():
        root = Path(os.environ.get("RXVISION_POSTGRES_ROOT", ROOT_PG_DIR))
        return root / layout.stack_id
    return layout.home.data_dir / "postgres"


def _as_postgres_user() -> list[str]:
    # setpriv execs (no forked parent), so the PID we track is the postmaster itself.
    if not _is_root():
        return []
    return ["setpriv", "--reuid=postgres", "--regid=postgres", "--init-groups", "--"]


def _chown_to_postgres(path: Path) -> None:
    if _is_root():
        shutil.chown(path, "postgres", "postgres")


def init_postgres_cluster(layout: services.StackLayout) -> bool:
    """``initdb`` the cluster once (user ``rxvision``, scram-sha-256); False when it exists."""
    data = postgres_data_dir(layout)
    if (data / "PG_VERSION").is_file():
        return False
    data.parent.mkdir(parents=True, exist_ok=True)
    data.mkdir(mode=0o700, exist_ok=True)
    _chown_to_postgres(data)
    with tempfile.TemporaryDirectory(prefix="rxv-pg-") as tmp:
        pwfile = Path(tmp) / "pw"
        pwfile.write_text(layout.creds.postgres_password)
        pwfile.chmod(0o600)
        _chown_to_postgres(Path(tmp))
        _chown_to_postgres(pwfile)
        argv = [
            *_as_postgres_user(),
            postgres_tool("initdb"),
            f"--pgdata={data}",
            f"--username={PG_USER}",
            f"--pwfile={pwfile}",
            "--auth=scram-sha-256",
            "--encoding=UTF8",
            "--no-instructions",
        ]
        proc = subprocess.run(argv, capture_output=True, text=True, cwd=tmp)
    if proc.returncode != 0:
        raise StackError(f"initdb failed for {data}:\n{proc.stdout[-2000:]}{proc.stderr[-2000:]}")
    if _is_root():
        link = layout.home.data_dir / "postgres"
        if not link.exists():
            link.symlink_to(data)  # where a person looks for the home's state
    return True


def postgres_spec(layout: services.StackLayout) -> ProcessSpec:
    """The postmaster on 127.0.0.1 only, its unix socket inside its data folder."""
    data = postgres_data_dir(layout)
    argv = [
        *_as_postgres_user(),
        postgres_tool("postgres"),
        "-D",
        str(data),
        "-p",
        str(layout.ports["postgres"]),
        "-c",
        f"listen_addresses={services.HOST}",
        "-c",
        f"unix_socket_directories={data}",
        # scheduler, api-server, dag-processor, triggerer, workers and MLflow each pool
        "-c",
        "max_connections=200",
    ]
    return ProcessSpec(
        "postgres",
        argv,
        services.base_env(layout),
        data if _is_root() else layout.home.root,
        stop_grace_s=20,
        stop_signal=signal.SIGINT,
    )


def postgres_uri(layout: services.StackLayout, db: str, scheme: str = "postgresql+psycopg2") -> str:
    """A SQLAlchemy URI for one database of the stack's Postgres."""
    password = quote(layout.creds.postgres_password, safe="")
    return f"{scheme}://{PG_USER}:{password}@{services.HOST}:{layout.ports['postgres']}/{db}"


def _connect(layout: services.StackLayout, db: str = "postgres"):  # type: ignore[no-untyped-def]
    import psycopg2

    return psycopg2.connect(
        host=services.HOST,
        port=layout.ports["postgres"],
        user=PG_USER,
        password=layout.creds.postgres_password,
        dbname=db,
        connect_timeout=3,
    )


def postgres_ready(layout: services.StackLayout) -> bool:
    """Postgres accepts a password login."""
    _connect(layout).close()
    return True


def create_databases(layout: services.StackLayout) -> list[str]:
    """Create Airflow's and MLflow's databases when missing; return those created."""
    from psycopg2 import sql

    created = []
    conn = _connect(layout)
    try:
        conn.autocommit = True  # CREATE DATABASE cannot run in a transaction
        with conn.cursor() as cur:
            for db in PG_DATABASES:
                cur.execute("SELECT 1 FROM pg_database WHERE datname = %s", (db,))
                if cur.fetchone() is None:
                    cur.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(db)))
                    created.append(db)
    finally:
        conn.close()
    return created


# --- Redis ------------------------------------------------------------------------------


def write_redis_config(layout: services.StackLayout) -> Path:
    """redis.conf (mode 0600: it holds the password, kept off the command line)."""
    data = layout.home.data_dir / "redis"
    data.mkdir(parents=True, exist_ok=True)
    path = layout.home.stack_dir / "redis.conf"
    lines = [
        f"bind {services.HOST}",
        f"port {layout.ports['redis']}",
        "protected-mode yes",
        f"requirepass {layout.creds.redis_password}",
        f"dir {data}",
        # Queued Celery messages survive a broker restart.
        "appendonly yes",
        'save ""',
        "daemonize no",
        'logfile ""',
    ]
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write("\n".join(lines) + "\n")
    return path


def redis_spec(layout: services.StackLayout) -> ProcessSpec:
    """Debian's redis-server with the home's config."""
    binary = shutil.which("redis-server")
    if binary is None:
        raise StackError("redis-server not found: install Debian's redis-server")
    argv = [binary, str(write_redis_config(layout))]
    return ProcessSpec("redis", argv, services.base_env(layout), layout.home.root, stop_grace_s=5)


def redis_url(layout: services.StackLayout, db: int = 0) -> str:
    """The broker URL (with the password: for Airflow's environment only, never a log)."""
    password = quote(layout.creds.redis_password, safe="")
    return f"redis://:{password}@{services.HOST}:{layout.ports['redis']}/{db}"


def redis_ready(layout: services.StackLayout) -> bool:
    """Redis answers PING with the password."""
    import redis

    client = redis.Redis(
        host=services.HOST,
        port=layout.ports["redis"],
        password=layout.creds.redis_password,
        socket_timeout=2,
    )
    try:
        return bool(client.ping())
    finally:
        client.close()


# --- Airflow on Celery ------------------------------------------------------------------


def celery_airflow_env(layout: services.StackLayout) -> dict[str, str]:
    """The ``AIRFLOW__*`` settings that turn the stack's Airflow into CeleryExecutor."""
    scale = layout.config.scale
    return {
        "AIRFLOW__CORE__EXECUTOR": "CeleryExecutor",
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": postgres_uri(
            layout, "airflow", "postgresql+psycopg2"
        ),
        "AIRFLOW__CELERY__BROKER_URL": redis_url(layout),
        "AIRFLOW__CELERY__RESULT_BACKEND": postgres_uri(
            layout, "airflow", "db+postgresql+psycopg2"
        ),
        "AIRFLOW__OPERATORS__DEFAULT_QUEUE": "default",
        # Task instances record which worker ran them (``name@host``, as Celery names it).
        "AIRFLOW__CORE__HOSTNAME_CALLABLE": "rxvision_airflow.worker.hostname",
        "AIRFLOW__SCHEDULER__TASK_INSTANCE_HEARTBEAT_TIMEOUT": str(scale.task_heartbeat_timeout_s),
        "AIRFLOW__SCHEDULER__TASK_QUEUED_TIMEOUT": str(scale.task_queued_timeout_s),
    }


def worker_server_name(name: str) -> str:
    """The stack's server name of one Celery worker."""
    return f"airflow-worker-{name}"


def celery_node_name(name: str) -> str:
    """The worker's Celery node name, as ``--celery-hostname`` sets it."""
    return f"{name}@{socket.gethostname()}"


def celery_worker_spec(
    layout: services.StackLayout, name: str, worker: CeleryWorker
) -> ProcessSpec:
    """``airflow celery worker`` consuming the worker's queues."""
    env = services.airflow_env(layout)
    env["RXVISION_WORKER_NAME"] = name
    # its tasks read it too: a scoring shard takes its share of the cores (cpu_budget)
    env["AIRFLOW__CELERY__WORKER_CONCURRENCY"] = str(worker.concurrency)
    argv = [
        str(services.bin_dir() / "airflow"),
        "celery",
        "worker",
        "--queues",
        ",".join(worker.queues),
        "--concurrency",
        str(worker.concurrency),
        "--celery-hostname",
        celery_node_name(name),
        # Two workers on one host cannot share the log server's port; their logs are on
        # the shared local disk, where the api-server reads them.
        "--skip-serve-logs",
        "--without-gossip",
        "--without-mingle",
    ]
    # A warm shutdown waits for running tasks; after the grace they are killed (and retried).
    return ProcessSpec(worker_server_name(name), argv, env, layout.airflow_home, stop_grace_s=30)


def celery_workers_answering(layout: services.StackLayout, timeout_s: float = 1.5) -> set[str]:
    """Node names of the workers that answer a Celery ``ping`` through the broker."""
    from celery import Celery

    app = Celery(broker=redis_url(layout))
    try:
        replies = app.control.ping(timeout=timeout_s) or []
    finally:
        app.close()
    return {node for reply in replies for node in reply}
