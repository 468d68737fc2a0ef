"""A short run read back through the real TensorBoard program's HTTP data API, as a user's browser would."""

import json
import re
import subprocess
import sys
import time
import urllib.request

import pytest

from tests.helpers import make_config
from trainer import loop

pytestmark = pytest.mark.slow  # Every test here runs a script or trains a model.

CONTRACT_TRAIN_TAGS = {"loss/total", "loss/cross_entropy", "learning_rate", "accuracy", "gradients/global_norm",
                       "perf/examples_per_sec"}
CONTRACT_EVAL_TAGS = {"loss/total", "accuracy", "balanced_accuracy"}


@pytest.fixture
def tensorboard(tmp_path):
    """Serves tmp_path/logs on a free loopback port; yields a function that fetches its JSON."""
    process = subprocess.Popen(
        [sys.executable, "-m", "tensorboard.main", f"--logdir={tmp_path / 'logs'}", "--host=127.0.0.1",
         "--port=0", "--load_fast=false", "--reload_interval=1"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        address = None
        deadline = time.monotonic() + 90
        while address is None and time.monotonic() < deadline:
            found = re.search(r"(http://127\.0\.0\.1:\d+)/", process.stdout.readline())
            address = found and found.group(1)
        assert address, "TensorBoard did not start"

        def fetch(path, body=None):
            data = json.dumps(body).encode() if body is not None else None
            request = urllib.request.Request(address + path, data=data, headers={"Content-Type": "application/json"})
            with urllib.request.urlopen(request, timeout=30) as response:
                return json.loads(response.read())

        yield fetch
    finally:
        process.terminate()
        process.wait(timeout=30)


def wait_for(fetch, path, ready, seconds=60):
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        answer = fetch(path)
        if ready(answer):
            return answer
        time.sleep(1)
    raise AssertionError(f"{path} never showed the run: {answer}")


def test_tensorboard_serves_the_contract_scalars_images_and_hparams_of_a_run(tmp_path, tensorboard):
    results = loop.train(make_config(tmp_path / "logs" / "run", "--epochs=2", "--histogram_every_steps=10"))
    fetch = tensorboard
    tags = wait_for(fetch, "/data/plugin/scalars/tags",
                    lambda answer: {"run", "run/train", "run/eval"} <= set(answer))
    assert CONTRACT_TRAIN_TAGS <= set(tags["run/train"])
    assert CONTRACT_EVAL_TAGS | {"recall/pattern_0", "precision/pattern_9"} <= set(tags["run/eval"])
    for split in ("eval", "test"):
        for metric in ("accuracy", "balanced_accuracy", "loss"):
            [[_, step, value]] = fetch(f"/data/plugin/scalars/scalars?run=run&tag=results/{split}_{metric}")
            assert step == results["steps"] and value == pytest.approx(results[split][metric], rel=1e-6)

    images = fetch("/data/plugin/images/tags")
    assert "inputs" in images["run/train"] and {"confusion_matrix", "misclassified"} <= set(images["run/eval"])
    histograms = fetch("/data/plugin/histograms/tags")
    assert any(tag.startswith("gradients/") for tag in histograms["run/train"])
    assert any(tag.startswith("weights/") for tag in histograms["run/train"])

    groups = fetch("/data/plugin/hparams/session_groups", {
        "experimentName": "", "allowedStatuses": ["STATUS_UNKNOWN"], "colParams": [], "startIndex": 0,
        "sliceSize": 10})["sessionGroups"]
    assert [group["name"] for group in groups] == ["run"]
    hparams = groups[0]["hparams"]
    assert hparams["dataset"] == "synthetic" and hparams["model"] == "cnn" and hparams["learning_rate"] == 0.001
    assert hparams["batch_size"] == 64 and hparams["lr_schedule"] == "constant"
