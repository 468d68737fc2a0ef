"""The tf.data service from the trainer's side: a dispatcher (and a worker) must answer before
anything waits on them, since the service's client retries an address that does not answer forever."""

import contextlib
import os
import sys
import threading
import time

import tensorflow as tf
from absl import logging

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
    """Guards the calls that read training batches from the service (`with watch.waiting():`), since
    a read from a dead service never returns. A call that has waited `timeout_seconds` has the
    service probed: if it no longer serves (its dispatcher or its last worker died), the process
    stops with the paragraph. If it still serves, a worker that held batches of this epoch stopped:
    TensorFlow's client waits for it to come back at its address, so the run says so, and stops with
    the paragraph once `worker_wait_seconds` more have passed. The run keeps its last checkpoint,
    from which a rerun resumes. Without a service (`url` empty) it watches nothing. `stop(paragraph)`
    ends the process (tests pass their own)."""

    def __init__(self, url: str, timeout_seconds: float, worker_wait_seconds: float, stop=None):
        self.url, self.timeout_seconds, self.worker_wait_seconds = url, timeout_seconds, worker_wait_seconds
        self.stop = stop or exit_with
        self.call_started: float | None = None
        self.thread: threading.Thread | None = None
        self.closed = threading.Event()

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

    def close(self) -> None:
        """Ends the watch (its thread, once started, polls until then)."""
        self.closed.set()

    def _watch(self) -> None:
        warned_for = None  # The stalled call whose service was found still serving.
        while not self.closed.wait(min(1.0, self.timeout_seconds / 4)):
            started = self.call_started
            if started is None:
                continue
            waited = time.monotonic() - started
            deadline = waited >= self.timeout_seconds + self.worker_wait_seconds
            if waited < self.timeout_seconds or (warned_for == started and not deadline):
                continue
            found = silence(self.url, self.timeout_seconds)
            if self.call_started != started:  # The call returned meanwhile.
                continue
            if found is not None:
                self.stop(self.no_longer_serves(found).paragraph())
                return
            if deadline:
                self.stop(self.worker_did_not_return(time.monotonic() - started).paragraph())
                return
            warned_for = started
            logging.warning(
                "Training has waited %.0f s for a batch from the tf.data service at %s, which still serves: a "
                "worker that held batches of this epoch stopped (or builds one that slowly). TensorFlow's service "
                "waits for it to come back at its --worker_address: restart it there (the batches it held are "
                "lost: the service visits each batch at most once). Waiting up to --data_service_worker_wait=%g s "
                "more.", waited, self.url, self.worker_wait_seconds)

    def no_longer_serves(self, found: str) -> TapeloopError:
        return TapeloopError(
            stage="data", problem=f"training waited over {self.timeout_seconds:g} s for a batch from the tf.data "
            f"service at {self.url}, which no longer serves", expected="the dispatcher and at least one worker "
            "running until training ends", found=found,
            fix="restart the dispatcher (with --work_dir it carries on its jobs) and the workers, then rerun the "
                "training command: it resumes from the last checkpoint")

    def worker_did_not_return(self, waited: float) -> TapeloopError:
        return TapeloopError(
            stage="data", problem=f"training waited {waited:.0f} s for a batch from the tf.data service at "
            f"{self.url}: a worker that held batches of this epoch stopped and did not come back",
            expected=f"the stopped worker restarted at its --worker_address within "
                     f"--data_service_worker_wait={self.worker_wait_seconds:g} s (TensorFlow's service waits for "
                     "it; the other workers do not take over its part of the epoch)",
            found="the service still serves (its dispatcher and another worker answer), but this run's reads "
                  "wait on the stopped worker",
            fix="restart that worker (scripts/data_service.py --role=worker with the same --worker_address), then "
                "rerun the training command: it resumes from the last checkpoint with the workers that are up; "
                "--data_service_worker_wait=SECONDS waits longer")


def exit_with(paragraph: str) -> None:
    """Prints the paragraph and ends the process: the main thread is blocked inside TensorFlow,
    where no exception reaches it."""
    sys.stdout.flush()
    print(paragraph, file=sys.stderr, flush=True)
    os._exit(1)
