"""The loop's numbers pinned: the two recipes, 40 deterministic steps each, must log the training
losses recorded for this kind of machine (each kind recorded once the others matched).

oneDNN picks its kernels by instruction set, and the recipes' --mixed_precision=auto picks the
precision by it too, so the same deterministic run rounds differently on each kind of machine
(0.2% apart at step 9 between AMD and Intel, SGD's Fashion-MNIST run 20% by step 17). The pins are
keyed by what decides the kernels: CPU vendor, oneDNN's instruction-set level and the precision.
A kind with no pins is skipped, never failed; record its pins, on a commit whose losses agree with
the pins of the other kinds, with `TAPELOOP_MNIST_DIR=DIR .venv/bin/python -m tests.test_recipes_pinned`.
"""

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from tests.helpers import REPO, read_scalars
from trainer import loop, precision
from trainer.flags import parse_config

PINS_FILE = Path(__file__).parent / "data" / "pinned_recipe_losses.json"
FASHION_MNIST_DIR = "/usr/share/datasets/fashion-mnist"  # Debian's dataset-fashion-mnist (.ci/run installs it).
RECORD_COMMAND = "TAPELOOP_MNIST_DIR=DIR .venv/bin/python -m tests.test_recipes_pinned"


def machine_kind() -> str:
    """What decides the recipes' kernels here: 'vendor oneDNN-level precision' (with 'onednn-off' before the
    precision where TensorFlow's own kernels run), as the pins are keyed."""
    cpu = precision.this_cpu()
    kernels = cpu.onednn_isa or "no-x86-level"
    return f"{cpu.vendor} {kernels}{'' if cpu.onednn_enabled else ' onednn-off'} " \
           f"{precision.for_run('auto', 'default').setting}"


def pinned(recipe: str, pins: dict, kind: str) -> dict[str, float]:
    """The losses pinned for `recipe` on `kind`; skips the test where that kind has none."""
    if recipe not in pins.get(kind, {}):
        pytest.skip(f"no {recipe} losses pinned for this kind of machine ({kind}): record them with "
                    f"`{RECORD_COMMAND}`")
    return pins[kind][recipe]


def logged_losses(run_dir: Path, recipe: str, *flags: str) -> dict[str, float]:
    config = parse_config([f"--flagfile={REPO / 'configs' / f'{recipe}.flags'}", *flags, "--max_steps=40",
                           "--log_every_steps=5", "--deterministic", "--seed=5", "--validation_split=0.1",
                           "--noscore_test",  # The pins are training losses: the test split is not needed.
                           f"--run_dir={run_dir / recipe}", "--progress=log"])
    loop.train(config)
    return {str(step): value for step, value in read_scalars(run_dir / recipe / "train")["loss/total"]}


def test_a_kind_without_pins_is_skipped_with_its_name_and_the_command_that_records_them():
    with pytest.raises(pytest.skip.Exception) as skipped:
        pinned("mnist", {"GenuineIntel avx512_core_amx bfloat16": {"mnist": {"9": 2.8}}}, "AuthenticAMD avx2 none")
    assert str(skipped.value) == ("no mnist losses pinned for this kind of machine (AuthenticAMD avx2 none): "
                                  f"record them with `{RECORD_COMMAND}`")


@pytest.mark.slow
def test_the_mnist_recipe_logs_the_pinned_losses(tmp_path, mnist_dir):
    expected = pinned("mnist", json.loads(PINS_FILE.read_text()), machine_kind())
    assert logged_losses(tmp_path, "mnist", f"--data_dir={mnist_dir}") == pytest.approx(expected, rel=1e-5)


@pytest.mark.slow
@pytest.mark.skipif(not os.path.isdir(FASHION_MNIST_DIR), reason="Debian's dataset-fashion-mnist is not installed")
def test_the_fashion_mnist_recipe_logs_the_pinned_losses(tmp_path):
    expected = pinned("fashion_mnist", json.loads(PINS_FILE.read_text()), machine_kind())
    assert logged_losses(tmp_path, "fashion_mnist") == pytest.approx(expected, rel=1e-5)


def record_this_kind() -> None:
    """Runs both recipes as the tests do and writes their losses into PINS_FILE under this machine's kind."""
    kind, mnist = machine_kind(), os.environ.get("TAPELOOP_MNIST_DIR")
    if not mnist:
        sys.exit(f"set TAPELOOP_MNIST_DIR to a folder of MNIST's IDX files; usage: {RECORD_COMMAND}")
    with tempfile.TemporaryDirectory() as scratch:
        commit = subprocess.run(["git", "-C", str(REPO), "describe", "--always", "--dirty"], capture_output=True,
                                text=True).stdout.strip()
        entry = {"recorded": f"commit {commit}; {precision.this_cpu().describe()}",
                 "mnist": logged_losses(Path(scratch), "mnist", f"--data_dir={mnist}"),
                 "fashion_mnist": logged_losses(Path(scratch), "fashion_mnist")}
    pins = json.loads(PINS_FILE.read_text())
    pins[kind] = entry
    PINS_FILE.write_text(json.dumps(pins, indent=1) + "\n")
    print(f"pinned {kind}: {json.dumps(entry)}")


if __name__ == "__main__":
    record_this_kind()
