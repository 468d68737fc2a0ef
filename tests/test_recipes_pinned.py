"""The loop's numbers pinned: the two recipes, 40 deterministic steps each, must log the training
losses recorded before the loop was split into setup, evaluation and summaries (issue 17).

oneDNN picks its kernels by processor, so the same deterministic run rounds differently on AMD
and Intel CPUs (0.2% apart at step 9, SGD's Fashion-MNIST run 20% by step 17): the losses are
pinned per CPU vendor, each recorded with the code of commit 4de64a8 (before the redesign).
"""

import json
import os
from pathlib import Path

import pytest

from tests.helpers import REPO, read_scalars
from trainer import loop
from trainer.flags import parse_config

PINNED_BY_VENDOR = json.loads((Path(__file__).parent / "data" / "loop_losses_before_redesign.json").read_text())
FASHION_MNIST_DIR = "/usr/share/datasets/fashion-mnist"  # Debian's dataset-fashion-mnist (.ci/run installs it).


def cpu_vendor() -> str:
    """/proc/cpuinfo's vendor_id (GenuineIntel, AuthenticAMD), or 'unknown'."""
    try:
        lines = Path("/proc/cpuinfo").read_text().splitlines()
    except OSError:
        return "unknown"
    return next((line.split(":", 1)[1].strip() for line in lines if line.startswith("vendor_id")), "unknown")


def pinned(recipe: str) -> dict[str, float]:
    vendor = cpu_vendor()
    if vendor not in PINNED_BY_VENDOR:
        pytest.skip(f"no losses pinned for {vendor} CPUs: record them with the code of commit 4de64a8")
    return PINNED_BY_VENDOR[vendor][recipe]


def logged_losses(tmp_path, recipe: str, *flags: str) -> dict[str, float]:
    config = parse_config([f"--flagfile={REPO / 'configs' / f'{recipe}.flags'}", *flags, "--max_steps=40",
                           "--log_every_steps=5", "--deterministic", "--seed=5", "--validation_split=0.1",
                           "--noscore_test",  # The pins are training losses: the test split is not needed.
                           f"--run_dir={tmp_path / recipe}", "--progress=log"])
    loop.train(config)
    return {str(step): value for step, value in read_scalars(tmp_path / recipe / "train")["loss/total"]}


@pytest.mark.slow
def test_the_mnist_recipe_logs_the_pinned_losses(tmp_path, mnist_dir):
    expected = pinned("mnist")
    assert logged_losses(tmp_path, "mnist", f"--data_dir={mnist_dir}") == pytest.approx(expected, rel=1e-5)


@pytest.mark.slow
@pytest.mark.skipif(not os.path.isdir(FASHION_MNIST_DIR), reason="Debian's dataset-fashion-mnist is not installed")
def test_the_fashion_mnist_recipe_logs_the_pinned_losses(tmp_path):
    expected = pinned("fashion_mnist")
    assert logged_losses(tmp_path, "fashion_mnist") == pytest.approx(expected, rel=1e-5)
