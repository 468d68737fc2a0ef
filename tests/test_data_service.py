"""--data_service: batches built by tf.data service workers (a dispatcher and workers on 127.0.0.1)."""

import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf

from data import pipeline
from tests.helpers import REPO, SMALL_RUN, free_ports, make_config, run_script

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


@pytest.mark.slow
def test_train_py_trains_through_a_dispatcher_and_a_worker_started_by_data_service_py(tmp_path):
    dispatcher_port, worker_port = free_ports(2)
    servers = [subprocess.Popen([sys.executable, str(REPO / "scripts" / "data_service.py"), *args], cwd=REPO,
                                stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
               for args in (["--role=dispatcher", f"--port={dispatcher_port}"],
                            ["--role=worker", f"--dispatcher=127.0.0.1:{dispatcher_port}", f"--port={worker_port}",
                             f"--worker_address=127.0.0.1:{worker_port}"])]
    try:
        for server in servers:
            assert "serving at" in server.stdout.readline()
        trained = run_script("train", *SMALL_RUN, "--epochs=1", f"--data_service=grpc://127.0.0.1:{dispatcher_port}",
                             f"--run_dir={tmp_path / 'run'}")
        assert trained.returncode == 0, trained.stderr
        assert "test accuracy" in trained.stdout
    finally:
        for server in servers:
            server.terminate()
        for server in servers:
            assert server.wait(timeout=60) == 0
            assert "stopped." in server.stdout.read()
