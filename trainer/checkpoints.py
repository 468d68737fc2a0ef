"""Checkpoints of a run (latest and best), resume, and the SavedModel export."""

import contextlib
import os
import re
import shutil
import time
from collections.abc import Callable
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf
from absl import logging
from google.protobuf.message import DecodeError

from data.catalog import DatasetSpec
from data.pipeline import to_model_input
from data.pixels import unit_scaled
from data.streaming import stored_batches
from settings.errors import TapeloopError, TapeloopWarning, described
from trainer.metrics import ConfusionMatrix, MetricTracker


class RunCheckpoints:
    """`RUN/checkpoints` (the latest few) and `RUN/best` (best evaluation so far).

    A multi_worker worker other than the chief saves into its scratch `run_dir`
    and resumes from the run's own checkpoints in `resume_dir`.

    Both hold the whole training state: model, optimizer (its step counter is
    the global step), the learning-rate schedule's state, the weight average
    (--ema_decay), epoch, the best value of the metric that defines "best", the
    validation loss there (which breaks ties) and the evaluations since, and the
    wall and training seconds spent, so a resumed run continues as if never stopped.

    The checkpoints of a folder are found from their files (`ckpt-N.index`), not from
    TensorFlow's state file, which a crash or a user can delete or damage.
    """

    def __init__(self, run_dir: str, model: keras.Model, optimizer: keras.optimizers.Optimizer,
                 schedule: tf.Module, keep: int, best_metric: str = "accuracy",
                 weight_average: tf.Module | None = None, resume_dir: str | None = None,
                 backbone_optimizer: keras.optimizers.Optimizer | None = None):
        self.epoch = tf.Variable(0, dtype=tf.int64, trainable=False)
        self.best_metric = MetricTracker(best_metric)
        self.loss_at_best = tf.Variable(np.inf, dtype=tf.float64, trainable=False)
        self.wall_seconds = tf.Variable(0.0, dtype=tf.float64, trainable=False)
        self.training_seconds = tf.Variable(0.0, dtype=tf.float64, trainable=False)
        self._saved_objects = dict(
            model=model, optimizer=optimizer, schedule=schedule, epoch=self.epoch,
            best_metric=self.best_metric, loss_at_best=self.loss_at_best, wall_seconds=self.wall_seconds,
            training_seconds=self.training_seconds,
            **({"weight_average": weight_average} if weight_average is not None else {}),
            **({"backbone_optimizer": backbone_optimizer} if backbone_optimizer is not None else {}))
        self.checkpoint = tf.train.Checkpoint(**self._saved_objects)
        assert_checkpoint_covers(model)
        self.latest = self._manager(os.path.join(run_dir, "checkpoints"), keep)
        self.best = self._manager(os.path.join(run_dir, "best"), 1)
        self._resume_dir = os.path.join(resume_dir or run_dir, "checkpoints")
        self._clock_start = time.perf_counter()
        self._seconds_before = 0.0

    def _manager(self, folder: str, keep: int) -> tf.train.CheckpointManager:
        _rewrite_state_file(folder)  # So that the manager keeps and prunes what is really there.
        return tf.train.CheckpointManager(self.checkpoint, folder, max_to_keep=keep,
                                          step_counter=self.checkpoint.optimizer.iterations)

    def restore_latest(self) -> str | None:
        """Restores the newest intact checkpoint of the run, if any, and returns its path.

        A damaged one (truncated, missing or corrupt files) is reported and the one before it used.
        """
        path = restore_newest_intact(self._checkpoint_to_restore, self._resume_dir, partial=False)
        if path:
            self._seconds_before = float(self.wall_seconds.numpy())
        return path

    def _checkpoint_to_restore(self, path: str) -> tf.train.Checkpoint:
        """The whole state, or for a checkpoint written before ties were broken by the validation
        loss (older tapeloop versions) the state without `loss_at_best`, which then stays unknown."""
        if any(name.startswith("loss_at_best/") for name, _ in tf.train.list_variables(path)):
            return self.checkpoint
        logging.info("%s holds no validation loss of its best evaluation (written by an earlier tapeloop): the "
                     "next tie on --early_stopping_metric keeps the newer checkpoint.", path)
        return tf.train.Checkpoint(**{name: saved for name, saved in self._saved_objects.items()
                                      if name != "loss_at_best"})

    def elapsed_seconds(self) -> float:
        """Wall seconds of the whole run, including processes before a resume."""
        return self._seconds_before + time.perf_counter() - self._clock_start

    def save_latest(self, epochs_done: int) -> str:
        """Saves the state at the current step to checkpoints/; returns the checkpoint's path."""
        return self._save(self.latest, epochs_done)

    def save_best_if_improved(self, results: dict[str, float], epochs_done: int) -> bool:
        """Records an evaluation and saves to best/ if its metric beats every earlier one (or ties
        the best with a lower validation loss)."""
        if not self.best_metric.update(results, self.loss_at_best):
            return False
        self._save(self.best, epochs_done)
        return True

    def _save(self, manager: tf.train.CheckpointManager, epochs_done: int) -> str:
        """Saves, or on a write error (disk full, permissions) removes what the attempt left and
        raises the paragraph; the checkpoints written before stay as they were."""
        self.epoch.assign(epochs_done)
        self.wall_seconds.assign(self.elapsed_seconds())
        step = int(self.checkpoint.optimizer.iterations.numpy())
        before = set(os.listdir(manager.directory)) if os.path.isdir(manager.directory) else set()
        try:
            return manager.save(checkpoint_number=step)
        except (OSError, tf.errors.OpError) as error:
            _remove_new_entries(manager.directory, before)
            intact = checkpoint_prefixes(manager.directory)
            raise TapeloopError(
                stage="checkpoint", problem=f"could not write the checkpoint of step {step} to {manager.directory}",
                expected="room and permission to write there", found=described(error),
                fix="free disk space (or fix the permissions) and rerun the same command: it resumes from "
                    + (intact[-1] if intact else "the start, as no checkpoint was written yet")) from None


