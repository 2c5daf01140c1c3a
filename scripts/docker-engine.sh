#!/usr/bin/env bash
# Start a Docker engine (Debian's docker.io) when none answers, and wait until it does.
# Idempotent. DOCKER_DATA_ROOT picks where images live (kept between runs on one machine).
#   scripts/docker-engine.sh        start (prints "started" when this call started it)
#   scripts/docker-engine.sh stop   stop the engine, only if this script started it
set -euo pipefail
pidfile="${RXVISION_DOCKERD_PIDFILE:-/var/run/rxvision-dockerd.pid}"
if [ "${1:-}" = stop ]; then
    if [ -f "$pidfile" ] && kill -0 "$(cat "$pidfile")" 2>/dev/null; then
        pid=$(cat "$pidfile")
        kill "$pid"
        for _ in $(seq 1 30); do kill -0 "$pid" 2>/dev/null || break; sleep 1; done
        echo "dockerd stopped"
    fi
    rm -f "$pidfile"
    exit 0
fi
if docker info >/dev/null 2>&1; then
    exit 0
fi
if ! command -v dockerd >/dev/null; then
    echo "dockerd not found: install Debian's docker.io (apt-get install docker.io)" >&2
    exit 3
fi
root="${DOCKER_DATA_ROOT:-/var/lib/docker}"
log="${DOCKERD_LOG:-/var/log/rxvision-dockerd.log}"
mkdir -p "$root"
echo "starting dockerd (data root $root, log $log)"
nohup dockerd --data-root "$root" >"$log" 2>&1 &
echo $! >"$pidfile"
for _ in $(seq 1 60); do
    if docker info >/dev/null 2>&1; then
        echo "started"
        exit 0
    fi
    sleep 1
done
echo "dockerd did not answer within 60 s; last lines of $log:" >&2
tail -n 20 "$log" >&2
exit 3
