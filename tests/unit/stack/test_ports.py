from __future__ import annotations

import socket
from pathlib import Path

import pytest

from rxvision.config.schema import StackConfig, StackPorts
from rxvision.home import Home
from rxvision.stack.local_stack import LocalStack
from rxvision.stack.ports import PortRegistry, is_port_free, next_free_port

pytestmark = pytest.mark.unit


@pytest.fixture(autouse=True)
def _own_registry(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RXVISION_PORTS_DIR", str(tmp_path / "ports-registry"))


def test_taken_port_is_skipped() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        port = sock.getsockname()[1]
        assert not is_port_free(port)
        assert next_free_port(port, set()) > port


# Bases sit below Linux's ephemeral range (32768-60999): there any outgoing connection of
# a busy machine can hold a port for a moment, and a test of the registry must not move.
def ports_from(base: int) -> StackPorts:
    names = list(StackPorts().model_dump())
    return StackPorts(**{n: base + 2 * i for i, n in enumerate(names)})


def test_two_homes_never_share_a_port(tmp_path: Path) -> None:
    cfg = StackConfig(ports=ports_from(next_free_port(31100, set())))
    first = LocalStack(Home(tmp_path / "a"), cfg)
    ports_a, _ = first.choose_ports()
    # Hold home A's ports as its running servers would.
    held = []
    for name, port in ports_a.items():
        kind = socket.SOCK_DGRAM if name == "statsd" else socket.SOCK_STREAM
        paired = name in {"s3", "weed_master", "weed_volume", "weed_filer"}
        for p in (port, port + 1) if paired else (port,):
            sock = socket.socket(socket.AF_INET, kind)
            sock.bind(("127.0.0.1", p))
            held.append(sock)
    try:
        second = LocalStack(Home(tmp_path / "b"), cfg)
        ports_b, moved = second.choose_ports()
        assert set(ports_a.values()).isdisjoint(ports_b.values())
        assert set(moved) == set(ports_a)
        # The choice is recorded: the next call keeps it.
        assert second.choose_ports()[0] == ports_b
    finally:
        for sock in held:
            sock.close()


def test_paired_grpc_port_counts_as_taken(tmp_path: Path) -> None:
    cfg = StackConfig(ports=ports_from(next_free_port(31300, set())))
    s3 = cfg.ports.s3
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", s3 + 1))  # S3's gRPC companion port
        ports, moved = LocalStack(Home(tmp_path / "c"), cfg).choose_ports()
    assert ports["s3"] != s3 and "s3" in moved
    assert s3 + 1 not in {ports["s3"], ports["s3"] + 1}


def test_a_stopped_homes_ports_stay_its_own(tmp_path: Path) -> None:
    registry = PortRegistry(tmp_path / "registry")
    cfg = StackConfig(ports=ports_from(next_free_port(31500, set())))
    ports_a, _ = LocalStack(Home(tmp_path / "a"), cfg, registry).choose_ports()
    # Nothing listens (home A is down), yet home B must not take A's ports.
    ports_b, _ = LocalStack(Home(tmp_path / "b"), cfg, registry).choose_ports()
    assert set(ports_a.values()).isdisjoint(ports_b.values())
    # A keeps its own ports on its next up.
    assert LocalStack(Home(tmp_path / "a"), cfg, registry).choose_ports()[0] == ports_a


def test_a_deleted_homes_ports_are_free_again(tmp_path: Path) -> None:
    import shutil

    registry = PortRegistry(tmp_path / "registry")
    cfg = StackConfig(ports=ports_from(next_free_port(31700, set())))
    ports_a, _ = LocalStack(Home(tmp_path / "a"), cfg, registry).choose_ports()
    shutil.rmtree(tmp_path / "a")
    ports_b, moved = LocalStack(Home(tmp_path / "b"), cfg, registry).choose_ports()
    assert ports_b == ports_a and moved == {}
