"""``rxvision stack check``: prove each server of the stack is the real one and works.

S3: a put/get round trip, and a wrong secret refused. MLflow: a run whose artifact then
exists as an object in the artifacts bucket. Airflow: health, then a DAG run through the
real scheduler via the REST API. statsd: a counter sent and then kept by the receiver.
"""

from __future__ import annotations

import ipaddress
import logging
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from tempfile import TemporaryDirectory

from botocore.exceptions import ClientError

from rxvision.errors import StackError
from rxvision.orchestration.airflow_client import AirflowApiError, AirflowClient
from rxvision.stack import docker_engine
from rxvision.stack.local_stack import LocalStack
from rxvision.stack.process import wait_until
from rxvision.storage.s3 import S3Config, S3Store

log = logging.getLogger(__name__)

SMOKE_DAG = "rxvision_stack_smoke"


@dataclass(frozen=True)
class CheckResult:
    """One server's check: passed, what was seen, how long it took."""

    name: str
    passed: bool
    detail: str
    seconds: float


def run_checks(stack: LocalStack, with_dag_run: bool = True) -> list[CheckResult]:
    """Run every check; a failing check is reported, not raised, so all are tried."""
    checks: list[tuple[str, Callable[[LocalStack], str]]] = [
        ("s3", check_s3),
        ("mlflow", check_mlflow),
        ("statsd", check_statsd),
        ("airflow", check_airflow if with_dag_run else check_airflow_health),
        ("pools", check_airflow_pools),
        ("docker", check_docker_engine),
        ("loopback", check_loopback),
    ]
    results = []
    for name, check in checks:
        began = time.monotonic()
        try:
            detail, passed = check(stack), True
        except Exception as exc:
            detail, passed = f"{type(exc).__name__}: {exc}", False
        results.append(CheckResult(name, passed, detail, time.monotonic() - began))
    return results


def _store(stack: LocalStack, secret: str | None = None) -> S3Store:
    env = stack.client_env()
    return S3Store(
        S3Config(
            endpoint_url=env["AWS_ENDPOINT_URL_S3"],
            access_key=env["AWS_ACCESS_KEY_ID"],
            secret_key=secret or env["AWS_SECRET_ACCESS_KEY"],
            region=env["AWS_DEFAULT_REGION"],
        )
    )


def check_s3(stack: LocalStack) -> str:
    """Round-trip an object; a wrong secret must get 403."""
    bucket = stack.config.s3.buckets[0]
    uri = f"s3://{bucket}/_selfcheck/{uuid.uuid4().hex}"
    payload = uuid.uuid4().bytes * 100
    store = _store(stack)
    store.put_bytes(uri, payload)
    if store.get_bytes(uri) != payload:
        raise StackError(f"S3 round trip returned different bytes for {uri}")
    try:
        _store(stack, secret="wrong-" + uuid.uuid4().hex).get_bytes(uri)
    except ClientError as exc:
        status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
        if status != 403:
            raise StackError(f"wrong secret gave HTTP {status}, expected 403") from exc
    else:
        raise StackError("S3 accepted a wrong secret: credentials are not checked")
    finally:
        store.client.delete_object(Bucket=bucket, Key=uri.split("/", 3)[3])
    return f"put/get {len(payload)} bytes ok; wrong secret refused (403)"


def check_mlflow(stack: LocalStack) -> str:
    """Log a run with an artifact and find the artifact as an object in S3."""
    import mlflow

    env = stack.client_env()
    client = mlflow.MlflowClient(tracking_uri=env["MLFLOW_TRACKING_URI"])
    exp = client.get_experiment_by_name("rxvision_selfcheck")
    exp_id = exp.experiment_id if exp else client.create_experiment("rxvision_selfcheck")
    run = client.create_run(exp_id, tags={"rxvision.check": "stack"})
    client.log_metric(run.info.run_id, "ping", 1.0)
    with TemporaryDirectory() as tmp:
        path = Path(tmp) / "selfcheck.txt"
        path.write_text(f"run {run.info.run_id}\n")
        client.log_artifact(run.info.run_id, str(path))
    client.set_terminated(run.info.run_id)
    bucket = stack.config.mlflow.artifacts_bucket
    keys = [
        k
        for k in _store(stack).list_keys(f"s3://{bucket}/")
        if run.info.run_id in k and k.endswith("selfcheck.txt")
    ]
    if not keys:
        raise StackError(f"artifact of run {run.info.run_id} not found in s3://{bucket}/")
    return f"run {run.info.run_id[:8]} artifact at s3://{bucket}/{keys[0]}"


