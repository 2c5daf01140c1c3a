"""infra/compose/compose.yaml: `docker compose config` passes and the stack has its shape."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

pytestmark = pytest.mark.unit

REPO = Path(__file__).resolve().parents[3]
COMPOSE_DIR = REPO / "infra" / "compose"
COMPOSE_FILE = COMPOSE_DIR / "compose.yaml"
SECRET_NAME = re.compile(r"PASSWORD|SECRET|FERNET|TOKEN|_KEY\b|ACCESS_KEY|REDISCLI_AUTH")
REQUIRED_VAR = re.compile(r"\$\{[A-Z0-9_]+:\?[^}]+\}")


def compose_command() -> list[str]:
    """``docker compose`` (v2 plugin) when it answers, else Debian's ``docker-compose``."""
    if shutil.which("docker"):
        probe = subprocess.run(
            ["docker", "compose", "version"], capture_output=True, text=True, check=False
        )
        if probe.returncode == 0:
            return ["docker", "compose"]
    if shutil.which("docker-compose"):
        return ["docker-compose"]
    pytest.skip("neither `docker compose` nor `docker-compose` is installed")


def filled_env(tmp_path: Path) -> tuple[Path, dict[str, str]]:
    """.env.example with every empty value filled with a recognisable test secret."""
    values: dict[str, str] = {}
    lines = []
    for line in (COMPOSE_DIR / ".env.example").read_text().splitlines():
        m = re.fullmatch(r"([A-Z0-9_]+)=(.*)", line)
        if m and not m.group(2):
            values[m.group(1)] = f"test-{m.group(1).lower().replace('_', '-')}-s3cr3t"
            line = f"{m.group(1)}={values[m.group(1)]}"
        lines.append(line)
    env = tmp_path / "test.env"
    env.write_text("\n".join(lines) + "\n")
    return env, values


def run_config(env_file: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*compose_command(), "-f", str(COMPOSE_FILE), "--env-file", str(env_file), "config"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        cwd=COMPOSE_DIR,
    )


