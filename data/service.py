"""The tf.data service from the trainer's side: a dispatcher and its workers must answer before
training waits on them (the service's client retries an address that does not answer forever)."""

import threading

import tensorflow as tf

from trainer import errors
from trainer.errors import TapeloopError

START_COMMANDS = ("python scripts/data_service.py --role=dispatcher --port=PORT, then on each worker machine "
                  "python scripts/data_service.py --role=worker --dispatcher=HOST:PORT --port=WORKER_PORT "
                  "--worker_address=WORKER_HOST:WORKER_PORT")


def wait_for_service(url: str, timeout_seconds: float) -> None:
    """Returns once the dispatcher at `url` has registered a one-element dataset and a worker has
    served it; the paragraph if that has not happened within `timeout_seconds`."""
    stages = {"dispatcher": threading.Event(), "worker": threading.Event()}
    failure = []

    def probe():
        try:
            dataset = tf.data.Dataset.range(1)
            dataset_id = tf.data.experimental.service.register_dataset(url, dataset)
            stages["dispatcher"].set()
            served = tf.data.experimental.service.from_dataset_id(
                "parallel_epochs", url, dataset_id, dataset.element_spec)
            next(iter(served))
            stages["worker"].set()
        except Exception as error:  # The client raises many kinds; any of them means no service.
            failure.append(error)
            stages["worker"].set()

    threading.Thread(target=probe, daemon=True).start()  # A client still retrying is left behind on exit.
    if stages["worker"].wait(timeout_seconds) and not failure:
        return
    found = (errors.described(failure[0]) if failure else
             f"the dispatcher answered, but no worker served a batch within {timeout_seconds:g} s"
             if stages["dispatcher"].is_set() else f"no answer within {timeout_seconds:g} s")
    raise TapeloopError(
        stage="data", problem=f"the tf.data service at {url} does not serve batches",
        expected="a dispatcher listening at that address with at least one worker registered", found=found,
        fix=f"start them ({START_COMMANDS}) or correct --data_service; --data_service_timeout=SECONDS waits longer "
            "for a service that is still starting")