def check_statsd(stack: LocalStack) -> str:
    """Send a counter and wait until the receiver has kept it."""
    import statsd

    env = stack.client_env()
    name = f"rxvision.selfcheck.ping_{uuid.uuid4().hex[:8]}"
    statsd.StatsClient(env["STATSD_HOST"], int(env["STATSD_PORT"])).incr(name, 3)
    if not wait_until(lambda: stack.metrics()["counters"].get(name) == 3, 10):
        raise StackError(f"statsd counter {name} was not kept by the receiver")
    return f"counter {name}=3 kept"


def airflow_client(stack: LocalStack) -> AirflowClient:
    """A REST client logged in as the stack's admin."""
    return AirflowClient(
        stack.urls()["airflow"], stack.config.airflow.admin_user, stack.creds.airflow_admin_password
    )


def check_airflow_health(stack: LocalStack) -> str:
    """Every Airflow part reports healthy."""
    health = airflow_client(stack).health()
    bad = {k: v.get("status") for k, v in health.items() if v.get("status") != "healthy"}
    if bad:
        raise StackError(f"Airflow parts not healthy: {bad}")
    return "metadatabase, scheduler, triggerer, dag_processor healthy"


def check_airflow_pools(stack: LocalStack) -> str:
    """The one-slot pools the nightly DAG needs exist (a task of a missing pool never
    runs)."""
    from rxvision.pipeline.pools import POOLS

    client = airflow_client(stack)
    found = {}
    for pool in POOLS:
        try:
            found[pool.name] = client.request("GET", f"/pools/{pool.name}")["slots"]
        except AirflowApiError as exc:
            raise StackError(
                f"Airflow pool {pool.name} is missing: run `rxvision stack up`"
            ) from exc
        if found[pool.name] != pool.slots:
            raise StackError(
                f"Airflow pool {pool.name} has {found[pool.name]} slots, not {pool.slots}"
            )
    return ", ".join(f"{name} ({slots} slot)" for name, slots in found.items())


def check_docker_engine(stack: LocalStack) -> str:
    """The engine the nightly's ``train`` task needs answers (unless the launcher is local)."""
    state = stack.docker_state()
    if not state.healthy:
        why = docker_engine.why_not_startable(None) or "run `rxvision stack up` to start it"
        raise StackError(f"train launcher {state.mode}: Docker engine {state.detail}; {why}")
    return f"train launcher {state.mode}: {state.detail}"


def check_loopback(stack: LocalStack) -> str:
    """Every TCP socket the stack listens on is on the loopback interface."""
    sockets = stack.listening_sockets()
    exposed = [s for s in sockets if not ipaddress.ip_address(s[2]).is_loopback]
    if exposed:
        shown = ", ".join(f"{name} (pid {pid}) on {ip}:{port}" for name, pid, ip, port in exposed)
        raise StackError(f"listening beyond loopback: {shown}")
    return f"{len(sockets)} listening sockets, all on loopback"


def check_airflow(stack: LocalStack) -> str:
    """Health, then the smoke DAG triggered through the REST API and run by the scheduler."""
    check_airflow_health(stack)
    client = airflow_client(stack)
    client.wait_for_dag(SMOKE_DAG, timeout_s=120)
    run_id = client.trigger(SMOKE_DAG)
    state = client.wait_for_run(SMOKE_DAG, run_id, timeout_s=180)
    if state != "success":
        raise StackError(f"{SMOKE_DAG} run {run_id} ended {state}: see the Airflow UI")
    return f"{SMOKE_DAG} run {run_id} succeeded through the scheduler"
