"""Starts a tf.data service dispatcher or worker, so that training batches are built on other machines:

  python scripts/data_service.py --role=dispatcher --port=5050
  python scripts/data_service.py --role=worker --dispatcher=HOST:5050 --port=5051 --worker_address=THIS_HOST:5051
  python scripts/train.py ... --data_service=grpc://HOST:5050

It serves until stopped (Ctrl-C or SIGTERM). Workers read the training data at the paths the
training run names, so every worker must reach --data_dir at the same path (BUILD.md).
"""

from trainer import cli  # First: quiets TensorFlow's start-up logging.

import signal
import threading

import tensorflow as tf
from absl import flags

from data import service
from settings.errors import TapeloopError, described

flags.DEFINE_enum("role", None, ("dispatcher", "worker"), "What to start.", required=True)
flags.DEFINE_integer("port", 5050, "The port to serve on (0: any free one, printed).", lower_bound=0,
                     upper_bound=65535)
flags.DEFINE_string("dispatcher", None, "worker: the dispatcher's HOST:PORT.")
flags.DEFINE_string("worker_address", None, "worker: HOST:PORT at which the dispatcher and trainers reach this "
                    "worker (default: localhost and --port, enough on one machine).")
flags.DEFINE_string("work_dir", None, "dispatcher: a folder for its journal, so that a restarted dispatcher "
                    "carries on its jobs (fault_tolerant_mode).")
flags.DEFINE_float("start_timeout", 60.0, "worker: seconds to wait for the dispatcher to register this worker "
                   "before stopping with the paragraph (a dispatcher that is still starting is waited for).",
                   lower_bound=1.0)
flags.register_validator("dispatcher", lambda value: value is None or (":" in value and "://" not in value),
                         "--dispatcher is HOST:PORT, without grpc://")
FLAGS = flags.FLAGS


def start_server():
    """The dispatcher or worker the flags ask for, started."""
    service = tf.data.experimental.service
    if FLAGS.role == "dispatcher":
        return service.DispatchServer(service.DispatcherConfig(
            port=FLAGS.port, work_dir=FLAGS.work_dir, fault_tolerant_mode=bool(FLAGS.work_dir)))
    if not FLAGS.dispatcher:
        raise TapeloopError(stage="flags", problem="--role=worker needs its dispatcher",
                            expected="--dispatcher=HOST:PORT", found="no --dispatcher",
                            fix="pass the HOST:PORT the dispatcher serves on")
    return service.WorkerServer(service.WorkerConfig(
        dispatcher_address=FLAGS.dispatcher, port=FLAGS.port,
        worker_address=FLAGS.worker_address or f"localhost:{FLAGS.port}"))


def wait_for_dispatcher() -> None:
    """A worker's dispatcher must answer within --start_timeout: TensorFlow's worker retries forever,
    holding the interpreter, once it is started."""
    found = service.silence(f"grpc://{FLAGS.dispatcher}", FLAGS.start_timeout, needs_worker=False)
    if found:
        raise TapeloopError(
            stage="distribute", problem=f"the worker's dispatcher {FLAGS.dispatcher} does not answer",
            expected=f"a dispatcher serving there (scripts/data_service.py --role=dispatcher) within "
                     f"--start_timeout={FLAGS.start_timeout:g} s", found=found,
            fix="start the dispatcher first, or correct --dispatcher; --start_timeout=SECONDS waits longer")


def main(argv):
    if FLAGS.role == "worker" and FLAGS.dispatcher:
        wait_for_dispatcher()
    try:
        server = start_server()
    except (tf.errors.OpError, RuntimeError, ValueError) as error:
        raise TapeloopError(stage="distribute", problem=f"the tf.data service {FLAGS.role} did not start",
                            expected=f"port {FLAGS.port} free" + (f" and {FLAGS.dispatcher} reachable"
                                                                   if FLAGS.role == "worker" else ""),
                            found=described(error, 200),
                            fix="pick another --port, or check the dispatcher's address") from None
    address = server.target if FLAGS.role == "dispatcher" else FLAGS.worker_address or f"localhost:{FLAGS.port}"
    print(f"tf.data service {FLAGS.role} serving at {address}" + (
        f"; train with --data_service={server.target}" if FLAGS.role == "dispatcher" else ""), flush=True)
    stopped = threading.Event()
    for number in (signal.SIGINT, signal.SIGTERM):
        signal.signal(number, lambda *_: stopped.set())
    stopped.wait()
    print(f"tf.data service {FLAGS.role} stopped.", flush=True)


if __name__ == "__main__":
    cli.run(main)
