"""The tf.data service from the trainer's side: a dispatcher (and a worker) must answer before
anything waits on them, since the service's client retries an address that does not answer forever."""

import contextlib
import os
import sys
import threading
import time

import tensorflow as tf

from settings import errors
from settings.errors import TapeloopError

START_COMMANDS = ("python scripts/data_service.py --role=dispatcher --port=PORT, then on each worker machine "
                  "python scripts/data_service.py --role=worker --dispatcher=HOST:PORT --port=WORKER_PORT "
                  "--worker_address=WORKER_HOST:WORKER_PORT")


def silence(url: str, timeout_seconds: float, needs_worker: bool = True) -> str | None:
    """None once the dispatcher at `url` has registered a one-element dataset (and, if `needs_worker`,
    a worker has served it); else, after `timeout_seconds`, what was found instead."""
    stages = {"dispatcher": threading.Event(), "done": threading.Event()}
    failure = []

    def probe():
        try:
            dataset = tf.data.Dataset.range(1)
            dataset_id = tf.data.experimental.service.register_dataset(url, dataset)
            stages["dispatcher"].set()
            if needs_worker:
                next(iter(tf.data.experimental.service.from_dataset_id(
                    "parallel_epochs", url, dataset_id, dataset.element_spec)))
        except Exception as error:  # The client raises many kinds; any of them means no service.
            failure.append(error)
        stages["done"].set()

    threading.Thread(target=probe, daemon=True).start()  # A client still retrying is left behind on exit.
    if stages["done"].wait(timeout_seconds) and not failure:
        return None
    return (errors.described(failure[0]) if failure else
            f"the dispatcher answered, but no worker served a batch within {timeout_seconds:g} s"
            if stages["dispatcher"].is_set() else f"no answer within {timeout_seconds:g} s")


def wait_for_service(url: str, timeout_seconds: float) -> None:
    """Returns once the service at `url` serves batches; the paragraph after `timeout_seconds`."""
    found = silence(url, timeout_seconds)
    if found:
        raise TapeloopError(
            stage="data", problem=f"the tf.data service at {url} does not serve batches",
            expected="a dispatcher listening at that address with at least one worker registered", found=found,
            fix=f"start them ({START_COMMANDS}) or correct --data_service; --data_service_timeout=SECONDS waits "
                "longer for a service that is still starting")


class StallWatch:
    """Guards the calls that read training batches from the service (`with watch.waiting():`): one
    that has waited `timeout_seconds` has the service probed, and if it no longer serves (its
    dispatcher or its last worker died), the process stops with the paragraph, since a read from a
    dead service never returns. The run keeps its last checkpoint, from which a rerun resumes.
    Without a service (`url` empty) it watches nothing."""

    def __init__(self, url: str, timeout_seconds: float):
        self.url, self.timeout_seconds = url, timeout_seconds
        self.call_started: float | None = None
        self.thread: threading.Thread | None = None

    @contextlib.contextmanager
    def waiting(self):
        if not self.url:
            yield
            return
        if self.thread is None:
            self.thread = threading.Thread(target=self._watch, daemon=True)
            self.thread.start()
        self.call_started = time.monotonic()
        try:
            yield
        finally:
            self.call_started = None

    def _watch(self) -> None:
        while True:
            time.sleep(1)
            started = self.call_started
            if started is None or time.monotonic() - started < self.timeout_seconds:
                continue
            found = silence(self.url, self.timeout_seconds)
            if found is None or self.call_started != started:  # Serving (a slow step), or the call returned.
                continue
            error = TapeloopError(
                stage="data", problem=f"training waited over {self.timeout_seconds:g} s for a batch from the "
                f"tf.data service at {self.url}, which no longer serves", expected="the dispatcher and at least one "
                "worker running until training ends", found=found,
                fix="restart the dispatcher (with --work_dir it carries on its jobs) and the workers, then rerun the "
                    "training command: it resumes from the last checkpoint")
            sys.stdout.flush()
            print(error.paragraph(), file=sys.stderr, flush=True)
            os._exit(1)  # The main thread is blocked inside TensorFlow, where no exception reaches it.
