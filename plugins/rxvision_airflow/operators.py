"""``RxVisionTrainOperator``: ``rxvision train`` in the training container.

A thin ``DockerOperator``: GPUs through ``device_requests``, a large ``/dev/shm`` for
DataLoader workers, endpoints and credentials from Airflow connections (credentials as
``private_environment``, never rendered or logged), logs streamed, the container removed
afterwards. The training run id comes from the DAG run, so a retry resumes from the
run's last checkpoint.

``launcher.mode`` (``configs/pipeline.yaml``): ``docker`` runs the production image;
``docker-dev`` runs the dev image with this worker's virtualenv mounted read-only (CI,
dev boxes); ``local`` runs the same command as a subprocess where no Docker engine is
reachable, and says so loudly.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import docker.errors
from airflow.exceptions import AirflowException
from airflow.providers.docker.operators.docker import DockerOperator
from docker.types import DeviceRequest, Mount

from rxvision.home import repo_root
from rxvision.pipeline.config import PipelineConfig, load_pipeline_config
from rxvision_airflow.connections import split_secrets, task_env, webhook_url

CONTAINER_HOME = "/var/lib/rxvision"


def parse_size(text: str) -> int:
    """``2g`` / ``512m`` / ``1024`` as bytes."""
    units = {"k": 1024, "m": 1024**2, "g": 1024**3}
    text = text.strip().lower().removesuffix("b")
    if text and text[-1] in units:
        return int(float(text[:-1]) * units[text[-1]])
    return int(text)


class RxVisionTrainOperator(DockerOperator):
    """Train as ``configs/pipeline.yaml`` says; return ``{"run_id", "summary_uri"}``."""

    template_fields: Sequence[str] = (
        *DockerOperator.template_fields,
        "data_uri",
        "train_run_id",
        "summary_uri",
        "snapshot_rev",
        "snapshot_hash",
        "overrides",
    )

    def __init__(
        self,
        *,
        data_uri: str,
        train_run_id: str,
        summary_uri: str,
        snapshot_rev: str | None = None,
        snapshot_hash: str | None = None,
        overrides: Sequence[str] | str = (),
        pipeline_config: PipelineConfig | None = None,
        **kwargs: Any,
    ) -> None:
        cfg = pipeline_config or load_pipeline_config()
        launcher = cfg.train_launcher
        kwargs.setdefault("image", launcher.image)
        kwargs.setdefault("docker_url", launcher.docker_url)
        kwargs.setdefault("network_mode", launcher.network_mode)
        kwargs.setdefault("shm_size", parse_size(launcher.shm_size))
        kwargs.setdefault("auto_remove", "force")
        kwargs.setdefault("mount_tmp_dir", False)
        super().__init__(**kwargs)
        self.pipeline_config = cfg
        self.data_uri = data_uri
        self.train_run_id = train_run_id
        self.summary_uri = summary_uri
        self.snapshot_rev = snapshot_rev
        self.snapshot_hash = snapshot_hash
        self.overrides = overrides

    # --- what runs ----------------------------------------------------------------------

    def train_args(self) -> list[str]:
        """The arguments of ``rxvision train``."""
        config = self.pipeline_config.nightly.train_config_path()
        args = ["--config", str(config), "--data", self.data_uri, "--run-id", self.train_run_id]
        args += ["--summary", self.summary_uri]
        if self.snapshot_rev:
            args += ["--snapshot-rev", self.snapshot_rev]
        if self.snapshot_hash:
            args += ["--snapshot-hash", self.snapshot_hash]
        overrides = self.overrides.split() if isinstance(self.overrides, str) else self.overrides
        return args + [str(o) for o in overrides if str(o)]

    def run_env(self) -> dict[str, str]:
        """Connections' variables plus where checkpoints and metrics go."""
        env = task_env(self.pipeline_config, "training")
        env.setdefault("MLFLOW_TRACKING_URI", os.environ.get("MLFLOW_TRACKING_URI", ""))
        env["RXVISION_CHECKPOINT_ROOT"] = self.pipeline_config.nightly.checkpoint_root
        # training's own alerts (monitoring thresholds) take the on-call path: records and
        # incidents beside the DAGs', the webhook (a secret: private environment), filed
        # under this DAG and task so the task's next success resolves them
        if self.pipeline_config.alerts_uri:
            env["RXVISION_ALERTS_URI"] = self.pipeline_config.alerts_uri
        env["RXVISION_ALERT_WEBHOOK_URL"] = (
            webhook_url(self.pipeline_config.connections.alerts) or ""
        )
        env["AIRFLOW_CTX_DAG_ID"] = self.dag_id
        env["AIRFLOW_CTX_TASK_ID"] = self.task_id
        for name in ("STATSD_HOST", "STATSD_PORT", "AWS_DEFAULT_REGION"):
            if os.environ.get(name):
                env.setdefault(name, os.environ[name])
        # lineage: the container has no git; the worker's checkout knows the commit
        from rxvision.train.tracking import git_commit

        commit = git_commit()
        if commit:
            env.setdefault("RXVISION_GIT_COMMIT", commit)
        return {k: v for k, v in env.items() if v}

    def execute(self, context: Any) -> dict[str, Any]:
        mode = self.pipeline_config.train_launcher.mode
        args = self.train_args()
        env = self.run_env()
        self.log.info(
            "training run %s (%s launcher): rxvision train %s",
            self.train_run_id,
            mode,
            " ".join(args),
        )
        if mode == "local":
            self._run_local(args, env)
        else:
            self._prepare_container(mode, args, env)
            self.remove_orphan(self.container_name)
            super().execute(context)
        return {"run_id": self.train_run_id, "summary_uri": self.summary_uri, "launcher": mode}

    # --- docker -------------------------------------------------------------------------

    def _prepare_container(self, mode: str, args: list[str], env: dict[str, str]) -> None:
        public, secret = split_secrets(env)
        self.environment = {**self.environment, **public, "RXVISION_HOME": CONTAINER_HOME}
        self._private_environment = {**self._private_environment, **secret}
        self.command = args
        self.device_requests = self._gpu_requests()
        # Named after the run: a retry whose worker was killed finds the orphan and
        # removes it, instead of a second container training on the same checkpoints.
        self.container_name = container_name(self.train_run_id)
        if mode == "docker-dev":
            self.entrypoint = [str(Path(sys.prefix) / "bin" / "rxvision"), "train"]
            self.mounts = [*self.mounts, *dev_mounts()]

    def remove_orphan(self, name: str) -> None:
        """Remove container ``name`` left by an earlier try (its worker was killed)."""
        try:
            found = self.cli.inspect_container(name)
        except docker.errors.NotFound:
            return
        state = (found.get("State") or {}).get("Status", "?")
        self.log.warning(
            "container %s of an earlier try is still here (%s): removing it before this "
            "try starts (training resumes from the run's last checkpoint)",
            name,
            state,
        )
        self.cli.remove_container(name, force=True)

    def _gpu_requests(self) -> list[DeviceRequest] | None:
        wanted = str(self.pipeline_config.train_launcher.gpus).strip().lower()
        if wanted in ("0", "none", "no"):
            self.log.info("no GPUs requested (train_launcher.gpus=%s)", wanted)
            return None
        if wanted == "auto":
            runtimes = (self.cli.info() or {}).get("Runtimes") or {}
            if "nvidia" not in runtimes:
                self.log.warning(
                    "the Docker engine has no NVIDIA runtime: training on the CPU "
                    "(set train_launcher.gpus to a count to insist on GPUs)"
                )
                return None
            return [DeviceRequest(count=-1, capabilities=[["gpu"]])]
        return [DeviceRequest(count=int(wanted), capabilities=[["gpu"]])]

    # --- local --------------------------------------------------------------------------

    def _run_local(self, args: list[str], env: dict[str, str]) -> None:
        self.log.warning(
            "TRAINING AS A LOCAL SUBPROCESS (train_launcher.mode=local): no container, no "
            "GPU isolation. Use mode=docker where a Docker engine is reachable."
        )
        argv = [str(Path(sys.prefix) / "bin" / "rxvision"), "train", *args]
        proc = subprocess.Popen(
            argv,
            env={**os.environ, **env},
            cwd=repo_root(),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        assert proc.stdout is not None
        for line in proc.stdout:
            self.log.info("%s", line.rstrip())
        if proc.wait() != 0:
            raise AirflowException(f"rxvision train exited {proc.returncode}")


def container_name(train_run_id: str) -> str:
    """The training container's name: one per training run, so at most one runs."""
    return f"rxvision-train-{train_run_id}"


def dev_mounts() -> list[Mount]:
    """Read-only binds of this worker's interpreter, virtualenv and checkout, at the same
    paths (the venv's scripts and the editable install name them absolutely)."""
    paths = {Path(sys.base_prefix).resolve(), Path(sys.prefix).resolve(), repo_root().resolve()}
    # a venv inside the checkout is covered by the checkout's mount
    kept = [p for p in sorted(paths) if not any(p != q and q in p.parents for q in paths)]
    return [Mount(target=str(p), source=str(p), type="bind", read_only=True) for p in kept]
