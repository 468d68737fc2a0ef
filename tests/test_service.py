"""data/service.py: probing a tf.data service, and the watch on reads of its batches."""

import socket

import pytest
import tensorflow as tf

from data import service
from settings.errors import TapeloopError

SERVICE = tf.data.experimental.service


def unused_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_an_address_where_nothing_listens_is_silent_for_the_timeout():
    assert service.silence(f"grpc://127.0.0.1:{unused_port()}", 1) == "no answer within 1 s"


def test_a_dispatcher_without_workers_answers_but_serves_nothing_and_training_refuses_it():
    dispatcher = SERVICE.DispatchServer(SERVICE.DispatcherConfig(port=0))
    try:
        assert service.silence(dispatcher.target, 1, needs_worker=False) is None
        with pytest.raises(TapeloopError) as raised:
            service.wait_for_service(dispatcher.target, 1)
        assert "no worker served a batch within 1 s" in raised.value.found
        assert "--role=dispatcher" in raised.value.fix and "--data_service_timeout" in raised.value.fix
    finally:
        dispatcher.stop()


def test_without_a_service_the_watch_watches_nothing():
    watch = service.StallWatch("", 1)
    with watch.waiting():
        pass
    assert watch.thread is None and watch.call_started is None
