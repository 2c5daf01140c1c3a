"""Publishing a verified folder (a pull or a checkout): built in a staging directory
beside its destination, named for the process that owns it, and moved in one rename, so
a reader never sees half of it."""

from __future__ import annotations

import json
import logging
import os
import shutil
from pathlib import Path

from rxvision.data.pulled_snapshots import mark_used
from rxvision.data.snapshot_shards import MARKER_FILE
from rxvision.errors import SnapshotError
from rxvision.stack.process import is_alive

log = logging.getLogger(__name__)


def staging_prefix(out: Path) -> str:
    """The name prefix of ``out``'s staging directories; the pid says whose each is."""
    return f".{out.name}.partial-{os.getpid()}-"


def remove_abandoned_staging(out: Path) -> None:
    """Delete staging directories of ``out`` left by pulls whose process is gone (killed)."""
    for path in out.parent.glob(f".{out.name}.partial-*"):
        try:
            pid = int(path.name.rsplit(".partial-", 1)[1].split("-", 1)[0])
        except (IndexError, ValueError):
            continue
        if pid != os.getpid() and not is_alive(pid):
            log.info("removing %s, left by a pull that no longer runs (pid %d)", path, pid)
            shutil.rmtree(path, ignore_errors=True)


def publish_directory(staging: Path, out: Path, tag: str, content_hash: str) -> None:
    """Move the verified ``staging`` to ``out`` in one rename.

    When a concurrent pull of the same snapshot published first, its copy is kept and
    ours dropped; ``out`` holding anything else is an error, never overwritten.
    """
    try:
        if out.exists() and not any(out.iterdir()):
            out.rmdir()
        staging.rename(out)
    except OSError:
        if not out.exists():
            raise
    else:
        mark_used(out)  # the precise time the local copies are pruned by
        return
    marker = out / MARKER_FILE
    if marker.is_file() and json.loads(marker.read_text()).get("content_hash") == content_hash:
        log.info("%s was published by a concurrent pull of %s: keeping it", out, tag)
        return
    raise SnapshotError(f"{out} appeared during the pull and is not snapshot {tag}")
