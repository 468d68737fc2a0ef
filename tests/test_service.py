"""data/service.py: probing a tf.data service, and the watch on reads of its batches. The probes run
in a process of their own: a client left retrying a silent address would log for the rest of the run.
(An address where nothing listens: tests/test_hostile_inputs.py, through train.py.)"""

import subprocess
import sys

import pytest

from data import service
from tests.helpers import REPO

PROBE = """
import sys, tensorflow as tf
from data import service
from settings.errors import TapeloopError
target = sys.argv[1]
if target == "dispatcher":
    dispatcher = tf.data.experimental.service.DispatchServer(tf.data.experimental.service.DispatcherConfig(port=0))
    target = dispatcher.target
    print("registers:", service.silence(target, 1, needs_worker=False))
try:
    service.wait_for_service(target, 1)
except TapeloopError as error:
    print("refused:", error.paragraph())
"""


def probe(target: str) -> str:
    return subprocess.run([sys.executable, "-c", PROBE, target], capture_output=True, text=True, cwd=REPO,
                          timeout=120).stdout


@pytest.mark.slow  # A process of its own, which starts TensorFlow.
def test_a_dispatcher_without_workers_registers_but_training_refuses_it():
    output = probe("dispatcher")
    assert "registers: None" in output and "no worker served a batch within 1 s" in output
    assert "--data_service_timeout" in output


def test_without_a_service_the_watch_watches_nothing():
    watch = service.StallWatch("", 1)
    with watch.waiting():
        pass
    assert watch.thread is None and watch.call_started is None
