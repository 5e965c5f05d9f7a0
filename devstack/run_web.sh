#!/usr/bin/env bash
# Supervisord runs every Sandesh web service through this: a fresh Prometheus
# multiprocess directory (stale files from a previous run would skew the
# metrics), then gunicorn in this process (exec: supervisord signals gunicorn).
#   run_web.sh <service> <port>
set -euo pipefail
name=${1:?usage: run_web.sh <service> <port>}
port=${2:?usage: run_web.sh <service> <port>}
: "${SANDESH_RUN_DIR:?not set: start the stack with make run}"
: "${SANDESH_REPO_DIR:?not set: start the stack with make run}"

export SANDESH_SERVICE="$name"
export PROMETHEUS_MULTIPROC_DIR="${PROMETHEUS_MULTIPROC_DIR:-$SANDESH_RUN_DIR/prom/$name}"
rm -rf "$PROMETHEUS_MULTIPROC_DIR"
mkdir -p "$PROMETHEUS_MULTIPROC_DIR"

exec "$SANDESH_REPO_DIR/.venv/bin/gunicorn" -c python:shared.gunicorn_conf \
  --bind "127.0.0.1:$port" "services.$name.app:create_app()"
