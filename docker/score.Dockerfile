# The batch scoring image: `rxvision score` as its entrypoint, for running scoring outside
# Airflow (a cron job, a batch service, a Kubernetes Job) on the same locked closure.
#
#   docker build -f docker/score.Dockerfile -t rxvision-score .
#   docker run --rm -e MLFLOW_TRACKING_URI -e AWS_ENDPOINT_URL_S3 -e AWS_ACCESS_KEY_ID \
#       -e AWS_SECRET_ACCESS_KEY -e STATSD_HOST rxvision-score --help
#
# BASE_IMAGE: rxvision-base:bookworm by default (scripts/build-images.sh assembles it with
# debootstrap where no registry is reachable); any image with Python 3.11 and its venv
# module works. extra_ca: as in docker/train.Dockerfile (a build secret, never a layer).
# Stages: `system` (user, venv; no network), `deps` (the locked closure from PyPI), `app`
# (the project, editable from /opt/rxvision so that configs/serving.yaml is found; the
# default target).
# No `# syntax=` line: the builder's own Dockerfile frontend is used.
ARG BASE_IMAGE=rxvision-base:bookworm
FROM ${BASE_IMAGE} AS system

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    NO_ALBUMENTATIONS_UPDATE=1 \
    RXVISION_HOME=/var/lib/rxvision \
    PATH=/opt/venv/bin:$PATH

# Non-root; a venv (Debian's Python refuses pip into the system, PEP 668).
RUN useradd --create-home --uid 10001 rxvision \
    && mkdir -p /var/lib/rxvision && chown rxvision /var/lib/rxvision \
    && python3 -m venv /opt/venv \
    && /opt/venv/bin/python -c "import sys; assert sys.version_info[:2] == (3, 11), sys.version"

FROM system AS deps
WORKDIR /opt/rxvision
COPY requirements.lock ./
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
ENV RXVISION_GIT_COMMIT=${GIT_COMMIT} \
    GIT_PYTHON_REFRESH=quiet
RUN pip install --no-cache-dir --no-deps --no-build-isolation -e . \
    && python -c "import rxvision.serving.batch, rxvision.home as h; assert str(h.repo_root()) == '/opt/rxvision'"
USER rxvision
WORKDIR /var/lib/rxvision
ENTRYPOINT ["rxvision", "score"]
CMD ["--help"]
