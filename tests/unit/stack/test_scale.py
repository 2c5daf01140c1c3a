"""The scale profile's server definitions: Postgres, Redis, Celery workers, Airflow's
CeleryExecutor settings, and a home remembering its profile."""

from __future__ import annotations

import json
import signal
import stat
from pathlib import Path

import pytest

from rxvision.config.schema import StackConfig
from rxvision.errors import StackError
from rxvision.home import Home
from rxvision.stack import scale, services
from rxvision.stack.credentials import load_or_create_credentials
from rxvision.stack.local_stack import LocalStack, server_names
from rxvision.stack.ports import PortRegistry
from rxvision_airflow.worker import hostname

pytestmark = pytest.mark.unit


@pytest.fixture
def stack(tmp_path: Path) -> LocalStack:
    home = Home(tmp_path / "home").ensure()
    registry = PortRegistry(tmp_path / "ports")
    return LocalStack(home, StackConfig(), port_registry=registry, profile="scale")


@pytest.fixture
def layout(stack: LocalStack) -> services.StackLayout:
    return stack.layout()


def test_scale_profile_adds_postgres_redis_and_one_server_per_worker() -> None:
    names = server_names("scale", StackConfig())
    assert names[:2] == ("postgres", "redis")
    assert names[-2:] == ("airflow-worker-default", "airflow-worker-gpu")
    assert "postgres" not in server_names("local", StackConfig())


def test_airflow_runs_celery_on_the_stacks_postgres_and_redis(
    layout: services.StackLayout,
) -> None:
    env = services.airflow_env(layout)
    port_pg, port_redis = layout.ports["postgres"], layout.ports["redis"]
    assert env["AIRFLOW__CORE__EXECUTOR"] == "CeleryExecutor"
    assert env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"] == (
        f"postgresql+psycopg2://rxvision:{layout.creds.postgres_password}"
        f"@127.0.0.1:{port_pg}/airflow"
    )
    assert env["AIRFLOW__CELERY__RESULT_BACKEND"].startswith("db+postgresql+psycopg2://")
    assert env["AIRFLOW__CELERY__BROKER_URL"] == (
        f"redis://:{layout.creds.redis_password}@127.0.0.1:{port_redis}/0"
    )
    assert env["AIRFLOW__CORE__HOSTNAME_CALLABLE"] == "rxvision_airflow.worker.hostname"
    assert env["AIRFLOW__SCHEDULER__TASK_INSTANCE_HEARTBEAT_TIMEOUT"] == "300"


def test_mlflow_backend_on_postgres_passed_by_environment(layout: services.StackLayout) -> None:
    spec = services.mlflow_spec(layout)
    assert spec.env["MLFLOW_BACKEND_STORE_URI"].endswith(f":{layout.ports['postgres']}/mlflow")
    # the password stays out of the command line (visible to every user in ps)
    assert not any(layout.creds.postgres_password in arg for arg in spec.argv)


def test_local_profile_keeps_sqlite_and_local_executor(tmp_path: Path) -> None:
    home = Home(tmp_path / "h").ensure()
    local = LocalStack(home, StackConfig(), port_registry=PortRegistry(tmp_path / "p"))
    env = services.airflow_env(local.layout())
    assert "AIRFLOW__CORE__EXECUTOR" not in env  # airflow.cfg's LocalExecutor
    assert env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"].startswith("sqlite:///")


def test_redis_password_in_a_private_config_file_not_argv(layout: services.StackLayout) -> None:
    spec = scale.redis_spec(layout)
    conf = Path(spec.argv[-1])
    assert stat.S_IMODE(conf.stat().st_mode) == 0o600
    text = conf.read_text()
    assert f"requirepass {layout.creds.redis_password}" in text
    assert "bind 127.0.0.1" in text and f"port {layout.ports['redis']}" in text
    assert not any(layout.creds.redis_password in arg for arg in spec.argv)


def test_postgres_listens_on_loopback_and_stops_fast(layout: services.StackLayout) -> None:
    spec = scale.postgres_spec(layout)
    assert "listen_addresses=127.0.0.1" in spec.argv
    assert str(layout.ports["postgres"]) in spec.argv
    assert spec.stop_signal == signal.SIGINT  # SIGTERM would wait for every client
    if spec.argv[0] == "setpriv":  # as root: postgres refuses to run as root
        assert "--reuid=postgres" in spec.argv


def test_each_worker_consumes_its_queues_under_its_own_name(
    layout: services.StackLayout,
) -> None:
    workers = layout.config.scale.workers
    spec = scale.celery_worker_spec(layout, "gpu", workers["gpu"])
    argv = spec.argv
    assert argv[1:3] == ["celery", "worker"]
    assert argv[argv.index("--queues") + 1] == "gpu"
    assert argv[argv.index("--celery-hostname") + 1] == scale.celery_node_name("gpu")
    assert spec.env["RXVISION_WORKER_NAME"] == "gpu"
    assert spec.name == "airflow-worker-gpu"


def test_task_instances_name_the_worker(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RXVISION_WORKER_NAME", "gpu")
    assert hostname().startswith("gpu@")
    monkeypatch.delenv("RXVISION_WORKER_NAME")
    assert "@" not in hostname()


def test_credentials_of_an_older_home_gain_the_new_secrets_once(tmp_path: Path) -> None:
    path = tmp_path / "credentials.json"
    creds, _ = load_or_create_credentials(path)
    old = json.loads(path.read_text())
    del old["postgres_password"], old["redis_password"]
    path.write_text(json.dumps(old))
    first, created = load_or_create_credentials(path)
    second, _ = load_or_create_credentials(path)
    assert not created
    assert first.s3_secret_key == creds.s3_secret_key
    assert first.postgres_password == second.postgres_password  # kept, not regenerated
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


def test_unknown_profile_is_refused(tmp_path: Path) -> None:
    with pytest.raises(StackError, match="unknown stack profile 'huge'"):
        LocalStack(Home(tmp_path).ensure(), StackConfig(), profile="huge")


def test_home_remembers_its_profile(stack: LocalStack) -> None:
    stack.profile_file.write_text("scale\n")
    again = LocalStack(stack.home, stack.config, port_registry=stack.port_registry)
    assert again.profile == "scale"
    assert "airflow-worker-gpu" in again.servers()
