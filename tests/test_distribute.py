"""Strategies through the real entry points (a process can split its CPU or join a cluster only
at start-up), plus the pieces that can be checked in this process."""

import json
import os
import signal
import subprocess
import time
import types

import numpy as np
import pytest
import tensorflow as tf

from tests.forked_scripts import ForkedProcess
from tests.helpers import (assert_one_paragraph_error, checkpoint_values, checkpointed_step, free_ports, make_config,
                           read_scalars, run_script, start_script)
from trainer import distribute
from settings.errors import TapeloopError

SMALL_MLP = ("--dataset=synthetic", "--model=mlp", "--model_width=32", "--dropout=0", "--batch_size=64",
             "--log_every_steps=4", "--progress=log", "--mixed_precision=none")  # Float32 on every CPU kind.


def fake_strategy(task_type, task_id, cluster):
    resolver = types.SimpleNamespace(task_type=task_type, task_id=task_id,
                                     cluster_spec=lambda: tf.train.ClusterSpec(cluster))
    return types.SimpleNamespace(cluster_resolver=resolver)


def test_the_chief_or_else_worker_0_writes_and_a_single_process_always_does():
    workers = {"worker": ["a:1", "b:2"]}
    assert distribute.is_chief(tf.distribute.get_strategy())
    assert distribute.is_chief(fake_strategy("worker", 0, workers))
    assert not distribute.is_chief(fake_strategy("worker", 1, workers))
    with_chief = {"chief": ["c:3"], **workers}
    assert distribute.is_chief(fake_strategy("chief", 0, with_chief))
    assert not distribute.is_chief(fake_strategy("worker", 0, with_chief))


ABORTED = ("{{function_node __wrapped__CollectiveReduceV2_device_/job:worker/replica:0/task:0/device:CPU:0}} "
           "Collective ops is aborted by: Error reported from /job:worker/task:1: The following tasks are unhealthy "
           "(stopped sending heartbeats):\n/job:worker/replica:0/task:1\nThe tasks have crashed. Check the task logs."
           "\nThe error could be from a previous operation. Restart your program to reset. [Op:CollectiveReduceV2]")


def test_a_dead_peer_is_the_paragraph_naming_it_and_the_checkpoint_to_resume_from(tmp_path):
    cluster = fake_strategy("worker", 0, {"worker": ["a:1", "b:2"]})
    with pytest.raises(TapeloopError) as error:
        with distribute.peer_loss_explained(cluster, str(tmp_path)):
            raise tf.errors.UnavailableError(None, None, ABORTED)
    paragraph = error.value.paragraph()
    assert paragraph.startswith("tapeloop: error: [distribute] another worker of the multi_worker cluster stopped")
    assert ("found UnavailableError: Collective ops is aborted by: Error reported from /job:worker/task:1: The "
            "following tasks are unhealthy (stopped sending heartbeats): /job:worker/replica:0/task:1.") in paragraph
    assert "resume from the start (the chief had saved no checkpoint yet)" in paragraph
    with pytest.raises(tf.errors.UnavailableError):  # Not a cluster: not a lost peer.
        with distribute.peer_loss_explained(tf.distribute.get_strategy(), str(tmp_path)):
            raise tf.errors.UnavailableError(None, None, ABORTED)


def test_multi_worker_without_tf_config_says_how_to_set_it(tmp_path, monkeypatch):
    monkeypatch.delenv("TF_CONFIG", raising=False)
    with pytest.raises(TapeloopError) as error:
        distribute.make_strategy(make_config(tmp_path, "--strategy=multi_worker"))
    message = error.value.paragraph()
    assert "[distribute]" in message and "TF_CONFIG" in message and '"worker"' in message


def test_splitting_the_cpu_after_tensorflow_started_is_explained():
    tf.constant(1.0) + 1.0  # The runtime is up.
    with pytest.raises(TapeloopError, match="before anything else runs"):
        distribute.split_cpu(len(tf.config.list_logical_devices("CPU")) + 1)


@pytest.mark.slow
def test_a_global_batch_that_does_not_split_over_the_replicas_is_refused(tmp_path):
    result = run_script("train", *SMALL_MLP, "--strategy=mirrored", "--cpu_devices=2", "--batch_size=63",
                        f"--run_dir={tmp_path / 'run'}")
    assert result.returncode == 1 and "[distribute]" in result.stderr and "--batch_size=62" in result.stderr
    assert not (tmp_path / "run").exists()


