"""The local stack of one RXVISION_HOME: ``up``, ``down``, ``status``, ``env``, ``logs``.

``up`` is idempotent (running healthy servers are left alone), health-checks each server
before it returns, and fails with the server's log tail. ``down`` stops every process
``up`` started, including children that escaped their process group.
"""

from __future__ import annotations

import functools
import hashlib
import logging
import shlex
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rxvision.config.load import load_config
from rxvision.config.schema import StackConfig
from rxvision.errors import StackError
from rxvision.home import Home, repo_root
from rxvision.stack import services
from rxvision.stack.credentials import StackCredentials, load_or_create_credentials
from rxvision.stack.ports import (
    PortRegistry,
    is_port_free,
    load_ports,
    next_free_port,
    save_ports,
)
from rxvision.stack.process import ManagedProcess, kill_stragglers, require_started, wait_until
from rxvision.stack.statsd_receiver import load_metrics
from rxvision.storage.s3 import S3Config, S3Store

log = logging.getLogger(__name__)

# Each SeaweedFS port is followed by its gRPC port (port + 1).
PAIRED_PORTS = {"s3", "weed_master", "weed_volume", "weed_filer"}
SERVER_NAMES = (
    "seaweedfs",
    "statsd",
    "mlflow",
    *tuple(f"airflow-{c}" for c in services.AIRFLOW_COMPONENTS),
)
# Which ports each server holds, so a running server keeps its ports.
SERVER_PORTS = {
    "seaweedfs": ("s3", "weed_master", "weed_volume", "weed_filer"),
    "statsd": ("statsd",),
    "mlflow": ("mlflow",),
    "airflow-api-server": ("airflow_api",),
    "airflow-scheduler": ("airflow_worker_logs",),
    "airflow-triggerer": ("airflow_trigger_logs",),
    "airflow-dag-processor": (),
}


def default_stack_config_path() -> Path:
    """``configs/stack.yaml`` in the repository."""
    return repo_root() / "configs" / "stack.yaml"


@dataclass
class UpReport:
    """What ``up`` did: which servers it started, and whether credentials are new."""

    started: list[str] = field(default_factory=list)
    already_running: list[str] = field(default_factory=list)
    moved_ports: dict[str, tuple[int, int]] = field(default_factory=dict)
    credentials_created: bool = False
    seconds: float = 0.0


