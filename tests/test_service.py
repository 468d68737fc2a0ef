"""data/service.py: probing a tf.data service, and the watch on reads of its batches. The probes run
in a process of their own: a client left retrying a silent address would log for the rest of the run.
(An address where nothing listens: tests/test_hostile_inputs.py, through train.py.)"""

import subprocess
import sys
import threading
import time

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
    watch = service.StallWatch("", 1, 1)
    with watch.waiting():
        pass
    assert watch.thread is None and watch.call_started is None


def watch_a_read_that_never_returns(monkeypatch, probe_finds: str | None, worker_wait: float) -> list[str]:
    """The paragraphs a StallWatch (0.2 s timeout) stops with while a read waits, the service probe
    finding `probe_finds` (None: the service still serves)."""
    monkeypatch.setattr(service, "silence", lambda url, timeout, needs_worker=True: probe_finds)
    paragraphs, stopped = [], threading.Event()
    watch = service.StallWatch("grpc://127.0.0.1:1", 0.2, worker_wait,
                               stop=lambda paragraph: (paragraphs.append(paragraph), stopped.set()))
    with watch.waiting():
        stopped.wait(10)
    watch.close()
    return paragraphs


def test_a_read_stalled_on_a_service_that_no_longer_serves_stops_with_the_paragraph(monkeypatch):
    paragraphs = watch_a_read_that_never_returns(monkeypatch, "no answer within 0.2 s", worker_wait=60)
    assert len(paragraphs) == 1 and "which no longer serves" in paragraphs[0]
    assert "no answer within 0.2 s" in paragraphs[0] and "resumes from the last checkpoint" in paragraphs[0]


def test_a_read_stalled_on_a_stopped_worker_is_said_then_stops_after_the_worker_wait(monkeypatch, caplog):
    started = time.monotonic()
    paragraphs = watch_a_read_that_never_returns(monkeypatch, None, worker_wait=0.5)
    assert time.monotonic() - started >= 0.7
    assert "which still serves: a worker that held batches of this epoch stopped" in caplog.text
    assert len(paragraphs) == 1 and "stopped and did not come back" in paragraphs[0]
    assert "--data_service_worker_wait=0.5" in paragraphs[0] and "same --worker_address" in paragraphs[0]


def test_a_read_that_returns_within_the_timeout_is_left_alone(monkeypatch):
    monkeypatch.setattr(service, "silence", lambda *args, **kwargs: "probed")
    paragraphs = []
    watch = service.StallWatch("grpc://127.0.0.1:1", 0.2, 1, stop=paragraphs.append)
    for _ in range(3):
        with watch.waiting():
            time.sleep(0.1)
    time.sleep(0.3)
    watch.close()
    watch.thread.join(1)
    assert paragraphs == [] and not watch.thread.is_alive()
