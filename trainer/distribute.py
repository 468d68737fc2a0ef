"""The tf.distribute strategy of a run (--strategy, --cpu_devices) and which process writes.

Every process of a run executes the same loop. The chief (the only process of
a single-machine run) writes the run directory; other workers of a
multi_worker run write into a private scratch directory, removed when they
finish, because saving can involve collective ops that every worker must join.
"""

import contextlib
import json
import os
import re
import shutil
import tempfile

import tensorflow as tf

from settings.config import TrainConfig
from settings.errors import TapeloopError
from trainer import checkpoints


def make_strategy(config: TrainConfig) -> tf.distribute.Strategy:
    """Builds the --strategy; call it first, before TensorFlow runs any op.

    default: no distribution (TensorFlow's default strategy, one device);
    one_device: the first GPU, else the CPU; mirrored: every local GPU, else
    every logical CPU (--cpu_devices); multi_worker: every worker in TF_CONFIG;
    tpu: the TPU named by --tpu (empty: the local or Cloud TPU VM's).
    """
    if config.cpu_devices > 1:
        split_cpu(config.cpu_devices)
    if config.strategy == "default":
        return tf.distribute.get_strategy()
    if config.strategy == "multi_worker":  # Before anything (listing devices too) starts the runtime.
        _check_tf_config()
        return tf.distribute.MultiWorkerMirroredStrategy()
    gpus = [device.name for device in tf.config.list_logical_devices("GPU")]
    if config.strategy == "one_device":
        return tf.distribute.OneDeviceStrategy(gpus[0] if gpus else "/cpu:0")
    if config.strategy == "mirrored":
        return tf.distribute.MirroredStrategy(gpus or [device.name for device in tf.config.list_logical_devices("CPU")])
    resolver = tf.distribute.cluster_resolver.TPUClusterResolver(tpu=config.tpu)
    tf.config.experimental_connect_to_cluster(resolver)
    tf.tpu.experimental.initialize_tpu_system(resolver)
    return tf.distribute.TPUStrategy(resolver)


def split_cpu(count: int) -> None:
    """Splits the CPU into `count` logical devices, so mirrored training runs without GPUs."""
    cpu = tf.config.list_physical_devices("CPU")[0]
    if len(tf.config.get_logical_device_configuration(cpu) or ()) == count:
        return
    try:
        tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * count)
    except RuntimeError:
        raise TapeloopError(
            stage="distribute", problem=f"cannot split the CPU into --cpu_devices={count} logical devices",
            expected="the split before TensorFlow starts its runtime",
            found="TensorFlow had already run ops in this process",
            fix="build the strategy (trainer.distribute.make_strategy) before anything else runs") from None


def _check_tf_config() -> None:
    try:
        cluster = json.loads(os.environ["TF_CONFIG"])["cluster"]
    except (KeyError, ValueError, TypeError):
        raise TapeloopError(
            stage="distribute", problem="--strategy=multi_worker needs the cluster in TF_CONFIG",
            expected='TF_CONFIG=\'{"cluster": {"worker": ["host1:port", "host2:port"]}, '
            '"task": {"type": "worker", "index": 0}}\' on each machine, index set per machine',
            found=f"TF_CONFIG={os.environ.get('TF_CONFIG')!r}",
            fix="export TF_CONFIG as above (BUILD.md, Distributed training)") from None
    if not cluster.get("worker"):
        raise TapeloopError(
            stage="distribute", problem="TF_CONFIG lists no workers", expected='a "worker" list in "cluster"',
            found=json.dumps(cluster), fix="list every worker's host:port under cluster.worker")


def is_chief(strategy: tf.distribute.Strategy) -> bool:
    """Whether this process writes the run directory: the chief, else worker 0; any single process."""
    resolver = getattr(strategy, "cluster_resolver", None)
    if resolver is None or not resolver.task_type or resolver.task_type == "chief":
        return True
    return (resolver.task_type == "worker" and resolver.task_id == 0
            and "chief" not in resolver.cluster_spec().as_dict())


@contextlib.contextmanager
def worker_scratch(strategy: tf.distribute.Strategy):
    """A private directory for a non-chief worker's writes, removed afterwards."""
    scratch = tempfile.mkdtemp(prefix=f"tapeloop-worker{strategy.cluster_resolver.task_id}-")
    try:
        yield scratch
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


@contextlib.contextmanager
def peer_loss_explained(strategy: tf.distribute.Strategy, run_dir: str):
    """Turns the error a multi_worker process gets when another worker of its cluster dies (its
    collective ops aborted, after TensorFlow's coordination service misses that worker's
    heartbeats) into the paragraph naming the checkpoint every worker resumes from."""
    try:
        yield
    except tf.errors.UnavailableError as error:
        if getattr(strategy, "cluster_resolver", None) is None:
            raise
        latest = checkpoints.latest_checkpoint(os.path.join(run_dir, "checkpoints"))
        resumes = (f"from the chief's last checkpoint, {latest} (step {checkpoints.checkpoint_step(latest)})" if latest
                   else "from the start (the chief had saved no checkpoint yet)")
        raise TapeloopError(
            stage="distribute", problem="another worker of the multi_worker cluster stopped: this worker's "
            "collective ops were aborted, so it stops too", expected="every worker in TF_CONFIG running until "
            "training ends", found=aborted_collectives_cause(error),
            fix=f"start every worker again with the same command: they resume {resumes}; "
                "--checkpoint_every_steps=N saves more often") from None


def aborted_collectives_cause(error: tf.errors.OpError) -> str:
    """What TensorFlow says stopped the collectives (it names the unhealthy tasks on the next line),
    on one line, without the op's name in front or its advice to restart the program."""
    text = re.split(r"The tasks have crashed|The error could be from a previous operation", str(error))[0]
    text = re.sub(r"^\{\{[^}]*\}\}\s*", "", " ".join(text.split()))
    return f"{type(error).__name__}: {text}"[:400]


def num_replicas() -> int:
    """Replicas training in step with this one (1 outside distribution)."""
    return tf.distribute.get_replica_context().num_replicas_in_sync


def sum_over_replicas(tensors):
    """The sum of `tensors` over all replicas, in every replica (identity outside distribution)."""
    if num_replicas() == 1:
        return tensors
    return tf.distribute.get_replica_context().all_reduce(tf.distribute.ReduceOp.SUM, tensors)


def replica_shard(context: tf.distribute.InputContext) -> tuple[int, int, int]:
    """(first replica, replicas fed, replicas in all) for the input pipeline `context` describes."""
    replicas_fed = context.num_replicas_in_sync // context.num_input_pipelines
    return context.input_pipeline_id * replicas_fed, replicas_fed, context.num_replicas_in_sync
