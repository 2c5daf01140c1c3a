#!/usr/bin/env bash
# Install everything RxVision needs into .venv (idempotent: a no-op in seconds when the
# lock and pyproject have not changed since the last install).
#   RXVISION_PYTHON   the Python 3.11 to build the venv with (default: python3.11 or python3)
set -euo pipefail
cd "$(dirname "$0")/.."

# Debian packages the tests and the stack use, installed when missing and we are root:
# the Docker engine for the training container, debootstrap for its base image (no image
# registry is needed), Postgres and Redis for `stack up --profile scale`, docker-compose
# (v1: Debian has no v2 plugin) to check infra/compose, chromium for the review gallery's
# browser test (Playwright drives it; it never downloads a browser of its own).
# RXVISION_APT_PACKAGES="" installs none.
APT_PACKAGES=(${RXVISION_APT_PACKAGES-docker.io debootstrap postgresql redis-server docker-compose chromium})
missing=()
for pkg in "${APT_PACKAGES[@]}"; do
  dpkg -s "$pkg" >/dev/null 2>&1 || missing+=("$pkg")
done
if ((${#missing[@]})); then
  if [ "$(id -u)" = 0 ]; then
    echo "install: apt-get install ${missing[*]}"
    apt-get update -q >/dev/null
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q "${missing[@]}" >/dev/null
  else
    echo "install: missing Debian packages (run as root or install them): ${missing[*]}" >&2
    exit 1
  fi
fi

py=${RXVISION_PYTHON:-$(command -v python3.11 || command -v python3)}
if ! "$py" -c 'import sys; sys.exit(sys.version_info[:2] != (3, 11))'; then
  echo "install: Python 3.11 is required ($py is $("$py" --version 2>&1))" >&2
  exit 1
fi
[ -x .venv/bin/python ] || "$py" -m venv .venv

stamp=.venv/.rxvision-install
UV_VERSION=0.13.9
want=$({ cat pyproject.toml requirements.lock; echo "uv $UV_VERSION compileall"; } | sha256sum | cut -d' ' -f1)
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then
  echo "install: .venv is up to date"
  exit 0
fi
echo "install: installing the locked dependencies into .venv (a cold install takes ~2 min)"
start=$SECONDS
# uv installs the lock: ~20 s cold here, against 5-8 min for pip on the same lock (pip
# unpacks the ~4 GB of torch and CUDA wheels one at a time); pip only bootstraps uv.
# The lock is the whole pinned closure (pip freeze --all, setuptools included: torch needs
# a newer one than a fresh venv has), so no resolving: --no-deps; then `pip check` proves
# nothing is missing. -e . adds the project itself.
.venv/bin/pip install -q --disable-pip-version-check "uv==$UV_VERSION" 2>&1 \
  | grep -v "^WARNING: Location" || true
uv_install() { .venv/bin/uv pip install -q --python .venv/bin/python --no-deps "$@"; }
uv_install -r requirements.lock
uv_install -e .
# Bytecode, compiled once here: uv writes no .pyc, and where PYTHONDONTWRITEBYTECODE=1 is
# set (these machines, the training container that mounts this venv) Python never caches
# it either, so every process would compile torch, torchvision and mlflow from source
# again (`import torchvision` 22 s instead of 7 s here, in every task). compileall skips
# what is compiled already; the SyntaxErrors of a few packages' Python-2 test files are
# expected, so its status is not checked.
site=$(.venv/bin/python -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
.venv/bin/python -m compileall -q -j 0 "$site" >/dev/null 2>&1 || true
.venv/bin/pip check --disable-pip-version-check \
  || { echo "install: requirements.lock is incomplete, see above" >&2; exit 1; }
.venv/bin/python -c 'import rxvision, airflow, mlflow, torch, dvc' \
  || { echo "install: the venv is broken, see the installer's output above" >&2; exit 1; }
echo "$want" > "$stamp"
echo "install: done in $((SECONDS - start)) s"