@pytest.mark.slow
def test_mirrored_on_two_cpu_devices_trains_like_one_device_on_the_same_global_batch(tmp_path):
    for strategy in ("default", "mirrored"):
        result = run_script("train", *SMALL_MLP, "--epochs=2", "--cpu_devices=2", f"--strategy={strategy}",
                            f"--run_dir={tmp_path / strategy}")
        assert result.returncode == 0, result.stderr
    single = read_scalars(tmp_path / "default" / "train")
    mirrored = read_scalars(tmp_path / "mirrored" / "train")
    for tag in ("loss/total", "accuracy", "gradients/global_norm"):
        assert [step for step, _ in mirrored[tag]] == [step for step, _ in single[tag]]
        np.testing.assert_allclose([value for _, value in mirrored[tag]], [value for _, value in single[tag]],
                                   rtol=1e-4, err_msg=tag)
    reader = tf.train.load_checkpoint(str(tmp_path / "mirrored" / "checkpoints"))
    single_reader = tf.train.load_checkpoint(str(tmp_path / "default" / "checkpoints"))
    for name, _ in tf.train.list_variables(str(tmp_path / "default" / "checkpoints")):
        if name.startswith("model/"):
            np.testing.assert_allclose(reader.get_tensor(name), single_reader.get_tensor(name), rtol=1e-4,
                                       atol=1e-6, err_msg=name)


def start_workers(run_dir, scratch, *flags: str) -> list[ForkedProcess]:
    """Two multi_worker processes on 127.0.0.1, worker 0 the chief."""
    cluster = {"worker": [f"127.0.0.1:{port}" for port in free_ports(2)]}
    workers = []
    for index in range(2):
        env = {**os.environ, "TMPDIR": str(scratch),
               "TF_CONFIG": json.dumps({"cluster": cluster, "task": {"type": "worker", "index": index}})}
        workers.append(start_script("train", *SMALL_MLP, "--strategy=multi_worker", f"--run_dir={run_dir}", *flags,
                                    env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE))
    return workers


def finish(workers, timeout=300) -> list[tuple[int, str, str]]:
    return [(worker.wait(timeout), *worker.communicate()) for worker in workers]


CLUSTER_RUN = ("--epochs=4", "--checkpoint_every_steps=5")  # 112 steps.


@pytest.fixture(scope="module")
def uninterrupted_cluster_run(tmp_path_factory):
    """Two workers training CLUSTER_RUN to the end: (run directory, the other worker's scratch, outcomes)."""
    root = tmp_path_factory.mktemp("cluster")
    (root / "scratch").mkdir()
    return root / "run", root / "scratch", finish(start_workers(root / "run", root / "scratch", *CLUSTER_RUN))


@pytest.mark.slow
@pytest.mark.xdist_group("cluster")  # One uninterrupted cluster run for both tests.
def test_two_workers_train_checkpoint_and_evaluate_with_only_the_chief_writing(uninterrupted_cluster_run):
    run_dir, scratch, outcomes = uninterrupted_cluster_run
    for code, _, stderr in outcomes:
        assert code == 0, stderr
    assert "worker finished at step 112" in outcomes[1][1]
    results = json.loads((run_dir / "results.json").read_text())
    assert results["steps"] == 112 and results["test"]["accuracy"] >= 0.99
    assert tf.train.latest_checkpoint(str(run_dir / "checkpoints")).endswith("ckpt-112")
    assert not list(scratch.iterdir())  # The other worker's scratch directory is gone.
    evaluated = run_script("evaluate", f"--run_dir={run_dir}", "--output=-")
    assert evaluated.returncode == 0, evaluated.stderr
    assert json.loads(evaluated.stdout)["accuracy"] == pytest.approx(results["test"]["accuracy"])