@pytest.fixture(scope="module")
def rendered(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    env, values = filled_env(tmp_path_factory.mktemp("compose"))
    result = run_config(env)
    assert result.returncode == 0, result.stderr
    config = yaml.safe_load(result.stdout)
    config["_secrets"] = values
    return config


def published_bindings(service: dict[str, Any]) -> list[tuple[str, str]]:
    """(host ip, published port) of each port, in compose v1 (string) or v2 (long) form."""
    out = []
    for port in service.get("ports") or []:
        if isinstance(port, dict):
            out.append((str(port.get("host_ip", "")), str(port.get("published", ""))))
        else:
            parts = str(port).split(":")
            out.append((parts[0] if len(parts) == 3 else "", parts[-2] if len(parts) > 1 else ""))
    return out


def test_config_passes_with_a_filled_env(rendered: dict[str, Any]) -> None:
    services = rendered["services"]
    assert {
        "minio",
        "minio-init",
        "postgres",
        "redis",
        "mlflow",
        "airflow-init",
        "airflow-api-server",
        "airflow-scheduler",
        "airflow-dag-processor",
        "airflow-triggerer",
        "worker-default",
        "worker-gpu",
        "statsd-exporter",
        "prometheus",
        "grafana",
    } <= set(services)


def test_config_refuses_missing_secrets(tmp_path: Path) -> None:
    env = tmp_path / "empty.env"
    env.write_text((COMPOSE_DIR / ".env.example").read_text())  # secrets left empty
    result = run_config(env)
    assert result.returncode != 0
    assert "in .env" in result.stdout + result.stderr


def test_gpu_worker_reserves_nvidia_gpus(rendered: dict[str, Any]) -> None:
    gpu = rendered["services"]["worker-gpu"]
    devices = gpu["deploy"]["resources"]["reservations"]["devices"]
    assert any(d["driver"] == "nvidia" and "gpu" in d["capabilities"] for d in devices)
    # training only: scoring shards (queue default) never land beside a training run
    assert gpu["command"][gpu["command"].index("--queues") + 1] == "gpu"
    assert "--queues default" in " ".join(rendered["services"]["worker-default"]["command"])
    mounts = [v if isinstance(v, str) else f"{v['source']}:{v['target']}" for v in gpu["volumes"]]
    assert any(m.startswith("/var/run/docker.sock:/var/run/docker.sock") for m in mounts)
    assert "deploy" not in rendered["services"]["worker-default"]


def test_every_published_port_binds_localhost(rendered: dict[str, Any]) -> None:
    bindings = {name: published_bindings(svc) for name, svc in rendered["services"].items()}
    assert bindings["airflow-api-server"] and bindings["grafana"]
    for name, ports in bindings.items():
        for host_ip, _ in ports:
            assert host_ip == "127.0.0.1", f"{name} publishes on {host_ip or 'all interfaces'}"


def test_no_literal_secret_in_compose_file(rendered: dict[str, Any]) -> None:
    text = COMPOSE_FILE.read_text()
    for value in rendered["_secrets"].values():
        assert value not in text
    # each secret-looking variable is a required interpolation, never a value
    raw = yaml.safe_load(text)
    for name, svc in raw["services"].items():
        env = svc.get("environment") or {}
        assert isinstance(env, dict), name
        for key, value in env.items():
            if SECRET_NAME.search(key) and not key.endswith("_FILE"):
                assert REQUIRED_VAR.fullmatch(str(value)), (name, key)
            # passwords inside URIs and connection JSON too
            for embedded in re.findall(r"://[^:/@\s]*:([^@\s]+)@", str(value)):
                assert REQUIRED_VAR.fullmatch(embedded), (name, key)
            for embedded in re.findall(r'"password":\s*"([^"]*)"', str(value)):
                assert REQUIRED_VAR.fullmatch(embedded), (name, key)
    # ... and they reach the services
    s3_key = rendered["_secrets"]["RXVISION_S3_SECRET_KEY"]
    sched_env = rendered["services"]["airflow-scheduler"]["environment"]
    assert sched_env["AWS_SECRET_ACCESS_KEY"] == s3_key
    assert "s3cr3t" not in json.dumps(rendered["services"]["prometheus"])


def test_services_have_healthchecks_and_wait_for_health(rendered: dict[str, Any]) -> None:
    services = rendered["services"]
    one_shot = {"minio-init", "airflow-init"}
    for name, svc in services.items():
        if name in one_shot:
            assert svc.get("restart") == "no", name
            continue
        assert svc.get("healthcheck", {}).get("test"), f"{name} has no healthcheck"
        for dep, spec in (svc.get("depends_on") or {}).items():
            wanted = "service_completed_successfully" if dep in one_shot else "service_healthy"
            assert spec["condition"] == wanted, (name, dep)
    for name in ("airflow-scheduler", "airflow-api-server", "worker-gpu", "worker-default"):
        deps = services[name]["depends_on"]
        assert {"postgres", "redis", "airflow-init"} <= set(deps), name
    assert services["mlflow"]["depends_on"]["minio-init"]["condition"] == (
        "service_completed_successfully"
    )


def test_airflow_runs_celery_with_the_project_connections(rendered: dict[str, Any]) -> None:
    env = rendered["services"]["airflow-scheduler"]["environment"]
    assert env["AIRFLOW__CORE__EXECUTOR"] == "CeleryExecutor"
    assert env["AIRFLOW__CELERY__BROKER_URL"].startswith("redis://:test-redis-password")
    # the driver named: SQLAlchemy defaults postgresql:// to psycopg 3, which is not installed
    assert env["AIRFLOW__CELERY__RESULT_BACKEND"].startswith("db+postgresql+psycopg2://")
    assert env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"].startswith("postgresql+psycopg2://")
    s3 = json.loads(env["AIRFLOW_CONN_RXVISION_S3"])
    assert s3["conn_type"] == "aws" and s3["login"] == "rxvision"
    assert s3["extra"]["endpoint_url"] == "http://minio:9000"
    mlflow = json.loads(env["AIRFLOW_CONN_RXVISION_MLFLOW"])
    assert mlflow == {"conn_type": "http", "host": "http://mlflow:5000"}
    for key in ("MLFLOW_TRACKING_URI", "AWS_ENDPOINT_URL_S3", "STATSD_HOST", "STATSD_PORT"):
        assert env[key], key
    assert env["STATSD_HOST"] == env["AIRFLOW__METRICS__STATSD_HOST"] == "statsd-exporter"


def test_images_build_from_docker_dir(rendered: dict[str, Any]) -> None:
    for name in ("airflow-api-server", "worker-gpu", "mlflow", "airflow-init"):
        build = rendered["services"][name]["build"]
        assert build["dockerfile"].endswith("docker/airflow.Dockerfile") or (
            build["dockerfile"] == "docker/airflow.Dockerfile"
        )
        assert build["target"] == "app"
        assert Path(build["context"]).resolve() == REPO


@pytest.mark.parametrize(
    ("dockerfile", "entrypoint"),
    [("airflow.Dockerfile", '["airflow"]'), ("score.Dockerfile", '["rxvision", "score"]')],
)
def test_dockerfiles_have_the_stages(dockerfile: str, entrypoint: str) -> None:
    text = (REPO / "docker" / dockerfile).read_text()
    assert "ARG BASE_IMAGE=rxvision-base:bookworm" in text
    assert re.search(r"^FROM \$\{BASE_IMAGE\} AS system$", text, re.M)
    assert re.search(r"^FROM system AS deps$", text, re.M)
    assert re.search(r"^FROM deps AS app$", text, re.M)
    assert re.search(r"^USER rxvision$", text, re.M)
    assert f"ENTRYPOINT {entrypoint}" in text
    assert "id=extra_ca" in text and "requirements.lock" in text


def test_init_creates_every_pool_the_dags_use(rendered: dict[str, Any]) -> None:
    from rxvision.pipeline.pools import POOLS

    script = "\n".join(rendered["services"]["airflow-init"]["command"])
    for pool in POOLS:
        # a task whose pool is missing is never scheduled
        assert f"airflow pools set {pool.name} {pool.slots} " in script, pool.name
    assert script.index("airflow db migrate") < script.index("airflow pools set")


def test_task_logs_go_to_s3_through_the_project_connection(rendered: dict[str, Any]) -> None:
    for service in ("airflow-scheduler", "airflow-api-server"):
        env = rendered["services"][service]["environment"]
        assert env["AIRFLOW__LOGGING__REMOTE_LOGGING"] == "True"
        assert env["AIRFLOW__LOGGING__REMOTE_BASE_LOG_FOLDER"].startswith("s3://rxvision-")
        assert env["AIRFLOW__LOGGING__REMOTE_LOG_CONN_ID"] == "rxvision_s3"
