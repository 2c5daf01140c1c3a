"""Which MLflow and S3 store a CLI command uses: the environment's, the home's running
stack, or the home's local store; said in one line on stderr, never with a secret."""

from __future__ import annotations

import os
from urllib.parse import urlsplit, urlunsplit

from rxvision.cli.errors import host_port
from rxvision.home import Home

# the variables that point clients at a store: taken from the stack together, or not at all
STORE_VARS = (
    "AWS_ENDPOINT_URL_S3",
    "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY",
    "AWS_DEFAULT_REGION",
    "MLFLOW_TRACKING_URI",
    "MLFLOW_S3_ENDPOINT_URL",
    "MLFLOW_ENABLE_PROXY_MULTIPART_DOWNLOAD",
)
HEALTH_TIMEOUT_S = 2.0


def _public(uri: str) -> str:
    """A URI without its user and password (they may hold a token)."""
    parts = urlsplit(uri)
    if parts.username is None and parts.password is None:
        return uri
    netloc = parts.hostname or ""
    if parts.port:
        netloc += f":{parts.port}"
    return urlunsplit(parts._replace(netloc=netloc))


def running_stack_env(home: Home) -> tuple[dict[str, str] | None, str | None]:
    """The client variables of the home's stack when its S3 and MLflow servers run and
    answer; else None and why not (None too when the home never ran a stack)."""
    if not (home.stack_dir / "ports.json").is_file():
        return None, None
    import requests

    from rxvision.stack.local_stack import LocalStack

    stack = LocalStack(home)
    for name in ("seaweedfs", "mlflow"):
        if stack.process_stub(name).pid() is None:
            return None, f"{name} is not running"
    env = stack.client_env()
    checks = (
        ("MLflow", env["MLFLOW_TRACKING_URI"], "/health"),
        ("S3", env["AWS_ENDPOINT_URL_S3"], "/"),
    )
    for what, url, path in checks:
        try:
            answer = requests.get(url + path, timeout=HEALTH_TIMEOUT_S)
        except requests.RequestException:
            return None, f"{what} at {host_port(url)} does not answer"
        if answer.status_code >= 500 or (what == "MLflow" and answer.status_code != 200):
            return None, f"{what} at {host_port(url)} answered {answer.status_code}"
    return env, None


def choose_store(home: Home) -> str:
    """Point MLflow and S3 clients at one store and say which, without a secret.

    Endpoints set in the environment win; else the home's running, healthy stack (its
    variables, as ``rxvision stack env`` prints them); else the local MLflow store of the
    home (train logs there, score and model read it: the CLI works with no server).
    """
    tracking = os.environ.get("MLFLOW_TRACKING_URI")
    s3 = os.environ.get("AWS_ENDPOINT_URL_S3")
    if tracking or s3:
        if not tracking:
            os.environ["MLFLOW_TRACKING_URI"] = tracking = home.local_mlflow_uri()
        return (
            f"using the store from the environment: MLflow {_public(tracking)}, "
            f"S3 {_public(s3) if s3 else 'AWS (no AWS_ENDPOINT_URL_S3)'}"
        )
    env, why = running_stack_env(home)
    if env is not None:
        for key, value in env.items():
            if key in STORE_VARS:
                os.environ[key] = value
            else:
                os.environ.setdefault(key, value)
        return (
            f"using the running stack of {home.root}: MLflow {env['MLFLOW_TRACKING_URI']}, "
            f"S3 {env['AWS_ENDPOINT_URL_S3']}"
        )
    os.environ["MLFLOW_TRACKING_URI"] = local = home.local_mlflow_uri()
    line = f"using the local store at {local.removeprefix('sqlite:///')}"
    if why:
        line += f" (the stack of {home.root} is not healthy: {why})"
    return line
