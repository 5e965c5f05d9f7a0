#!/usr/bin/env bash
# Supervisord runs sender process number <n> (0..SANDESH_SENDERS-1) through
# this: each one serves health/metrics on SANDESH_SENDER_PORT + n.
#   run_sender.sh <n>
set -euo pipefail
n=${1:?usage: run_sender.sh <process number>}
: "${SANDESH_SENDER_PORT:?not set: start the stack with make run}"
: "${SANDESH_REPO_DIR:?not set: start the stack with make run}"

export SANDESH_SERVICE=sender
export SANDESH_SENDER_INDEX="$n"
export SANDESH_SENDER_PORT=$((SANDESH_SENDER_PORT + n))
unset PROMETHEUS_MULTIPROC_DIR  # one process: plain in-process metrics
exec "$SANDESH_REPO_DIR/.venv/bin/python" -m services.sender.worker
