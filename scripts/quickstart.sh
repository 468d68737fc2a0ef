#!/usr/bin/env bash
# Trains the default recipe (configs/fashion_mnist.flags) end to end and prints its test accuracy.
# The first run creates .venv, installs tapeloop and fetches Fashion-MNIST; a second run on the
# same run directory finds the run finished and only re-scores it. Arguments go to train.py,
# e.g. `scripts/quickstart.sh --epochs=1`; RUN_DIR overrides where the run is written.
set -euo pipefail
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
"$repo/scripts/bootstrap.sh"

# Debian and Ubuntu package Fashion-MNIST; elsewhere tapeloop downloads and verifies it.
if [ ! -d /usr/share/datasets/fashion-mnist ] && [ -z "${TAPELOOP_DATA_DIR:-}" ] && command -v apt-get >/dev/null; then
  sudo=""
  [ "$(id -u)" = 0 ] || sudo="sudo"
  echo "tapeloop: installing Debian's dataset-fashion-mnist package" >&2
  $sudo apt-get install -y -q dataset-fashion-mnist >/dev/null ||
    { $sudo apt-get update -q >/dev/null && $sudo apt-get install -y -q dataset-fashion-mnist >/dev/null; } ||
    echo "tapeloop: could not install it; tapeloop will download Fashion-MNIST instead" >&2
fi

cd "$repo"
exec .venv/bin/python scripts/train.py --flagfile=configs/fashion_mnist.flags \
  --run_dir="${RUN_DIR:-$repo/runs/fashion_mnist}" "$@"
