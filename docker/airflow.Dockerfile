# The Airflow image: Airflow 3.3 with the providers and RxVision installed (the locked
# closure), the repo's dags/, plugins/, configs/ and airflow.cfg under /opt/rxvision.
# infra/compose runs every Airflow component from it (api-server, scheduler, dag-processor,
# triggerer, Celery workers) and MLflow too (`mlflow server` is in the same closure).
#
#   docker build -f docker/airflow.Dockerfile -t rxvision-airflow .
#   docker build -f docker/airflow.Dockerfile --build-arg BASE_IMAGE=python:3.11-slim-bookworm \
#       --secret id=extra_ca,src=/usr/local/share/ca-certificates/corp.crt -t rxvision-airflow .
#
# BASE_IMAGE: rxvision-base:bookworm by default, Debian bookworm assembled locally by
# scripts/build-images.sh (debootstrap + docker import; no registry needed); any image with
# Python 3.11 and its venv module works (python:3.11-slim-bookworm where a registry is
# reachable). Workers need no CUDA here: training runs in the training image.
# extra_ca: extra CA certificates for builds behind a TLS-intercepting proxy; a build
# secret, so the certificate never lands in a layer.
# Stages: `system` (user, venv; no network), `deps` (the locked closure from PyPI, ~6 GB
# with CUDA torch), `app` (the project; the default target).
# The project is installed in editable mode from /opt/rxvision: rxvision.home.repo_root()
# is then /opt/rxvision, where configs/, dags/ and plugins/ are (a plain install would put
# the package in site-packages, away from configs/).
# No `# syntax=` line: the builder's own Dockerfile frontend is used, so the build needs
# no registry to fetch one.
ARG BASE_IMAGE=rxvision-base:bookworm
FROM ${BASE_IMAGE} AS system

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    NO_ALBUMENTATIONS_UPDATE=1 \
    DVC_NO_ANALYTICS=1 \
    RXVISION_HOME=/var/lib/rxvision \
    AIRFLOW_HOME=/var/lib/rxvision/airflow \
    PATH=/opt/venv/bin:$PATH

# Non-root (uid 10001, as in the training image). The dirs exist in the image, owned by
# that user, so that named volumes mounted on them start with the right owner.
RUN useradd --create-home --uid 10001 rxvision \
    && mkdir -p /var/lib/rxvision/airflow /var/lib/rxvision/auth \
    && chown -R rxvision /var/lib/rxvision \
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
COPY pyproject.toml README.md airflow.cfg ./
COPY rxvision ./rxvision
COPY configs ./configs
COPY dags ./dags
COPY plugins ./plugins
ARG GIT_COMMIT=""
# the commit comes in as a build arg (no git in the image; MLflow's git probe stays quiet);
# plugins/ on the path as in the local stack (DAG files import rxvision_airflow)
ENV RXVISION_GIT_COMMIT=${GIT_COMMIT} \
    GIT_PYTHON_REFRESH=quiet \
    AIRFLOW_CONFIG=/opt/rxvision/airflow.cfg \
    AIRFLOW__CORE__DAGS_FOLDER=/opt/rxvision/dags \
    AIRFLOW__CORE__PLUGINS_FOLDER=/opt/rxvision/plugins \
    PYTHONPATH=/opt/rxvision/plugins
# no build isolation: setuptools comes from the lock, and this step has no network
RUN pip install --no-cache-dir --no-deps --no-build-isolation -e . \
    && python -c "import rxvision.home as h, airflow; assert str(h.repo_root()) == '/opt/rxvision'"
USER rxvision
WORKDIR /var/lib/rxvision
ENTRYPOINT ["airflow"]
CMD ["version"]
