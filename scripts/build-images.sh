#!/usr/bin/env bash
# Build the images the nightly DAG's train task runs, with no image registry:
#   rxvision-base:bookworm  Debian bookworm assembled locally (debootstrap + docker import)
#   rxvision-train:dev      docker/train-dev.Dockerfile on that base (host venv mounted)
# With --production, also build the system layers of docker/train.Dockerfile (and of
# airflow.Dockerfile and score.Dockerfile, infra/compose's images) on the same base
# (the locked pip install needs PyPI and ~6 GB; --production-full builds it all).
# RXVISION_EXTRA_CA=/path/ca.crt passes extra CA certificates (a TLS-intercepting proxy)
# to the build as a secret: they never land in a layer.
# Idempotent: an existing base image is reused.
set -euo pipefail
cd "$(dirname "$0")/.."
BASE="${RXVISION_BASE_IMAGE:-rxvision-base:bookworm}"
MIRROR="${DEBIAN_MIRROR:-http://deb.debian.org/debian}"
scripts/docker-engine.sh
if ! docker image inspect "$BASE" >/dev/null 2>&1; then
    command -v debootstrap >/dev/null || { echo "debootstrap missing: apt-get install debootstrap" >&2; exit 3; }
    work="$(mktemp -d /tmp/rxvision-rootfs.XXXXXX)"
    trap 'rm -rf "$work"' EXIT
    echo "assembling $BASE with debootstrap (about a minute)"
    # the libraries a CPython build and torch's wheels link against, plus python3 for
    # images that install into the base's own interpreter
    debootstrap --variant=minbase \
        --include=ca-certificates,libssl3,libffi8,libsqlite3-0,libbz2-1.0,liblzma5,zlib1g,libgomp1,libstdc++6,python3,python3-pip,python3-venv \
        bookworm "$work/rootfs" "$MIRROR" >"$work/debootstrap.log" 2>&1 \
        || { tail -n 30 "$work/debootstrap.log" >&2; exit 3; }
    rm -rf "$work/rootfs/var/cache/apt/archives/"*.deb
    tar -C "$work/rootfs" -c . | docker import - "$BASE" >/dev/null
    echo "built $BASE"
fi
docker build -q -f docker/train-dev.Dockerfile --build-arg BASE_IMAGE="$BASE" \
    -t rxvision-train:dev docker/ >/dev/null
echo "built rxvision-train:dev"
# RUN --mount (the CA secret) needs BuildKit: Debian's docker.io client has it built in,
# a newer client needs the buildx plugin instead
buildkit_docker() {
    if [ -x /usr/bin/docker ] && /usr/bin/docker --version | grep -q '^Docker version 20\.'; then
        DOCKER_BUILDKIT=1 /usr/bin/docker "$@"
    else
        DOCKER_BUILDKIT=1 docker "$@"
    fi
}
case "${1:-}" in
--production)
    buildkit_docker build -q -f docker/train.Dockerfile --target system \
        --build-arg BASE_IMAGE="$BASE" -t rxvision-train:system . >/dev/null
    echo "built rxvision-train:system (docker/train.Dockerfile up to the pip install)"
    # infra/compose's Airflow and scoring images, on the same base
    for image in airflow score; do
        buildkit_docker build -q -f "docker/$image.Dockerfile" --target system \
            --build-arg BASE_IMAGE="$BASE" -t "rxvision-$image:system" . >/dev/null
        echo "built rxvision-$image:system (docker/$image.Dockerfile up to the pip install)"
    done
    ;;
--production-full)
    secret=()
    if [ -n "${RXVISION_EXTRA_CA:-}" ]; then secret=(--secret "id=extra_ca,src=$RXVISION_EXTRA_CA"); fi
    buildkit_docker build -f docker/train.Dockerfile --build-arg BASE_IMAGE="$BASE" \
        --build-arg GIT_COMMIT="$(git rev-parse HEAD 2>/dev/null || true)" "${secret[@]}" \
        -t rxvision-train:latest .
    ;;
esac
