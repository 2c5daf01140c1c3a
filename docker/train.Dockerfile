# The GPU training image: `rxvision train` as its entrypoint.
#
#   docker build -f docker/train.Dockerfile -t rxvision-train .
#   docker build -f docker/train.Dockerfile --build-arg BASE_IMAGE=rxvision-base:bookworm \
#       --secret id=extra_ca,src=/usr/local/share/ca-certificates/corp.crt .
#
# BASE_IMAGE: a CUDA PyTorch image by default; any image with Python 3.11 and its venv
# module works (e.g. rxvision-base:bookworm, assembled by scripts/build-images.sh with
# debootstrap where no registry is reachable).
# extra_ca: extra CA certificates for builds behind a TLS-intercepting proxy; a build
# secret, so the certificate never lands in a layer.
# Stages: `system` (user, venv; no network), `deps` (the locked closure from PyPI, ~6 GB
# with CUDA torch), `app` (the package; the default target).
# No `# syntax=` line: the builder's own Dockerfile frontend is used, so the build needs
# no registry to fetch one.
ARG BASE_IMAGE=pytorch/pytorch:2.9.1-cuda12.8-cudnn9-runtime
FROM ${BASE_IMAGE} AS system

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    NO_ALBUMENTATIONS_UPDATE=1 \
    DVC_NO_ANALYTICS=1 \
    RXVISION_HOME=/var/lib/rxvision \
    PATH=/opt/venv/bin:$PATH

# Non-root: the container never needs root, and files it writes to mounts are not root's.
# A venv: Debian's Python refuses pip into the system (PEP 668), and the lock pins torch.
RUN useradd --create-home --uid 10001 rxvision \
    && mkdir -p /var/lib/rxvision && chown rxvision /var/lib/rxvision \
    && python3 -m venv /opt/venv \
    && /opt/venv/bin/python -c "import sys; assert sys.version_info[:2] == (3, 11), sys.version"

FROM system AS deps
WORKDIR /opt/rxvision
COPY requirements.lock ./
# Trust the extra CA (when given) for this step only, then install the locked closure.
RUN --mount=type=secret,id=extra_ca,required=false \
    if [ -f /run/secrets/extra_ca ]; then \
        cat /etc/ssl/certs/ca-certificates.crt /run/secrets/extra_ca > /tmp/ca.pem; \
        export PIP_CERT=/tmp/ca.pem; \
    fi; \
    pip install --no-cache-dir --no-deps -r requirements.lock \
    && rm -f /tmp/ca.pem

FROM deps AS app
COPY pyproject.toml README.md ./
COPY rxvision ./rxvision
COPY configs ./configs
ARG GIT_COMMIT=""
# the commit comes in as a build arg (no git in the image; MLflow's git probe stays quiet)
ENV RXVISION_GIT_COMMIT=${GIT_COMMIT} \
    GIT_PYTHON_REFRESH=quiet
# no build isolation: setuptools comes from the lock, and this step has no network
RUN pip install --no-cache-dir --no-deps --no-build-isolation . \
    && python -c "import rxvision.train.run"
USER rxvision
WORKDIR /var/lib/rxvision
ENTRYPOINT ["rxvision", "train"]
CMD ["--help"]
