"""Port choice for the local stack: first choices from config, the next free one if taken.

The chosen ports are recorded per RXVISION_HOME, so a home keeps its ports across restarts
and two homes never share one (the second finds the first's ports taken and moves on).
"""

from __future__ import annotations

import contextlib
import fcntl
import functools
import json
import logging
import os
import socket
import tempfile
from collections.abc import Iterator
from pathlib import Path

from rxvision.stack.process import wait_until

log = logging.getLogger(__name__)

SEARCH_SPAN = 200
# Each SeaweedFS port is followed by its gRPC port (port + 1).
PAIRED_PORTS = {"s3", "weed_master", "weed_volume", "weed_filer"}


def is_port_free(port: int, host: str = "127.0.0.1", udp: bool = False) -> bool:
    """True when nothing listens on ``host:port`` (TCP, or UDP with ``udp=True``)."""
    kind = socket.SOCK_DGRAM if udp else socket.SOCK_STREAM
    with socket.socket(socket.AF_INET, kind) as sock:
        # As servers do: a port whose old connections linger in TIME_WAIT is still free.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


def next_free_port(start: int, taken: set[int], udp: bool = False, span: int = SEARCH_SPAN) -> int:
    """The first port at or after ``start`` that is free and not in ``taken``."""
    for port in range(start, min(start + span, 65536)):
        if port not in taken and is_port_free(port, udp=udp):
            return port
    raise OSError(f"no free port in {start}..{start + span - 1}")


def load_ports(path: Path) -> dict[str, int]:
    """Ports recorded for a home (empty when none yet)."""
    if not path.is_file():
        return {}
    return {str(k): int(v) for k, v in json.loads(path.read_text()).items()}


def save_ports(path: Path, ports: dict[str, int]) -> None:
    """Record a home's ports atomically."""
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(ports, indent=2, sort_keys=True))
    tmp.replace(path)


def default_registry_dir() -> Path:
    """Machine-wide port reservations (``RXVISION_PORTS_DIR`` overrides)."""
    raw = os.environ.get("RXVISION_PORTS_DIR")
    return Path(raw) if raw else Path(tempfile.gettempdir()) / f"rxvision-ports-{os.getuid()}"


class PortRegistry:
    """Which home owns which port, across every home on this machine.

    A port chosen by one home stays its own while that home exists and still records it,
    even while its servers are down: a second home never picks it, and the choice is
    made under a lock, so two homes starting at once never pick the same free port.
    """

    def __init__(self, root: Path | None = None) -> None:
        self.root = root or default_registry_dir()

    @contextlib.contextmanager
    def locked(self) -> Iterator[None]:
        """Hold the machine-wide lock while choosing ports."""
        self.root.mkdir(parents=True, exist_ok=True)
        with (self.root / ".lock").open("w") as fh:
            fcntl.flock(fh, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(fh, fcntl.LOCK_UN)

    def owner(self, port: int) -> Path | None:
        """The home that owns ``port``, or None (free, or its owner is gone)."""
        entry = self.root / str(port)
        try:
            home = Path(entry.read_text().strip())
        except OSError:
            return None
        if port not in load_ports(home / "stack" / "ports.json").values():
            entry.unlink(missing_ok=True)  # the owner moved on or was deleted
            return None
        return home

    def reserve(self, home: Path, ports: Iterator[int] | list[int]) -> None:
        """Record ``home`` as the owner of ``ports``."""
        for port in ports:
            (self.root / str(port)).write_text(str(home))


def pick_ports(
    wanted: dict[str, int],
    recorded: dict[str, int],
    held: set[str],
    registry: PortRegistry,
    home: Path,
) -> tuple[dict[str, int], dict[str, tuple[int, int]]]:
    """Each wanted port, or the next free one: the chosen ports, and those that moved.

    ``held`` ports belong to servers running now and are kept. A port the home ``recorded``
    is waited for a few seconds first: a server just killed frees its ports a moment later,
    and clients keep the old URLs. Call it under ``registry.locked()``.
    """
    chosen: dict[str, int] = {}
    moved: dict[str, tuple[int, int]] = {}
    taken: set[int] = set()
    for name, port in sorted(wanted.items()):
        if name in held:
            chosen[name] = port
        else:
            if name in recorded:
                wait_until(functools.partial(_ports_free, name, port), 8, 0.25)
            chosen[name] = _free_port_for(name, port, taken, registry, home)
            if chosen[name] != port:
                moved[name] = (port, chosen[name])
        taken.update(_ports_of(name, chosen[name]))
    return chosen, moved


def _free_port_for(
    name: str, start: int, taken: set[int], registry: PortRegistry, home: Path
) -> int:
    port = start
    while True:
        port = next_free_port(port, taken)
        candidates = _ports_of(name, port)
        if all(
            p not in taken and registry.owner(p) in (None, home) for p in candidates
        ) and _ports_free(name, port):
            return port
        port += 1


def _ports_free(name: str, port: int) -> bool:
    # Free for TCP and UDP both: a port is never shared, whatever the protocols.
    return all(is_port_free(p) and is_port_free(p, udp=True) for p in _ports_of(name, port))


def _ports_of(name: str, port: int) -> tuple[int, ...]:
    return (port, port + 1) if name in PAIRED_PORTS else (port,)
