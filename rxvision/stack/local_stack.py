"""The local stack of one RXVISION_HOME: ``up``, ``down``, ``status``, ``env``, ``logs``.

``up`` is idempotent (running healthy servers are left alone), health-checks each server
before it returns, and fails with the server's log tail. ``down`` stops every process
``up`` started, including children that escaped their process group.
"""

from __future__ import annotations

import hashlib
import logging
import shlex
import signal
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rxvision.config.load import load_config
from rxvision.config.schema import StackConfig
from rxvision.errors import StackError
from rxvision.home import Home, repo_root
from rxvision.stack import docker_engine, scale, services
from rxvision.stack.airflow_migrate import (
    MIGRATE_LOG,
    finish_airflow_migrate,
    start_airflow_migrate,
)
from rxvision.stack.credentials import StackCredentials, load_or_create_credentials
from rxvision.stack.ports import PortRegistry, load_ports, pick_ports, save_ports
from rxvision.stack.process import ManagedProcess, kill_stragglers, require_started
from rxvision.stack.stack_s3 import create_buckets, s3_ready
from rxvision.stack.stack_status import listening_sockets, stack_status
from rxvision.stack.statsd_receiver import load_metrics

log = logging.getLogger(__name__)

SERVER_NAMES = (
    "seaweedfs",
    "statsd",
    "mlflow",
    *tuple(f"airflow-{c}" for c in services.AIRFLOW_COMPONENTS),
)
PROFILES = ("local", "scale")
# Which ports each server holds, so a running server keeps its ports.
SERVER_PORTS: dict[str, tuple[str, ...]] = {
    "postgres": ("postgres",),
    "redis": ("redis",),
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
    docker: str = ""  # what happened to the Docker engine the train task needs


def server_names(profile: str, config: StackConfig) -> tuple[str, ...]:
    """The servers of a profile, in start order."""
    if profile == "local":
        return SERVER_NAMES
    workers = tuple(scale.worker_server_name(w) for w in config.scale.workers)
    return ("postgres", "redis", *SERVER_NAMES, *workers)


class LocalStack:
    """The servers of one home.

    ``profile`` ``local`` (the default) runs Airflow's LocalExecutor on SQLite; ``scale``
    adds Postgres, Redis and Celery workers (``rxvision.stack.scale``). A home remembers the
    profile it was last brought up with.
    """

    def __init__(
        self,
        home: Home | None = None,
        config: StackConfig | None = None,
        port_registry: PortRegistry | None = None,
        profile: str | None = None,
    ) -> None:
        self.home = (home or Home.from_env()).ensure()
        self.config = config or load_config(default_stack_config_path(), StackConfig)
        self.stack_id = hashlib.sha256(str(self.home.root).encode()).hexdigest()[:16]
        self._creds: StackCredentials | None = None
        self.credentials_created = False
        self.port_registry = port_registry or PortRegistry()
        if profile is not None and profile not in PROFILES:
            raise StackError(f"unknown stack profile {profile!r}; known: {', '.join(PROFILES)}")
        self._profile = profile

    @property
    def profile_file(self) -> Path:
        return self.home.stack_dir / "profile"

    @property
    def profile(self) -> str:
        """The profile asked for, else the one the home was last brought up with."""
        if self._profile is not None:
            return self._profile
        if self.profile_file.is_file():
            recorded = self.profile_file.read_text().strip()
            if recorded in PROFILES:
                return recorded
        return "local"

    def servers(self) -> tuple[str, ...]:
        """This stack's servers, in start order."""
        return server_names(self.profile, self.config)

    def all_known_servers(self) -> tuple[str, ...]:
        """Every server of every profile: `down` stops whatever runs, whichever started it."""
        return server_names("scale", self.config)

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
        return services.StackLayout(self.home, self.config, chosen, self.creds, self.profile)

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
        if name == "postgres":
            return scale.postgres_spec(layout)
        if name == "redis":
            return scale.redis_spec(layout)
        for worker, settings in self.config.scale.workers.items():
            if name == scale.worker_server_name(worker):
                return scale.celery_worker_spec(layout, worker, settings)
        if name.startswith("airflow-"):
            return services.airflow_spec(layout, name.removeprefix("airflow-"))
        raise StackError(f"unknown server {name!r}; known: {', '.join(self.servers())}")

    def pid_of(self, name: str) -> int | None:
        """The PID of a running server, else None. (A PID check needs no spec, and so no
        weed binary or config, to be built.)"""
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
            running = {n for n in self.all_known_servers() if self.pid_of(n) is not None}
            held = {port for n in running for port in SERVER_PORTS.get(n, ())}
            chosen, moved = pick_ports(wanted, recorded, held, self.port_registry, self.home.root)
            save_ports(self.ports_file, chosen)
            self.port_registry.reserve(self.home.root, list(chosen.values()))
        return chosen, moved

    # --- up / down ------------------------------------------------------------------------

    def up(self, timeout_s: float = 180) -> UpReport:
        """Start every server that is not running; return once all are healthy."""
        began = time.monotonic()
        report = UpReport()
        self._check_profile_switch()
        _ = self.creds
        report.credentials_created = self.credentials_created
        ports, report.moved_ports = self.choose_ports()
        self.profile_file.write_text(self.profile + "\n")
        layout = self.layout(ports)
        for name, (old, new) in report.moved_ports.items():
            log.warning("port %d for %s is taken: using %d", old, name, new)

        self._ensure_started("statsd", layout, report)
        self._ensure_started("seaweedfs", layout, report)
        if self.profile == "scale":
            self._up_postgres_and_redis(layout, report, timeout_s)
        airflow_running = all(self.pid_of(f"airflow-{c}") for c in services.AIRFLOW_COMPONENTS)
        migrate = None if airflow_running else start_airflow_migrate(layout)
        self._wait("seaweedfs", layout, lambda: s3_ready(layout), timeout_s)
        create_buckets(layout)
        self._ensure_started("mlflow", layout, report)
        if migrate is not None:
            finish_airflow_migrate(migrate, layout, timeout_s)
        services.write_airflow_passwords(layout)
        for component in services.AIRFLOW_COMPONENTS:
            self._ensure_started(f"airflow-{component}", layout, report)
        self._wait("statsd", layout, lambda: services.statsd_ready(layout), 30)
        self._wait("mlflow", layout, lambda: services.mlflow_healthy(layout), timeout_s)
        self._wait(
            "airflow-api-server", layout, lambda: services.airflow_healthy(layout), timeout_s
        )
        if self.profile == "scale":
            self._up_celery_workers(layout, report, timeout_s)
        report.docker = docker_engine.ensure_engine_for_launcher(self.docker_marker)
        report.seconds = time.monotonic() - began
        return report

    @property
    def docker_marker(self) -> Path:
        """Present while the Docker engine runs because this stack's ``up`` started it."""
        return self.home.stack_dir / "dockerd-started"

    def docker_state(self) -> docker_engine.EngineState:
        """The Docker engine as the train launcher will find it."""
        return docker_engine.engine_state(*docker_engine.launcher_mode())

    def _check_profile_switch(self) -> None:
        running = [n for n in self.all_known_servers() if self.pid_of(n) is not None]
        recorded = LocalStack(self.home, self.config, self.port_registry).profile
        if running and recorded != self.profile:
            raise StackError(
                f"the stack of {self.home.root} runs with profile {recorded!r}: "
                f"run `rxvision stack down` before `up --profile {self.profile}`"
            )

    def _up_postgres_and_redis(
        self, layout: services.StackLayout, report: UpReport, timeout_s: float
    ) -> None:
        if self.pid_of("postgres") is None:
            scale.init_postgres_cluster(layout)
        self._ensure_started("postgres", layout, report)
        self._ensure_started("redis", layout, report)
        self._wait("postgres", layout, lambda: scale.postgres_ready(layout), timeout_s)
        created = scale.create_databases(layout)
        if created:
            log.info("created Postgres databases: %s", ", ".join(created))
        self._wait("redis", layout, lambda: scale.redis_ready(layout), 60)

    def _up_celery_workers(
        self, layout: services.StackLayout, report: UpReport, timeout_s: float
    ) -> None:
        workers = self.config.scale.workers
        for worker in workers:
            self._ensure_started(scale.worker_server_name(worker), layout, report)
        for worker in workers:
            node = scale.celery_node_name(worker)
            self._wait(
                scale.worker_server_name(worker),
                layout,
                lambda node=node: node in scale.celery_workers_answering(layout),
                timeout_s,
            )

    def _ensure_started(self, name: str, layout: services.StackLayout, report: UpReport) -> None:
        if self.pid_of(name) is not None:
            report.already_running.append(name)
            return
        self.process(name, layout).start()
        report.started.append(name)

    def _wait(self, name: str, layout: services.StackLayout, check: Any, timeout_s: float) -> None:
        require_started(self.process(name, layout), check, timeout_s)

    def down(self) -> list[str]:
        """Stop every server of this home (reverse start order); return those stopped."""
        stopped = []
        for name in reversed(self.all_known_servers()):
            pid = self.pid_of(name)
            if pid is not None:
                stub = self.process_stub(name)
                if stub.stop():
                    stopped.append(name)
        if docker_engine.stop_engine_if_started(self.docker_marker):
            stopped.append("dockerd")
        left = kill_stragglers(self.stack_id, self.home.run_dir / "sessions.json")
        if left:
            log.info("stopped %d leftover process(es) of this stack", len(left))
        self._clean_sockets()
        return stopped

    def process_stub(self, name: str) -> ManagedProcess:
        """A handle to stop a server without rebuilding its command line."""
        grace = {"seaweedfs": 1.0, "statsd": 3.0, "redis": 5.0, "postgres": 20.0}.get(name, 15.0)
        if name.startswith("airflow-worker-"):
            grace = 30.0
        sig = signal.SIGINT if name == "postgres" else signal.SIGTERM
        spec = services.ProcessSpec(
            name, [], {}, self.home.root, stop_grace_s=grace, stop_signal=sig
        )
        return ManagedProcess(spec, self.home.run_dir, self.home.logs_dir, self.stack_id)

    def _clean_sockets(self) -> None:
        # SeaweedFS leaves gRPC unix sockets in its TMPDIR (DESIGN.md).
        for sock in self.home.tmp_dir.glob("*.sock"):
            sock.unlink(missing_ok=True)

    # --- status / env / logs / metrics ----------------------------------------------------

    def status(self) -> dict[str, Any]:
        """Each server's PID and health, and the URLs."""
        return stack_status(self)

    def listening_sockets(self) -> list[tuple[str, int, str, int]]:
        """(server, pid, address, port) of every TCP socket listening in a process of this
        stack (each server and its children)."""
        return listening_sockets(self)

    def urls(self, layout: services.StackLayout | None = None) -> dict[str, str]:
        """Where a person looks: Airflow UI, MLflow UI, the S3 endpoint, statsd."""
        layout = layout or self.layout()
        urls = {
            "airflow": layout.airflow_url,
            "mlflow": layout.mlflow_uri,
            "s3": layout.s3_endpoint,
            "statsd": f"udp://{services.HOST}:{layout.ports['statsd']}",
        }
        if self.profile == "scale":  # no passwords: those stay in the home's credentials
            urls["postgres"] = f"postgresql://{services.HOST}:{layout.ports['postgres']}"
            urls["redis"] = f"redis://{services.HOST}:{layout.ports['redis']}"
        return urls

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
        known = self.all_known_servers()
        if name not in known and name != MIGRATE_LOG.removesuffix(".log"):
            raise StackError(f"unknown server {name!r}; known: {', '.join(known)}")
        return self.home.logs_dir / f"{name}.log"

    def metrics(self) -> dict[str, Any]:
        """What the statsd receiver has kept."""
        return load_metrics(self.layout().statsd_state)