class LocalStack:
    """The servers of one home."""

    def __init__(
        self,
        home: Home | None = None,
        config: StackConfig | None = None,
        port_registry: PortRegistry | None = None,
    ) -> None:
        self.home = (home or Home.from_env()).ensure()
        self.config = config or load_config(default_stack_config_path(), StackConfig)
        self.stack_id = hashlib.sha256(str(self.home.root).encode()).hexdigest()[:16]
        self._creds: StackCredentials | None = None
        self.credentials_created = False
        self.port_registry = port_registry or PortRegistry()

    # --- layout ---------------------------------------------------------------------------

    @property
    def ports_file(self) -> Path:
        return self.home.stack_dir / "ports.json"

    @property
    def creds(self) -> StackCredentials:
        if self._creds is None:
            self._creds, self.credentials_created = load_or_create_credentials(
                self.home.stack_dir / "credentials.json"
            )
        return self._creds

    def layout(self, ports: dict[str, int] | None = None) -> services.StackLayout:
        """The current layout (recorded ports, else the config's first choices)."""
        chosen = ports or {**self.config.ports.model_dump(), **load_ports(self.ports_file)}
        return services.StackLayout(self.home, self.config, chosen, self.creds)

    def process(self, name: str, layout: services.StackLayout | None = None) -> ManagedProcess:
        """The managed process of one server."""
        layout = layout or self.layout()
        spec = self._spec(name, layout)
        return ManagedProcess(spec, self.home.run_dir, self.home.logs_dir, self.stack_id)

    def _spec(self, name: str, layout: services.StackLayout) -> Any:
        if name == "seaweedfs":
            return services.seaweed_spec(layout)
        if name == "statsd":
            return services.statsd_spec(layout)
        if name == "mlflow":
            return services.mlflow_spec(layout)
        if name.startswith("airflow-"):
            return services.airflow_spec(layout, name.removeprefix("airflow-"))
        raise StackError(f"unknown server {name!r}; known: {', '.join(SERVER_NAMES)}")

    def _pid_of(self, name: str) -> int | None:
        # A PID check needs no spec (and so no weed binary or config) to be built.
        stub = ManagedProcess(
            services.ProcessSpec(name, [], {}, self.home.root),
            self.home.run_dir,
            self.home.logs_dir,
            self.stack_id,
        )
        return stub.pid()

    # --- ports ----------------------------------------------------------------------------

    def choose_ports(self) -> tuple[dict[str, int], dict[str, tuple[int, int]]]:
        """Keep ports of running servers; move any other taken port to the next free one.

        A port this home used before is waited for a few seconds first: a server that was
        just killed frees its ports a moment later, and clients keep the old URLs. Ports
        owned by another home (the machine-wide ``PortRegistry``) count as taken.
        """
        with self.port_registry.locked():
            recorded = load_ports(self.ports_file)
            wanted = {**self.config.ports.model_dump(), **recorded}
            running = {n for n in SERVER_NAMES if self._pid_of(n) is not None}
            held = {port for n in running for port in SERVER_PORTS[n]}
            chosen: dict[str, int] = {}
            moved: dict[str, tuple[int, int]] = {}
            taken: set[int] = set()
            for name, port in sorted(wanted.items()):
                if name in held:
                    chosen[name] = port
                else:
                    if name in recorded:
                        wait_until(functools.partial(_ports_free, name, port), 8, 0.25)
                    chosen[name] = self._free_port_for(name, port, taken)
                    if chosen[name] != port:
                        moved[name] = (port, chosen[name])
                taken.update(_ports_of(name, chosen[name]))
            save_ports(self.ports_file, chosen)
            self.port_registry.reserve(self.home.root, list(chosen.values()))
        return chosen, moved

    def _free_port_for(self, name: str, start: int, taken: set[int]) -> int:
        port = start
        while True:
            port = next_free_port(port, taken)
            candidates = _ports_of(name, port)
            if all(
                p not in taken and self._owned_by_me_or_nobody(p) for p in candidates
            ) and _ports_free(name, port):
                return port
            port += 1

    def _owned_by_me_or_nobody(self, port: int) -> bool:
        owner = self.port_registry.owner(port)
        return owner is None or owner == self.home.root

    # --- up / down ------------------------------------------------------------------------

    def up(self, timeout_s: float = 180) -> UpReport:
        """Start every server that is not running; return once all are healthy."""
        began = time.monotonic()
        report = UpReport()
        _ = self.creds
        report.credentials_created = self.credentials_created
        ports, report.moved_ports = self.choose_ports()
        layout = self.layout(ports)
        for name, (old, new) in report.moved_ports.items():
            log.warning("port %d for %s is taken: using %d", old, name, new)

        self._ensure_started("statsd", layout, report)
        self._ensure_started("seaweedfs", layout, report)
        migrate = self._start_airflow_migrate(layout)
        self._wait("seaweedfs", layout, lambda: self._s3_ready(layout), timeout_s)
        self._create_buckets(layout)
        self._ensure_started("mlflow", layout, report)
        if migrate is not None:
            self._finish_airflow_migrate(migrate, layout, timeout_s)
        services.write_airflow_passwords(layout)
        for component in services.AIRFLOW_COMPONENTS:
            self._ensure_started(f"airflow-{component}", layout, report)
        self._wait("statsd", layout, lambda: services.statsd_ready(layout), 30)
        self._wait("mlflow", layout, lambda: services.mlflow_healthy(layout), timeout_s)
        self._wait(
            "airflow-api-server", layout, lambda: services.airflow_healthy(layout), timeout_s
        )
        report.seconds = time.monotonic() - began
        return report

    def _ensure_started(self, name: str, layout: services.StackLayout, report: UpReport) -> None:
        if self._pid_of(name) is not None:
            report.already_running.append(name)
            return
        self.process(name, layout).start()
        report.started.append(name)

    def _wait(self, name: str, layout: services.StackLayout, check: Any, timeout_s: float) -> None:
        require_started(self.process(name, layout), check, timeout_s)

    def _s3_ready(self, layout: services.StackLayout) -> bool:
        self._s3(layout).client.list_buckets()
        return True

    def _s3(self, layout: services.StackLayout) -> S3Store:
        return S3Store(
            S3Config(
                endpoint_url=layout.s3_endpoint,
                access_key=layout.creds.s3_access_key,
                secret_key=layout.creds.s3_secret_key,
                region=layout.config.s3.region,
            )
        )

    def _create_buckets(self, layout: services.StackLayout) -> None:
        store = self._s3(layout)
        for bucket in layout.config.s3.buckets:
            # The filer may need a moment after the S3 port opens before creating buckets.
            create = functools.partial(_bucket_created, store, bucket)
            if not wait_until(create, 30, 0.5):
                raise StackError(f"could not create bucket {bucket!r} on {layout.s3_endpoint}")

    def _start_airflow_migrate(
        self, layout: services.StackLayout
    ) -> subprocess.Popen[bytes] | None:
        if all(self._pid_of(f"airflow-{c}") for c in services.AIRFLOW_COMPONENTS):
            return None
        log_file = self.home.logs_dir / "airflow-db-migrate.log"
        out = log_file.open("ab")
        return subprocess.Popen(
            [str(services.bin_dir() / "airflow"), "db", "migrate"],
            env=services.airflow_env(layout),
            cwd=layout.airflow_home,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    def _finish_airflow_migrate(
        self, proc: subprocess.Popen[bytes], layout: services.StackLayout, timeout_s: float
    ) -> None:
        try:
            code = proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            proc.kill()
            code = -1
        if code != 0:
            tail = (self.home.logs_dir / "airflow-db-migrate.log").read_text().splitlines()[-30:]
            raise StackError("airflow db migrate failed:\n" + "\n".join(tail))

    def down(self) -> list[str]:
        """Stop every server of this home (reverse start order); return those stopped."""
        stopped = []
        for name in reversed(SERVER_NAMES):
            pid = self._pid_of(name)
            if pid is not None:
                stub = self.process_stub(name)
                if stub.stop():
                    stopped.append(name)
        left = kill_stragglers(self.stack_id, self.home.run_dir / "sessions.json")
        if left:
            log.info("stopped %d leftover process(es) of this stack", len(left))
        self._clean_sockets()
        return stopped

    def process_stub(self, name: str) -> ManagedProcess:
        """A handle to stop a server without rebuilding its command line."""
        grace = {"seaweedfs": 1.0, "statsd": 3.0}.get(name, 15.0)
        spec = services.ProcessSpec(name, [], {}, self.home.root, stop_grace_s=grace)
        return ManagedProcess(spec, self.home.run_dir, self.home.logs_dir, self.stack_id)

    def _clean_sockets(self) -> None:
        # SeaweedFS leaves gRPC unix sockets in its TMPDIR (DESIGN.md).
        for sock in self.home.tmp_dir.glob("*.sock"):
            sock.unlink(missing_ok=True)

    # --- status / env / logs / metrics ----------------------------------------------------

    def status(self) -> dict[str, Any]:
        """Each server's PID and health, and the URLs."""
        layout = self.layout()
        health = {
            "seaweedfs": _safe(lambda: self._s3_ready(layout)),
            "statsd": _safe(lambda: services.statsd_ready(layout)),
            "mlflow": _safe(lambda: services.mlflow_healthy(layout)),
        }
        airflow = services.airflow_health(layout)
        servers = {}
        for name in SERVER_NAMES:
            pid = self._pid_of(name)
            if name.startswith("airflow-"):
                part = {
                    "airflow-api-server": "metadatabase",
                    "airflow-scheduler": "scheduler",
                    "airflow-triggerer": "triggerer",
                    "airflow-dag-processor": "dag_processor",
                }[name]
                healthy = airflow.get(part) == "healthy"
            else:
                healthy = bool(health[name])
            servers[name] = {
                "pid": pid,
                "running": pid is not None,
                "healthy": pid is not None and healthy,
            }
        return {"home": str(self.home.root), "servers": servers, "urls": self.urls(layout)}

    def urls(self, layout: services.StackLayout | None = None) -> dict[str, str]:
        """Where a person looks: Airflow UI, MLflow UI, the S3 endpoint, statsd."""
        layout = layout or self.layout()
        return {
            "airflow": layout.airflow_url,
            "mlflow": layout.mlflow_uri,
            "s3": layout.s3_endpoint,
            "statsd": f"udp://{services.HOST}:{layout.ports['statsd']}",
        }

    def client_env(self) -> dict[str, str]:
        """The standard variables for clients of this stack."""
        return services.client_env(self.layout())

    def env_exports(self) -> str:
        """``export VAR=value`` lines for a shell (``eval "$(rxvision stack env)"``)."""
        return "\n".join(f"export {k}={shlex.quote(v)}" for k, v in self.client_env().items())

    def airflow_env(self) -> dict[str, str]:
        """The environment for running Airflow commands against this stack."""
        return services.airflow_env(self.layout())

    def log_path(self, name: str) -> Path:
        """The log file of one server."""
        if name not in SERVER_NAMES and name != "airflow-db-migrate":
            raise StackError(f"unknown server {name!r}; known: {', '.join(SERVER_NAMES)}")
        return self.home.logs_dir / f"{name}.log"

    def metrics(self) -> dict[str, Any]:
        """What the statsd receiver has kept."""
        return load_metrics(self.layout().statsd_state)


def _bucket_created(store: S3Store, bucket: str) -> bool:
    store.ensure_bucket(bucket)
    return True


def _ports_free(name: str, port: int) -> bool:
    # Free for TCP and UDP both: a port is never shared, whatever the protocols.
    return all(is_port_free(p) and is_port_free(p, udp=True) for p in _ports_of(name, port))


def _ports_of(name: str, port: int) -> tuple[int, ...]:
    return (port, port + 1) if name in PAIRED_PORTS else (port,)


def _safe(check: Any) -> bool:
    try:
        return bool(check())
    except Exception:
        return False