CHECKPOINT_INDEX = re.compile(r"ckpt-(\d+)\.index")


def checkpoint_prefixes(folder: str) -> list[str]:
    """The checkpoints in `folder`, oldest first, found from their index files."""
    try:
        names = os.listdir(folder)
    except (FileNotFoundError, NotADirectoryError):
        return []
    numbered = sorted((int(match.group(1)), name.removesuffix(".index"))
                      for name in names if (match := CHECKPOINT_INDEX.fullmatch(name)))
    return [os.path.join(folder, prefix) for _, prefix in numbered]


def latest_checkpoint(folder: str) -> str | None:
    """The newest checkpoint in `folder` (by its step number), or None."""
    prefixes = checkpoint_prefixes(folder)
    return prefixes[-1] if prefixes else None


def checkpoint_step(prefix: str) -> int:
    """The training step a checkpoint was saved at, from its prefix (FOLDER/ckpt-STEP)."""
    return int(prefix.rsplit("-", 1)[1])


def _rewrite_state_file(folder: str) -> None:
    """Makes TensorFlow's state file list the checkpoints that are really in `folder`."""
    prefixes = checkpoint_prefixes(folder)
    if not prefixes:
        return
    state = tf.train.get_checkpoint_state(folder)
    listed = [os.path.basename(path) for path in state.all_model_checkpoint_paths] if state else None
    if listed != [os.path.basename(path) for path in prefixes]:
        logging.warning("The checkpoint state file in %s was %s; rebuilt from the files (%s).", folder,
                        "missing or unreadable" if state is None else "out of date",
                        ", ".join(os.path.basename(path) for path in prefixes))
        times = [os.path.getmtime(f"{prefix}.index") for prefix in prefixes]
        tf.compat.v1.train.update_checkpoint_state(  # With times, or the manager would never prune them.
            folder, prefixes[-1], prefixes, all_model_checkpoint_timestamps=times,
            last_preserved_timestamp=min(times) - 1)


def _remove_new_entries(folder: str, before: set[str]) -> None:
    """Deletes what a failed save added to `folder` (its partial data files and temp folder)."""
    for name in set(os.listdir(folder)) - before if os.path.isdir(folder) else ():
        path = os.path.join(folder, name)
        with contextlib.suppress(OSError):
            if os.path.isdir(path):
                shutil.rmtree(path)
            else:
                os.remove(path)


def assert_checkpoint_covers(model: keras.Model) -> None:
    """Fails if a checkpoint of `model` would silently leave some of its variables out.

    The usual cause: sub-layers kept in a Python list or dict, which Keras 3 does
    not track for tf.train.Checkpoint (batch-norm statistics then vanish on restore).
    """
    checkpoint = tf.train.Checkpoint(model=model)
    reachable = {id(trackable) for trackable in tf.train.TrackableView(checkpoint).descendants()}
    lost = [variable.path for variable in model.variables if id(variable) not in reachable
            and not variable.path.endswith("seed_generator_state")]  # Dropout's RNG: reseeded each run.
    if lost:
        raise TapeloopError(
            stage="checkpoint", problem=f"model {model.name!r} has variables that checkpoints would not save",
            expected="every variable reachable through layer attributes",
            found=f"{len(lost)} unreachable: {', '.join(lost[:8])}{', ...' if len(lost) > 8 else ''}",
            fix="hold sub-layers in attributes or keras.Sequential, not in Python lists or dicts "
            "(Keras 3 does not track those for tf.train.Checkpoint)")