@pytest.mark.slow
@pytest.mark.xdist_group("cluster")
def test_a_worker_killed_mid_run_stops_the_chief_with_the_paragraph_and_a_restart_ends_as_if_uninterrupted(
        tmp_path, uninterrupted_cluster_run):
    run_dir, scratch = tmp_path / "run", tmp_path / "scratch"
    scratch.mkdir()
    workers = start_workers(run_dir, scratch, *CLUSTER_RUN)
    deadline = time.monotonic() + 240
    while checkpointed_step(run_dir) < 30:
        assert time.monotonic() < deadline and all(worker.poll() is None for worker in workers)
        time.sleep(0.2)
    workers[1].send_signal(signal.SIGKILL)
    killed_at = time.monotonic()
    chief = finish(workers)[0]
    assert time.monotonic() - killed_at < 90
    saved = checkpointed_step(run_dir)
    assert_one_paragraph_error(subprocess.CompletedProcess([], chief[0], "", chief[2]), 1, "[distribute]",
                               "another worker of the multi_worker cluster stopped", "found UnavailableError",
                               f"ckpt-{saved} (step {saved})")
    assert 30 <= saved < 112

    for code, _, stderr in finish(start_workers(run_dir, scratch, *CLUSTER_RUN)):
        assert code == 0, stderr
        assert f"at step {saved}" in stderr and "Resuming from" in stderr
    uninterrupted = uninterrupted_cluster_run[0]
    whole, resumed = (dict(read_scalars(folder / "train")["loss/total"]) for folder in (uninterrupted, run_dir))
    assert max(resumed) == 112 and {step for step in resumed if step > saved} == {step for step in whole if step > saved}
    for step in (step for step in whole if step > saved):
        assert resumed[step] == pytest.approx(whole[step], rel=1e-5), step
    whole_values, resumed_values = (checkpoint_values(folder / "checkpoints", ("model/",))
                                    for folder in (uninterrupted, run_dir))
    for name, value in whole_values.items():
        np.testing.assert_allclose(resumed_values[name], value, rtol=1e-5, atol=1e-6, err_msg=name)


REPLICA_STEP = """
import json
import keras
import numpy as np
import tensorflow as tf
tf.config.set_logical_device_configuration(tf.config.list_physical_devices("CPU")[0],
                                           [tf.config.LogicalDeviceConfiguration()] * 2)
from models import registry
from trainer import losses, steps
from trainer.checks import StageChecks

loss = losses.WeightedLoss({"cross_entropy": 1.0, "l2": 1e-3}, 10)
checks = StageChecks("standard", (28, 28, 1), (0.0, 1.0), 10)
rng = np.random.default_rng(0)
batch = (rng.uniform(size=(16, 28, 28, 1)).astype(np.float32), rng.integers(0, 10, 16).astype(np.int32),
         rng.uniform(0.5, 1.5, 16).astype(np.float32))

def train_one_step(strategy):
    with strategy.scope():
        keras.utils.set_random_seed(0)
        model = registry.build_model("mlp", (28, 28, 1), 10, width=16, depth=2, dropout=0.0)
        optimizer = keras.optimizers.SGD(0.1)
        optimizer.build(model.trainable_variables)
        metrics = steps.make_metrics(loss, with_gradients=True)
    dataset = strategy.experimental_distribute_dataset(tf.data.Dataset.from_tensors(batch))
    steps.make_train_loop(model, optimizer, loss, metrics, checks, clip_grad_norm=0.5, strategy=strategy)(iter(dataset), 1)
    return [variable.numpy() for variable in model.trainable_variables], steps.read_and_reset(metrics)

one_device, one_metrics = train_one_step(tf.distribute.OneDeviceStrategy("/cpu:0"))
mirrored, mirrored_metrics = train_one_step(tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"]))
print(json.dumps({"largest_difference": max(float(np.abs(a - b).max()) for a, b in zip(one_device, mirrored)),
                  "one_device": one_metrics, "mirrored": mirrored_metrics}))
"""


@pytest.mark.slow  # A Python of its own (two logical CPUs must exist before the runtime starts): 7 s.
def test_one_step_on_two_replicas_updates_and_logs_like_one_device_on_the_whole_batch():
    """The replica arithmetic alone: per-replica loss shares, gradients summed before clipping,
    metrics summed when read; weighted examples, an l2 term and clipping all in play."""
    import json
    import subprocess
    import sys

    from tests.helpers import REPO

    child = subprocess.run([sys.executable, "-c", REPLICA_STEP], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert child.returncode == 0, child.stderr
    result = json.loads(child.stdout.strip().splitlines()[-1])
    assert result["largest_difference"] < 1e-6
    for tag in ("loss/total", "loss/cross_entropy", "loss/l2", "gradients/global_norm", "accuracy"):
        assert result["mirrored"][tag] == pytest.approx(result["one_device"][tag], rel=1e-5)
