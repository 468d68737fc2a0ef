#!/usr/bin/env bash
# Creates .venv in the repository and installs tapeloop (editable) with its test tools and the ONNX and
# PostgreSQL extras.
# Idempotent and fast when nothing changed: it reinstalls only when pyproject.toml changes.
set -euo pipefail
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
venv="$repo/.venv"
stamp="$venv/.installed-pyproject-sha256"

if [ ! -x "$venv/bin/python" ]; then
  echo "tapeloop: creating $venv" >&2
  if ! "${PYTHON:-python3}" -m venv "$venv"; then
    rm -rf "$venv"
    echo "tapeloop: error: [setup] could not create a virtual environment with ${PYTHON:-python3}." \
      "Expected Python 3.10+ with the venv module; found none. Fix: on Debian/Ubuntu run" \
      "\`sudo apt-get install python3-venv\`, or set PYTHON to another interpreter." >&2
    exit 1
  fi
fi

wanted="$(sha256sum "$repo/pyproject.toml" | cut -d' ' -f1)"
if [ "$(cat "$stamp" 2>/dev/null)" != "$wanted" ]; then
  owned="$(cd "$repo" && pwd -P)/.venv"
  if [ "$(cd "$venv" && pwd -P)" != "$owned" ]; then  # E.g. a copy of the tree linking the checkout's .venv.
    echo "tapeloop: error: [setup] $venv is a link to $(cd "$venv" && pwd -P), another checkout's environment." \
      "Expected an environment of this checkout's own: installing tapeloop (editable) into that one would point" \
      "the other checkout's imports at $repo. Fix: run scripts/bootstrap.sh in the checkout that owns it, or" \
      "remove the link (rm $venv) and run this again to create one here." >&2
    exit 1
  fi
  echo "tapeloop: installing tapeloop and its dependencies into $venv (once)" >&2
  "$venv/bin/python" -m pip install --quiet --disable-pip-version-check -e "$repo[dev,onnx,postgres]"
  echo "$wanted" > "$stamp"
fi
