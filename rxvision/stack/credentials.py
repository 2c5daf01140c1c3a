"""Credentials of the local stack: generated on first ``up``, kept mode 0600 in the home."""

from __future__ import annotations

import json
import os
import secrets
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

from cryptography.fernet import Fernet


@dataclass(frozen=True)
class StackCredentials:
    """Secrets of one home's stack. Never logged whole: see ``mask``."""

    s3_access_key: str
    s3_secret_key: str
    airflow_admin_password: str
    airflow_secret_key: str
    airflow_jwt_secret: str
    airflow_fernet_key: str
    # Added with the ``scale`` profile; a home created before gets them on its next load.
    postgres_password: str = field(default_factory=lambda: secrets.token_urlsafe(24))
    redis_password: str = field(default_factory=lambda: secrets.token_urlsafe(24))

    @classmethod
    def generate(cls) -> StackCredentials:
        """Fresh random credentials."""
        return cls(
            s3_access_key="RX" + secrets.token_hex(9).upper(),
            s3_secret_key=secrets.token_urlsafe(30),
            airflow_admin_password=secrets.token_urlsafe(12),
            airflow_secret_key=secrets.token_urlsafe(32),
            airflow_jwt_secret=secrets.token_urlsafe(32),
            airflow_fernet_key=Fernet.generate_key().decode(),
        )


def mask(secret: str) -> str:
    """Show a secret's first characters only (for logs and status output)."""
    return secret[:4] + "…" if len(secret) > 4 else "…"


def load_or_create_credentials(path: Path) -> tuple[StackCredentials, bool]:
    """Read the home's credentials, creating them (mode 0600) on first use.

    Returns the credentials and whether they were created now.
    """
    if path.is_file():
        stored = json.loads(path.read_text())
        creds = StackCredentials(**stored)
        if set(stored) != {f.name for f in fields(StackCredentials)}:
            _write_private(path, creds)  # keep the secrets generated for new fields
        return creds, False
    creds = StackCredentials.generate()
    _write_private(path, creds)
    return creds, True


def _write_private(path: Path, creds: StackCredentials) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    # Create with 0600 from the start: never a moment where the file is world-readable.
    fd = os.open(path.with_suffix(".tmp"), os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        json.dump(asdict(creds), fh, indent=2)
    path.with_suffix(".tmp").replace(path)
