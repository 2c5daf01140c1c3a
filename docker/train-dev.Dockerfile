# syntax=docker/dockerfile:1
# The training image in dev mode: the same entrypoint as docker/train.Dockerfile, but the
# Python environment is the host's virtualenv, mounted read-only at the same paths when
# the container runs (the DockerOperator's launcher does this: launcher.mode=docker-dev).
#
# Why: no image registry is reachable on CI machines, and the CUDA torch wheels are
# ~5.5 GB; installing them into an image on every CI run would dominate the run. The
# production image (docker/train.Dockerfile) installs the same locked closure instead.
#
#   scripts/build-images.sh   # base image (debootstrap) + this image as rxvision-train:dev
ARG BASE_IMAGE=rxvision-base:bookworm
FROM ${BASE_IMAGE}

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    NO_ALBUMENTATIONS_UPDATE=1 \
    DVC_NO_ANALYTICS=1 \
    RXVISION_HOME=/var/lib/rxvision

# /root opened for traversal only: the host interpreter (pyenv) may be mounted under it.
RUN chmod 0711 /root \
    && useradd --create-home --uid 10001 rxvision \
    && mkdir -p /var/lib/rxvision && chown rxvision /var/lib/rxvision
USER rxvision
WORKDIR /var/lib/rxvision
# The launcher sets the entrypoint to the mounted venv's `rxvision train`.
CMD ["--help"]
