"""Presigned reads over TLS, as on AWS: the real SeaweedFS behind a local TLS endpoint
whose certificate a test CA signed. Verified against ``AWS_CA_BUNDLE`` as botocore
verifies; refused, by name and as botocore refuses, without it."""

from __future__ import annotations

import contextlib
import datetime
import ipaddress
import os
import socket
import ssl
import threading
import traceback
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
from botocore.exceptions import SSLError
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from rxvision.errors import EndpointUnreachable
from rxvision.storage.presigned_reads import PresignedReads
from rxvision.storage.s3 import S3Config, S3Store
from rxvision.storage.uri_store import Storage, storage_unavailable

pytestmark = pytest.mark.integration


def _certificate(
    subject: str, key: ec.EllipticCurvePrivateKey, issuer: x509.Certificate | None, signer: Any
) -> x509.Certificate:
    now = datetime.datetime.now(datetime.UTC)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)])
    builder = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(issuer.subject if issuer else name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(hours=1))
    )
    if issuer is None:
        builder = builder.add_extension(x509.BasicConstraints(ca=True, path_length=0), True)
    else:
        san = x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))])
        builder = builder.add_extension(san, False)
    return builder.sign(signer, hashes.SHA256())


def _pem(*items: Any) -> bytes:
    out = b""
    for item in items:
        if isinstance(item, x509.Certificate):
            out += item.public_bytes(serialization.Encoding.PEM)
        else:
            out += item.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
    return out


@dataclass(frozen=True)
class TlsEndpoint:
    url: str
    ca_bundle: Path


def _pump(source: socket.socket, sink: socket.socket) -> None:
    with contextlib.suppress(OSError):
        while data := source.recv(65536):
            sink.sendall(data)
    for sock in (source, sink):
        with contextlib.suppress(OSError):
            sock.shutdown(socket.SHUT_RDWR)


def _serve(listener: socket.socket, context: ssl.SSLContext, upstream: tuple[str, int]) -> None:
    """Terminate TLS on each connection and pass its bytes to ``upstream`` unchanged
    (the Host header too: SeaweedFS checks the signature the client made for it)."""
    while True:
        try:
            raw, _ = listener.accept()
        except OSError:
            return  # the listener closed: the fixture is done
        try:
            client = context.wrap_socket(raw, server_side=True)
        except (ssl.SSLError, OSError):
            raw.close()  # a client that refused our certificate
            continue
        server = socket.create_connection(upstream)
        for a, b in ((client, server), (server, client)):
            threading.Thread(target=_pump, args=(a, b), daemon=True).start()


@pytest.fixture
def tls_endpoint(stack_env: dict[str, str], tmp_path: Path) -> Iterator[TlsEndpoint]:
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = _certificate("rxvision test CA", ca_key, None, ca_key)
    key = ec.generate_private_key(ec.SECP256R1())
    leaf = _certificate("127.0.0.1", key, ca, ca_key)
    (tmp_path / "server.pem").write_bytes(_pem(leaf, key))
    (tmp_path / "ca.pem").write_bytes(_pem(ca))
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(tmp_path / "server.pem")
    plain = urlsplit(stack_env["AWS_ENDPOINT_URL_S3"])
    listener = socket.create_server(("127.0.0.1", 0))
    thread = threading.Thread(
        target=_serve,
        args=(listener, context, (plain.hostname, plain.port)),
        daemon=True,
    )
    thread.start()
    yield TlsEndpoint(f"https://127.0.0.1:{listener.getsockname()[1]}", tmp_path / "ca.pem")
    with contextlib.suppress(OSError):
        listener.shutdown(socket.SHUT_RDWR)  # wakes the accept() waiting in the thread
    listener.close()
    thread.join(timeout=5)
    assert not thread.is_alive()


def _storage(endpoint: str) -> Storage:
    return Storage(
        S3Store(
            S3Config(
                endpoint_url=endpoint,
                access_key=os.environ["AWS_ACCESS_KEY_ID"],
                secret_key=os.environ["AWS_SECRET_ACCESS_KEY"],
            )
        )
    )


def test_reads_over_tls_are_verified_against_aws_ca_bundle(
    tls_endpoint: TlsEndpoint, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AWS_CA_BUNDLE", str(tls_endpoint.ca_bundle))
    storage = _storage(tls_endpoint.url)
    S3Store().ensure_bucket("rxvision-data")
    uri = f"s3://rxvision-data/presigned-tls-{uuid.uuid4().hex[:8]}/photo.jpg"
    data = os.urandom(20_000)
    storage.s3.put_bytes(uri, data)  # botocore over TLS, the same CA
    assert isinstance(storage._presigned_reads(), PresignedReads)
    assert storage.read(uri) == data


def test_an_untrusted_certificate_is_refused_by_name_as_botocore_refuses_it(
    tls_endpoint: TlsEndpoint, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("AWS_CA_BUNDLE", raising=False)  # botocore's own bundle
    monkeypatch.setenv("AWS_MAX_ATTEMPTS", "1")
    storage = _storage(tls_endpoint.url)
    uri = "s3://rxvision-data/presigned-tls/any.jpg"
    with pytest.raises(EndpointUnreachable, match="CERTIFICATE_VERIFY_FAILED") as caught:
        storage.read(uri)
    assert storage_unavailable(caught.value)
    shown = str(caught.value) + "".join(traceback.format_exception(caught.value))
    assert "X-Amz-Signature" not in shown
    with pytest.raises(SSLError):
        storage.s3.get_bytes(uri)
