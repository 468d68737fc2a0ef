"""Real data through the scripts: the quick start; train, kill -9, resume, evaluate three ways."""

import json
import os
import signal
import subprocess
import time

import pytest

from tests.helpers import REPO, checkpointed_step, run_script, start_script

pytestmark = pytest.mark.slow
FASHION_MNIST_DIR = "/usr/share/datasets/fashion-mnist"  # Debian's dataset-fashion-mnist (.ci/run installs it).


@pytest.mark.skipif(not os.path.isdir(FASHION_MNIST_DIR), reason="Debian's dataset-fashion-mnist is not installed")
def test_the_quick_start_gives_its_precision_and_time_estimate_first_and_names_the_full_recipe_last(tmp_path):
    result = subprocess.run(["bash", str(REPO / "scripts" / "quickstart.sh"), "--max_steps=24", "--log_every_steps=8",
                             "--progress=log"], env={**os.environ, "RUN_DIR": str(tmp_path / "run")},
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr
    log = result.stderr
    assert "Precision: auto chose " in log
    assert log.index("Precision: auto chose ") < log.index("Time estimate: the remaining 7 of 24 steps") < log.index(
        "Test accuracy")
    assert json.loads((tmp_path / "run" / "results.json").read_text())["precision"]["requested"] == "auto"
    assert result.stdout.splitlines()[-2:] == [
        "Next, the full recipe (about 94% test accuracy; about 8x the training time of this one):",
        "  .venv/bin/python scripts/train.py --flagfile=configs/fashion_mnist.flags --run_dir=runs/fashion_mnist"]


def test_train_killed_and_resumed_on_real_mnist_then_evaluated(tmp_path, mnist_dir):
    run_dir = tmp_path / "run"
    args = ["--dataset=mnist", f"--data_dir={mnist_dir}", "--model_width=16", "--max_steps=300",
            "--checkpoint_every_steps=50", "--log_every_steps=50", "--progress=log", f"--run_dir={run_dir}"]
    first = start_script("train", *args)
    deadline = time.monotonic() + 300
    while checkpointed_step(run_dir) < 100 and first.poll() is None and time.monotonic() < deadline:
        time.sleep(0.5)
    first.send_signal(signal.SIGKILL)
    first.wait()
    killed_at = checkpointed_step(run_dir)
    assert 100 <= killed_at < 300 and not (run_dir / "results.json").exists()

    resumed = run_script("train", *args)
    assert resumed.returncode == 0, resumed.stderr
    assert f"at step {killed_at}." in resumed.stderr
    results = json.loads((run_dir / "results.json").read_text())
    assert results["steps"] == 300
    assert results["test"]["accuracy"] > 0.95

    for weights in ("best", "saved_model"):
        evaluated = run_script("evaluate", f"--run_dir={run_dir}", f"--weights={weights}", "--output=-")
        assert evaluated.returncode == 0, evaluated.stderr
        scores = json.loads(evaluated.stdout)
        assert scores["examples"] == 10000
        assert scores["accuracy"] == pytest.approx(results["test"]["accuracy"], abs=2e-4)
        assert scores["loss"] == pytest.approx(results["test"]["loss"], rel=1e-3)
