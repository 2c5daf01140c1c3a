"""Full training checkpoints of one run, in a local folder or in S3, written atomically.

A run's checkpoints live under ``<root>/<run_id>/``: ``step-00000120.ckpt`` (Lightning's
full checkpoint: weights, optimizer, scheduler, loop state, callbacks, RNG) and
``best.ckpt``. A local file is written under a temporary name and renamed; an S3 object
is uploaded only once the local file is complete, so a reader never sees half a
checkpoint. ``latest_loadable`` finds the newest checkpoint that ``torch.load`` can read,
falling back to older ones when the newest is corrupt.
"""

from __future__ import annotations

import logging
import os
import re
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from rxvision.errors import ConfigError, NotFound, RxVisionError
from rxvision.storage.s3 import S3Store, parse_s3_uri

log = logging.getLogger(__name__)

STEP_PATTERN = re.compile(r"^step-(\d{8})\.ckpt$")
BEST = "best.ckpt"
DATA_RECORD = "data.json"  # which data the run's checkpoints were trained on
RUN_ID_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
# what a Lightning checkpoint must hold to resume a fit, not just to load weights
REQUIRED_KEYS = ("state_dict", "optimizer_states", "loops", "global_step")


def step_name(global_step: int) -> str:
    """The file name of the checkpoint taken after ``global_step`` optimizer steps."""
    return f"step-{global_step:08d}.ckpt"


def check_run_id(run_id: str) -> str:
    """A run id usable as a folder and an S3 key part; ``ConfigError`` otherwise."""
    if not RUN_ID_PATTERN.match(run_id):
        raise ConfigError(
            f"run id {run_id!r}: use 1-128 letters, digits, '.', '_' or '-', "
            "starting with a letter or digit"
        )
    return run_id


class CheckpointDataMismatch(RxVisionError):
    """A run id's checkpoints were trained on other data than this run's: no resume."""

    exit_code = 13  # 10-12: ChampionChanged, EndpointUnreachable, AccessDenied


@dataclass(frozen=True)
class CheckpointRef:
    """One stored checkpoint: its name, the step it was taken at and where it lives."""

    name: str
    step: int
    uri: str


def verify_checkpoint(path: Path) -> dict[str, Any] | None:
    """The checkpoint at ``path`` if it loads and can resume a fit, else None (logged)."""
    try:
        data = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # a truncated zip, a bad pickle: all mean "unusable"
        log.warning("checkpoint %s does not load (%s): skipping it", path, exc)
        return None
    if not isinstance(data, dict) or any(key not in data for key in REQUIRED_KEYS):
        log.warning("checkpoint %s lacks training state: skipping it", path)
        return None
    return data


