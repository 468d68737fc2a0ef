#!/usr/bin/env bash
# Trains the quick Fashion-MNIST recipe (configs/fashion_mnist_quick.flags) end to end, prints its test
# accuracy, then the command of the full recipe (configs/fashion_mnist.flags: 4x the epochs at 2x the width).
# The quick recipe is the one that finishes in reasonable time on a CPU without AVX-512 too, where
# --mixed_precision=auto computes in float32 (docs/performance.md has its time on both kinds).
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
echo "tapeloop: training configs/fashion_mnist_quick.flags; after its first steps the log gives the precision" \
  "it chose for this CPU and a time estimate measured here ('Time estimate: ...')." >&2
.venv/bin/python scripts/train.py --flagfile=configs/fashion_mnist_quick.flags \
  --run_dir="${RUN_DIR:-$repo/runs/fashion_mnist_quick}" "$@"
echo "Next, the full recipe (about 94% test accuracy; about 8x the training time of this one):"
echo "  .venv/bin/python scripts/train.py --flagfile=configs/fashion_mnist.flags --run_dir=runs/fashion_mnist"