class CheckpointDamaged(Exception):
    """A checkpoint whose files are missing, truncated or corrupt; the message says what failed."""


def _verify_readable(path: str) -> None:
    """Reads every tensor of the checkpoint (TensorFlow checks each one's checksum), so that
    damaged files are told apart from a checkpoint that belongs to another model."""
    try:
        reader = tf.train.load_checkpoint(path)
        for name in reader.get_variable_to_shape_map():
            reader.get_tensor(name)
    except (tf.errors.OpError, IndexError, ValueError, OSError) as error:
        raise CheckpointDamaged(described(error)) from None


def restore_newest_intact(checkpoint_for: Callable[[str], tf.train.Checkpoint], folder: str,
                          partial: bool) -> str | None:
    """Restores the newest checkpoint in `folder` whose files are intact into `checkpoint_for(its
    path)` and returns its path (None if the folder has none); each damaged one is reported and the
    one before it tried."""
    damaged = []
    for path in reversed(checkpoint_prefixes(folder)):
        try:
            _verify_readable(path)
            _restore(checkpoint_for(path), path, partial)
            return path
        except CheckpointDamaged as error:
            damaged.append(path)
            logging.warning(TapeloopWarning(
                stage="checkpoint", problem=f"the checkpoint {path} is damaged; trying the one before",
                expected="complete checkpoint files", found=str(error),
                fix="nothing: the newest intact checkpoint is used").paragraph())
    if damaged:
        raise TapeloopError(
            stage="checkpoint", problem=f"every checkpoint in {folder} is damaged",
            expected="at least one intact checkpoint", found=", ".join(damaged),
            fix="start afresh in a new --run_dir, or evaluate other weights (evaluate.py --weights=latest, "
                "best or saved_model)")
    return None


def _restore(checkpoint: tf.train.Checkpoint, path: str, partial: bool) -> None:
    """Restores `path`, whose files are intact; raises a TapeloopError for a checkpoint of another model."""
    try:
        status = checkpoint.restore(path)
        if partial:  # Values of objects left out (e.g. the optimizer when only the model is wanted).
            status.expect_partial()
        status.assert_existing_objects_matched()
    except (AssertionError, ValueError, tf.errors.OpError) as error:
        raise TapeloopError(
            stage="checkpoint", problem=f"the checkpoint {path} does not fit the model built from these flags",
            expected="the same dataset, model and model flags as the run that wrote it",
            found=described(error),
            fix="rerun with the run's own flags (--flagfile=RUN/flags.txt), or use a new --run_dir") from None


def final_weights_dir(run_dir: str) -> str:
    """The checkpoint folder of a finished run's outcome: `best/` when the run evaluated on a
    validation split, else `checkpoints/` (its last weights; --validation_split=0)."""
    best = os.path.join(run_dir, "best")
    return best if latest_checkpoint(best) else os.path.join(run_dir, "checkpoints")


def restore_model_weights(model: keras.Model, checkpoint_dir: str, weight_average=None) -> str:
    """Loads only the model's weights from the newest checkpoint in `checkpoint_dir`.

    Given the run's `weight_average` (a WeightAverage), restores it too and puts the averages in the model.
    """
    assert_checkpoint_covers(model)
    averaged = {"weight_average": weight_average} if weight_average is not None else {}
    weights = tf.train.Checkpoint(model=model, **averaged)
    path = restore_newest_intact(lambda _: weights, checkpoint_dir, partial=True)
    if path is None:
        raise TapeloopError(
            stage="checkpoint", problem=f"no checkpoint in {checkpoint_dir}",
            expected="a run directory written by scripts/train.py", found="no checkpoint index file",
            fix="check --run_dir, or train first; a run with --validation_split=0 keeps no best/ "
                "(evaluate.py --weights=final or latest)")
    if weight_average is not None:
        weight_average.copy_to_model()
    return path


class ServingModule(tf.Module):
    """Raw images in (as the dataset stores them), class probabilities out; the class names and
    the stored image shape travel with it (scripts/predict.py reads them)."""

    def __init__(self, model: keras.Model, spec: DatasetSpec, standardize: bool):
        super().__init__()
        self.model = model
        self._spec = spec
        self._standardize = standardize
        self.class_names = tf.Variable(list(spec.class_names), trainable=False)
        self.image_shape = tf.Variable(list(spec.image_shape), trainable=False)
        stored_shape = [None, *spec.stored_shape]
        self.serve_float = tf.function(self._probabilities,
                                       input_signature=[tf.TensorSpec(stored_shape, tf.float32, name="images")])
        # uint8 images call the float function on pixels / 255: the model is traced (and saved) once.
        self.serve_uint8 = tf.function(lambda images: self.serve_float(tf.cast(images, tf.float32) / 255.0),
                                       input_signature=[tf.TensorSpec(stored_shape, tf.uint8, name="images")])

    def _probabilities(self, images):
        logits = self.model(to_model_input(images, self._spec, self._standardize), training=False)
        return {"probabilities": tf.nn.softmax(tf.cast(logits, tf.float32))}


