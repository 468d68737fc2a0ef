"""The loop's numbers pinned: the two recipes, 40 deterministic steps each, must log the training
losses recorded before the loop was split into setup, evaluation and summaries (issue 17)."""

import json
import os
from pathlib import Path

import pytest

from tests.helpers import REPO, read_scalars
from trainer import loop
from trainer.flags import parse_config

PINNED = json.loads((Path(__file__).parent / "data" / "loop_losses_before_redesign.json").read_text())
FASHION_MNIST_DIR = "/usr/share/datasets/fashion-mnist"  # Debian's dataset-fashion-mnist (.ci/run installs it).


def logged_losses(tmp_path, recipe: str, *flags: str) -> dict[str, float]:
    config = parse_config([f"--flagfile={REPO / 'configs' / f'{recipe}.flags'}", *flags, "--max_steps=40",
                           "--log_every_steps=5", "--deterministic", "--seed=5", "--validation_split=0.1",
                           f"--run_dir={tmp_path / recipe}", "--progress=log"])
    loop.train(config)
    return {str(step): value for step, value in read_scalars(tmp_path / recipe / "train")["loss/total"]}


@pytest.mark.slow
def test_the_mnist_recipe_logs_the_pinned_losses(tmp_path, mnist_dir):
    losses = logged_losses(tmp_path, "mnist", f"--data_dir={mnist_dir}")
    assert losses == pytest.approx(PINNED["mnist"], rel=1e-5)


@pytest.mark.slow
@pytest.mark.skipif(not os.path.isdir(FASHION_MNIST_DIR), reason="Debian's dataset-fashion-mnist is not installed")
def test_the_fashion_mnist_recipe_logs_the_pinned_losses(tmp_path):
    losses = logged_losses(tmp_path, "fashion_mnist")
    assert losses == pytest.approx(PINNED["fashion_mnist"], rel=1e-5)
