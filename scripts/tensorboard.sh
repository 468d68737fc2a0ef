#!/usr/bin/env bash
# Serves TensorBoard on a run directory or a folder of runs (default runs/), on this machine only:
#   scripts/tensorboard.sh [LOGDIR] [PORT]     then open http://127.0.0.1:PORT (default 6006)
set -euo pipefail
logdir="$(realpath "${1:-runs}")"
port="${2:-6006}"
cd "$(dirname "$0")/.."
scripts/bootstrap.sh
exec .venv/bin/tensorboard --logdir "$logdir" --host 127.0.0.1 --port "$port" --load_fast=false