def export_saved_model(model: keras.Model, spec: DatasetSpec, standardize: bool, target: str) -> None:
    """Writes the SavedModel next to `target`, then swaps it in, so `target` is never half-written.

    Signatures: `serving_default` takes uint8 images in [0, 255], `serving_float`
    float32 images in [0, 1]; both return {"probabilities": [batch, num_classes]}.
    The loaded object's `class_names` and `image_shape` ([H, W, C]) name the outputs and inputs.
    """
    module = ServingModule(model, spec, standardize)
    partial, previous = Path(f"{target}.partial"), Path(f"{target}.previous")
    if previous.is_dir() and not os.path.isdir(target):  # An earlier swap stopped half-way: put it back.
        os.replace(previous, target)
    shutil.rmtree(partial, ignore_errors=True)
    try:
        tf.saved_model.save(module, str(partial), signatures={
            "serving_default": module.serve_uint8, "serving_float": module.serve_float})
    except (OSError, tf.errors.OpError) as error:
        shutil.rmtree(partial, ignore_errors=True)
        raise TapeloopError(
            stage="export", problem=f"could not write the SavedModel to {partial}",
            expected="room and permission to write there", found=described(error),
            fix="free disk space (or fix the permissions) and rerun the same command: training is done and "
                "saved, so the rerun only scores and exports") from None
    if os.path.isdir(target):
        shutil.rmtree(previous, ignore_errors=True)
        os.replace(target, previous)
    os.replace(partial, target)
    shutil.rmtree(previous, ignore_errors=True)


def load_saved_model(path: str):
    """The exported model at `path` (tf.saved_model.load), or the paragraph saying why it is not usable."""
    if not os.path.isdir(path):
        raise TapeloopError(
            stage="checkpoint", problem=f"no SavedModel at {path}", expected="the export of a finished run",
            found="no such folder", fix="let the training run finish (train.py exports at the end), or "
            "evaluate checkpoint weights (evaluate.py --weights=final)")
    try:
        exported = tf.saved_model.load(path)
        if "serving_default" not in exported.signatures or not hasattr(exported, "class_names"):
            raise ValueError("no serving_default signature or no class_names")
    except (OSError, ValueError, KeyError, AttributeError, tf.errors.OpError, DecodeError) as error:
        raise TapeloopError(
            stage="checkpoint", problem=f"the SavedModel at {path} is damaged or not tapeloop's",
            expected="saved_model.pb and variables/ as train.py exports them",
            found=described(error),
            fix="export it again by rerunning the training command on the run directory, or "
                "evaluate checkpoint weights (evaluate.py --weights=final)") from None
    return exported


def saved_model_probabilities(path: str, images, batch_size: int, input_range=(0.0, 1.0)) -> np.ndarray:
    """The exported model's class probabilities for raw images, fed as a user would feed them.

    uint8 images go to `serving_default`; float images, mapped from `input_range` to [0, 1], to `serving_float`.
    """
    floating = np.issubdtype(images.dtype, np.floating)
    serve = load_saved_model(path).signatures["serving_float" if floating else "serving_default"]
    return np.concatenate([serve(images=tf.constant(unit_scaled(batch, input_range) if floating else batch)
                                 )["probabilities"].numpy() for batch in stored_batches(images, batch_size)])


def evaluate_saved_model(path: str, spec: DatasetSpec, images: np.ndarray, labels: np.ndarray,
                         batch_size: int, input_range=(0.0, 1.0)) -> dict[str, float]:
    """Scores an exported model fed raw images as a user would: accuracy, mean cross-entropy
    (as `loss/total`) and the per-class report, keyed like the eval metrics."""
    return probability_scores(spec, labels, saved_model_probabilities(path, images, batch_size, input_range))


def probability_scores(spec: DatasetSpec, labels: np.ndarray, probabilities: np.ndarray) -> dict[str, float]:
    """Accuracy, mean cross-entropy (as `loss/total`) and the per-class report of class probabilities."""
    accuracy = keras.metrics.SparseCategoricalAccuracy()
    cross_entropy = keras.metrics.SparseCategoricalCrossentropy()
    confusion = ConfusionMatrix(spec.class_names)
    for metric in (accuracy, cross_entropy, confusion):
        metric.update_state(labels, probabilities)
    return {"accuracy": float(accuracy.result()), "loss/total": float(cross_entropy.result()),
            **confusion.report()}
