# syntax=docker/dockerfile:1
# The GPU training image: `rxvision train` as its entrypoint.
#
#   docker build -f docker/train.Dockerfile -t rxvision-train .
#   docker build -f docker/train.Dockerfile --build-arg BASE_IMAGE=rxvision-base:bookworm \
#       --secret id=extra_ca,src=/usr/local/share/ca-certificates/corp.crt .
#
# BASE_IMAGE: a CUDA PyTorch image by default; any image with Python 3.11 and pip works
# (e.g. one assembled locally with debootstrap where no registry is reachable).
# extra_ca: extra CA certificates for builds behind a TLS-intercepting proxy; a build
# secret, so the certificate never lands in a layer.
ARG BASE_IMAGE=pytorch/pytorch:2.9.1-cuda12.8-cudnn9-runtime
FROM ${BASE_IMAGE}

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    NO_ALBUMENTATIONS_UPDATE=1 \
    DVC_NO_ANALYTICS=1

WORKDIR /opt/rxvision
COPY requirements.lock pyproject.toml README.md ./
COPY rxvision ./rxvision
COPY configs ./configs

# Trust the extra CA (when given) for this step only, then install the locked closure.
RUN --mount=type=secret,id=extra_ca,required=false \
    if [ -f /run/secrets/extra_ca ]; then \
        cat /etc/ssl/certs/ca-certificates.crt /run/secrets/extra_ca > /tmp/ca.pem; \
        export PIP_CERT=/tmp/ca.pem; \
    fi; \
    python3 -m pip install --no-cache-dir --no-deps -r requirements.lock \
    && python3 -m pip install --no-cache-dir --no-deps . \
    && rm -f /tmp/ca.pem \
    && python3 -c "import rxvision.train.run"

# Non-root: the container never needs root, and files it writes to mounts are not root's.
RUN useradd --create-home --uid 10001 rxvision \
    && mkdir -p /var/lib/rxvision && chown rxvision /var/lib/rxvision
USER rxvision
ENV RXVISION_HOME=/var/lib/rxvision

ENTRYPOINT ["rxvision", "train"]
CMD ["--help"]
