#!/usr/bin/env bash
# Runs the test suite (set-up included the first time). Arguments go to pytest.
# End-to-end tests read real MNIST from $TAPELOOP_MNIST_DIR (default ../shared/data/mnist).
set -euo pipefail
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
"$repo/scripts/bootstrap.sh"
if [ -z "${TAPELOOP_MNIST_DIR:-}" ] && [ -d "$repo/../shared/data/mnist" ]; then
  export TAPELOOP_MNIST_DIR="$(cd "$repo/../shared/data/mnist" && pwd)"
fi
cd "$repo"
exec "$repo/.venv/bin/python" -m pytest "$@"
