"""Where RxVision keeps local state: RXVISION_HOME (default ``var/`` in the repository).

Everything a local run writes (server data, logs, credentials, caches) lives under one
home, so two homes never share a file.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent


def repo_root() -> Path:
    """The checkout this package was imported from (holds dags/, plugins/, configs/)."""
    return REPO_ROOT


@dataclass(frozen=True)
class Home:
    """Paths inside one RXVISION_HOME."""

    root: Path

    @classmethod
    def from_env(cls) -> Home:
        """The home named by ``RXVISION_HOME``, else ``<repo>/var``."""
        raw = os.environ.get("RXVISION_HOME")
        root = Path(raw).expanduser() if raw else REPO_ROOT / "var"
        return cls(root.resolve())

    @property
    def stack_dir(self) -> Path:
        """State of the local stack: ports, credentials, pid files."""
        return self.root / "stack"

    @property
    def run_dir(self) -> Path:
        """PID files of running servers."""
        return self.root / "run"

    @property
    def logs_dir(self) -> Path:
        """Server logs."""
        return self.root / "logs"

    @property
    def data_dir(self) -> Path:
        """Server data (SeaweedFS volumes, MLflow and Airflow databases)."""
        return self.root / "data"

    @property
    def cache_dir(self) -> Path:
        """Local caches (DVC, feature store shards, pulled snapshots)."""
        return self.root / "cache"

    @property
    def reports_dir(self) -> Path:
        """Reports the CLI writes beside its runs (e.g. ``rxvision train``'s validation)."""
        return self.root / "reports"

    @property
    def tmp_dir(self) -> Path:
        """Scratch space for servers that leave sockets behind."""
        return self.root / "tmp"

    def local_mlflow_uri(self) -> str:
        """The MLflow store used when no tracking server is configured (SQLite in the home)."""
        folder = self.root / "mlflow"
        folder.mkdir(parents=True, exist_ok=True)
        return f"sqlite:///{folder / 'mlflow.db'}"

    def ensure(self) -> Home:
        """Create the home's folders (private to the user) and return self."""
        for path in (
            self.root,
            self.stack_dir,
            self.run_dir,
            self.logs_dir,
            self.data_dir,
            self.cache_dir,
            self.tmp_dir,
        ):
            path.mkdir(parents=True, exist_ok=True)
        self.root.chmod(0o700)
        return self
