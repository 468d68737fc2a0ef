"""--data_service: batches built by tf.data service workers (a dispatcher and workers on 127.0.0.1)."""

import json
import re
import subprocess
import time

import numpy as np
import pytest
import tensorflow as tf

from data import pipeline
from tests.data_service_processes import DataServiceProcesses
from tests.forked_scripts import ForkedProcess
from tests.helpers import SMALL_RUN, make_config, start_script

SERVICE = tf.data.experimental.service


@pytest.fixture(scope="module")
def dispatcher_with_two_workers():
    dispatcher = SERVICE.DispatchServer(SERVICE.DispatcherConfig(port=0))
    address = dispatcher.target.removeprefix("grpc://")
    workers = [SERVICE.WorkerServer(SERVICE.WorkerConfig(dispatcher_address=address)) for _ in range(2)]
    yield dispatcher.target
    for server in (*workers, dispatcher):
        server.stop()


def batch_weights(dataset) -> list[tuple]:
    return [tuple(batch[2].numpy().astype(int)) for batch in dataset]


@pytest.mark.slow  # Starts a dispatcher and two workers.
@pytest.mark.parametrize("flags", [(), ("--dataset=image_folder", "--image_size=28", "--channels=1",
                                        "--max_memory_gb=0.001")])
def test_service_workers_build_each_batch_of_the_epoch_exactly_once(dispatcher_with_two_workers, synthetic_shards,
                                                                   flags, monkeypatch, tmp_path):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    data_dir = (f"--data_dir={synthetic_shards / 'images'}",) if flags else ()
    config = make_config(tmp_path, "--batch_size=64", "--augment_shift=0.1", *flags, *data_dir)
    data = pipeline.prepare_data(config)
    weights = np.arange(len(data.train[1]), dtype=np.float32)  # Each example's weight names it.
    local = batch_weights(pipeline.train_batches(data.train, weights, data.spec, config, epoch=0, skip_batches=5))
    served_config = make_config(tmp_path, "--batch_size=64", "--augment_shift=0.1", *flags, *data_dir,
                                f"--data_service={dispatcher_with_two_workers}")
    served = batch_weights(pipeline.train_batches(data.train, weights, data.spec, served_config, epoch=0,
                                                  skip_batches=5))
    assert sorted(served) == sorted(local) and len(served) == len(data.train[1]) // 64 - 5


def test_a_data_service_url_is_checked_and_tfrecord_is_refused_with_the_way_out():
    with pytest.raises(Exception, match="grpc://HOST:PORT"):
        make_config("/tmp/unused", "--data_service=localhost:5050")
    with pytest.raises(Exception, match="train from the image folder the shards were made from"):
        make_config("/tmp/unused", "--data_service=grpc://localhost:5050", "--dataset=tfrecord")


def wait_for_line(path, text: str, process: ForkedProcess, seconds: float) -> None:
    deadline = time.monotonic() + seconds
    while text not in path.read_text():
        assert process.poll() is None and time.monotonic() < deadline, path.read_text()[-3000:]
        time.sleep(0.2)


@pytest.mark.slow
def test_a_worker_killed_mid_epoch_is_waited_for_said_and_the_run_finishes_once_it_is_back(tmp_path):
    """Two workers started by data_service.py; one killed mid-epoch. TensorFlow's client waits for
    it at its address: the run says so, the worker restarted there, the run trains every step."""
    service = DataServiceProcesses(workers=2)
    run_dir, log = tmp_path / "run", tmp_path / "train.log"
    try:
        training = start_script("train", *SMALL_RUN, "--epochs=2", f"--run_dir={run_dir}",
                                f"--data_service={service.url}", "--data_service_timeout=2", stdout=subprocess.PIPE,
                                stderr=log)
        wait_for_line(log, "epoch 2 step 30/56", training, 120)
        service.kill("worker1")
        wait_for_line(log, "which still serves: a worker that held batches of this epoch stopped", training, 60)
        service.start("worker1")
        stdout, _ = training.communicate(timeout=120)
        assert training.returncode == 0, log.read_text()[-3000:]
        assert "test accuracy" in stdout
        assert json.loads((run_dir / "results.json").read_text())["steps"] == 56
        lost = re.search(r"Epoch \d: the tf.data service ended the epoch after (\d+) of its batches, (\d+) short",
                         log.read_text())
        if lost:  # The batches the killed worker held when it died (it may have held none).
            assert int(lost[1]) + int(lost[2]) == 28 and "built again" in log.read_text()
        for code, output in service.stop():
            assert code == 0 and "stopped." in output
    finally:
        training.kill()
        service.kill_all()