class CheckpointStore:
    """The checkpoints of one run under ``root`` (a folder or ``s3://bucket/prefix``).

    ``staging_root`` is a local folder of this run only; files on their way to or from S3
    go through a subfolder per process (DDP ranks download at the same time).
    """

    def __init__(
        self, root: str, run_id: str, staging_root: Path, s3: S3Store | None = None
    ) -> None:
        self.run_id = check_run_id(run_id)
        self.root = root.rstrip("/")
        self.is_s3 = self.root.startswith("s3://")
        self.uri = f"{self.root}/{run_id}"
        self.staging_root = staging_root
        self.staging = staging_root / f"proc-{os.getpid()}"
        self._s3 = s3

    @property
    def s3(self) -> S3Store:
        """The S3 client (built on first use)."""
        if self._s3 is None:
            self._s3 = S3Store()
        return self._s3

    @property
    def local_dir(self) -> Path:
        """The run's folder, for a local root."""
        return Path(self.uri.removeprefix("file://")).expanduser()

    def temp_path(self, name: str) -> Path:
        """Where to write ``name`` before ``publish``: next to its final place when local
        (so the rename is atomic), in the staging folder for S3."""
        folder = self.staging if self.is_s3 else self.local_dir
        folder.mkdir(parents=True, exist_ok=True)
        return folder / f".{name}.{os.getpid()}.tmp"

    def publish(self, temp: Path, name: str) -> str:
        """Make the complete file ``temp`` the checkpoint ``name``; return its URI."""
        uri = f"{self.uri}/{name}"
        if self.is_s3:
            try:
                self.s3.upload_file(temp, uri)
            finally:
                temp.unlink(missing_ok=True)
        else:
            os.replace(temp, self.local_dir / name)
        log.info("checkpoint %s", uri)
        return uri

    def list_steps(self) -> list[CheckpointRef]:
        """Step checkpoints of the run, oldest first."""
        if self.is_s3:
            names = [key.rsplit("/", 1)[-1] for key in self.s3.list_keys(f"{self.uri}/")]
        elif self.local_dir.is_dir():
            names = [p.name for p in self.local_dir.iterdir()]
        else:
            names = []
        refs = []
        for name in names:
            match = STEP_PATTERN.match(name)
            if match:
                refs.append(CheckpointRef(name, int(match.group(1)), f"{self.uri}/{name}"))
        return sorted(refs, key=lambda ref: ref.step)

    def exists(self, name: str) -> bool:
        """Whether the checkpoint ``name`` is stored."""
        if self.is_s3:
            return self.s3.exists(f"{self.uri}/{name}")
        return (self.local_dir / name).is_file()

    def fetch(self, name: str) -> Path:
        """A local path holding checkpoint ``name`` (downloaded into staging for S3)."""
        if not self.is_s3:
            path = self.local_dir / name
            if not path.is_file():
                raise NotFound(f"no checkpoint {path}")
            return path
        target = self.staging / name
        self.s3.download_file(f"{self.uri}/{name}", target)
        return target

    def latest_loadable(self) -> tuple[CheckpointRef, Path] | None:
        """The newest step checkpoint that loads and holds training state; older ones are
        tried in turn when the newest is corrupt. None when there is none."""
        for ref in reversed(self.list_steps()):
            try:
                path = self.fetch(ref.name)
            except NotFound:
                continue  # pruned between listing and fetching
            if verify_checkpoint(path) is not None:
                return ref, path
            log.warning("falling back from corrupt checkpoint %s", ref.uri)
        return None

    def prune(self, keep_last: int) -> list[str]:
        """Delete all but the ``keep_last`` newest step checkpoints (``best`` is kept)."""
        refs = self.list_steps()
        doomed = refs[:-keep_last] if keep_last > 0 else refs
        for ref in doomed:
            if self.is_s3:
                bucket, key = parse_s3_uri(ref.uri)
                self.s3.client.delete_object(Bucket=bucket, Key=key)
            else:
                (self.local_dir / ref.name).unlink(missing_ok=True)
        return [ref.uri for ref in doomed]

    def recorded_data(self) -> str | None:
        """The data identity the run's checkpoints were trained on (None: not recorded)."""
        if self.is_s3:
            uri = f"{self.uri}/{DATA_RECORD}"
            return self.s3.get_bytes(uri).decode() if self.s3.exists(uri) else None
        path = self.local_dir / DATA_RECORD
        return path.read_text() if path.is_file() else None

    def claim_for_data(self, identity: str) -> None:
        """Record that this run trains on ``identity``; ``CheckpointDataMismatch`` when the
        run id's checkpoints were trained on other data (a resume would mix the two)."""
        recorded = self.recorded_data()
        if recorded is None:
            if self.list_steps():
                log.warning("run %s has checkpoints but no data record: resuming", self.run_id)
            self._write_data_record(identity)
        elif recorded != identity:
            raise CheckpointDataMismatch(
                f"run {self.run_id}: its checkpoints at {self.uri} were trained on "
                f"{recorded}, this run's data is {identity}; refusing to resume them. "
                "Use another run id, or delete those checkpoints to start over"
            )

    def _write_data_record(self, identity: str) -> None:
        if self.is_s3:
            self.s3.put_bytes(f"{self.uri}/{DATA_RECORD}", identity.encode())
            return
        self.local_dir.mkdir(parents=True, exist_ok=True)
        temp = self.local_dir / f".{DATA_RECORD}.{os.getpid()}.tmp"
        temp.write_text(identity)
        os.replace(temp, self.local_dir / DATA_RECORD)

    def discard_partial(self) -> int:
        """Delete what killed writers left: temporary files next to local checkpoints and
        other processes' staging folders; return how many temporary files were removed.

        Call it before training starts, from the one process that writes. (An upload cut
        short leaves no S3 object, only multipart parts: a bucket lifecycle rule
        ``AbortIncompleteMultipartUpload`` removes those.)
        """
        removed = 0
        if not self.is_s3 and self.local_dir.is_dir():
            for path in self.local_dir.glob(".*.tmp"):
                path.unlink(missing_ok=True)
                removed += 1
        if self.staging_root.is_dir():
            for path in self.staging_root.iterdir():
                if path != self.staging:
                    shutil.rmtree(path, ignore_errors=True)
        return removed

    def clear_staging(self) -> None:
        """Remove local copies of S3 checkpoints."""
        if self.is_s3:
            shutil.rmtree(self.staging, ignore_errors=True)
