"""Checkpoints of a run (latest and best), resume, and the SavedModel export."""

import os
import shutil
import time
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf
from absl import logging

from data.catalog import DatasetSpec
from data.pipeline import to_model_input
from data.pixels import unit_scaled
from trainer.errors import TapeloopError, TapeloopWarning
from trainer.metrics import ConfusionMatrix, MetricTracker


class RunCheckpoints:
    """`RUN/checkpoints` (the latest few) and `RUN/best` (best evaluation so far).

    A multi_worker worker other than the chief saves into its scratch `run_dir`
    and resumes from the run's own checkpoints in `resume_dir`.

    Both hold the whole training state: model, optimizer (its step counter is
    the global step), the learning-rate schedule's state, the weight average
    (--ema_decay), epoch, the best value of the metric that defines "best" and
    the evaluations since, and the wall and training seconds spent, so a resumed
    run continues as if never stopped.
    """

    def __init__(self, run_dir: str, model: keras.Model, optimizer: keras.optimizers.Optimizer,
                 schedule: tf.Module, keep: int, best_metric: str = "accuracy",
                 weight_average: tf.Module | None = None, resume_dir: str | None = None):
        self.epoch = tf.Variable(0, dtype=tf.int64, trainable=False)
        self.best_metric = MetricTracker(best_metric)
        self.wall_seconds = tf.Variable(0.0, dtype=tf.float64, trainable=False)
        self.training_seconds = tf.Variable(0.0, dtype=tf.float64, trainable=False)
        self.checkpoint = tf.train.Checkpoint(
            model=model, optimizer=optimizer, schedule=schedule, epoch=self.epoch,
            best_metric=self.best_metric, wall_seconds=self.wall_seconds,
            training_seconds=self.training_seconds,
            **({"weight_average": weight_average} if weight_average is not None else {}))
        assert_checkpoint_covers(model)
        self.latest = tf.train.CheckpointManager(
            self.checkpoint, os.path.join(run_dir, "checkpoints"), max_to_keep=keep,
            step_counter=optimizer.iterations)
        self.best = tf.train.CheckpointManager(
            self.checkpoint, os.path.join(run_dir, "best"), max_to_keep=1,
            step_counter=optimizer.iterations)
        self._resume_dir = os.path.join(resume_dir or run_dir, "checkpoints")
        self._clock_start = time.perf_counter()
        self._seconds_before = 0.0

    def restore_latest(self) -> str | None:
        """Restores the newest intact checkpoint of the run, if any, and returns its path.

        A damaged one (truncated or missing files) is reported and the one before it used.
        """
        state = tf.train.get_checkpoint_state(self._resume_dir)
        damaged = []
        for path in reversed(state.all_model_checkpoint_paths if state else []):
            try:
                _restore(self.checkpoint, path, partial=False)
            except DAMAGE_ERRORS as error:
                damaged.append(path)
                logging.warning(TapeloopWarning(
                    stage="checkpoint", problem=f"the checkpoint {path} is damaged; trying the one before",
                    expected="complete checkpoint files", found=f"{type(error).__name__}: {_first_line(error)}",
                    fix="nothing: training resumes from the newest intact checkpoint").paragraph())
                continue
            self._seconds_before = float(self.wall_seconds.numpy())
            return path
        if damaged:
            raise TapeloopError(
                stage="checkpoint", problem="every checkpoint of the run is damaged",
                expected="at least one intact checkpoint to resume from", found=", ".join(damaged),
                fix="start afresh in a new --run_dir (best/ may still hold usable weights for evaluate.py)")
        return None

    def elapsed_seconds(self) -> float:
        """Wall seconds of the whole run, including processes before a resume."""
        return self._seconds_before + time.perf_counter() - self._clock_start

    def save_latest(self, epochs_done: int) -> None:
        """Saves the state at the current step to checkpoints/."""
        self._save(self.latest, epochs_done)

    def save_best_if_improved(self, results: dict[str, float], epochs_done: int) -> bool:
        """Records an evaluation and saves to best/ if its metric beats every earlier one."""
        if not self.best_metric.update(results):
            return False
        self._save(self.best, epochs_done)
        return True

    def _save(self, manager: tf.train.CheckpointManager, epochs_done: int) -> None:
        self.epoch.assign(epochs_done)
        self.wall_seconds.assign(self.elapsed_seconds())
        manager.save(checkpoint_number=int(self.checkpoint.optimizer.iterations.numpy()))


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


# What reading a truncated or half-deleted checkpoint raises (a truncated data file: IndexError).
DAMAGE_ERRORS = (IndexError, tf.errors.NotFoundError, tf.errors.DataLossError)


def _first_line(error: Exception) -> str:
    return str(error).splitlines()[0][:300] if str(error) else ""


def _restore(checkpoint: tf.train.Checkpoint, path: str, partial: bool) -> None:
    """Restores `path`; DAMAGE_ERRORS pass through, a checkpoint of another model is a TapeloopError."""
    try:
        status = checkpoint.restore(path)
        if partial:  # Values of objects left out (e.g. the optimizer when only the model is wanted).
            status.expect_partial()
        status.assert_existing_objects_matched()
    except DAMAGE_ERRORS:
        raise
    except (AssertionError, ValueError, tf.errors.OpError) as error:
        raise TapeloopError(
            stage="checkpoint", problem=f"the checkpoint {path} does not fit the model built from these flags",
            expected="the same dataset, model and model flags as the run that wrote it",
            found=f"{type(error).__name__}: {_first_line(error)}",
            fix="rerun with the run's own flags (--flagfile=RUN/flags.txt), or use a new --run_dir") from None


def final_weights_dir(run_dir: str) -> str:
    """The checkpoint folder of a finished run's outcome: `best/` when the run evaluated on a
    validation split, else `checkpoints/` (its last weights; --validation_split=0)."""
    best = os.path.join(run_dir, "best")
    return best if tf.train.latest_checkpoint(best) else os.path.join(run_dir, "checkpoints")


def restore_model_weights(model: keras.Model, checkpoint_dir: str, weight_average=None) -> str:
    """Loads only the model's weights from the newest checkpoint in `checkpoint_dir`.

    Given the run's `weight_average` (a WeightAverage), restores it too and puts the averages in the model.
    """
    path = tf.train.latest_checkpoint(checkpoint_dir)
    if path is None:
        raise TapeloopError(
            stage="checkpoint", problem=f"no checkpoint in {checkpoint_dir}",
            expected="a run directory written by scripts/train.py", found="no checkpoint index file",
            fix="check --run_dir, or train first; a run with --validation_split=0 keeps no best/ "
                "(evaluate.py --weights=final or latest)")
    assert_checkpoint_covers(model)
    try:
        averaged = {"weight_average": weight_average} if weight_average is not None else {}
        _restore(tf.train.Checkpoint(model=model, **averaged), path, partial=True)
    except DAMAGE_ERRORS as error:
        raise TapeloopError(
            stage="checkpoint", problem=f"the checkpoint {path} is damaged", expected="complete checkpoint files",
            found=f"{type(error).__name__}: {_first_line(error)}",
            fix="evaluate another one (--weights=latest or --weights=saved_model)") from None
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
        self.serve_uint8 = tf.function(self._probabilities,
                                       input_signature=[tf.TensorSpec(stored_shape, tf.uint8, name="images")])
        self.serve_float = tf.function(self._probabilities,
                                       input_signature=[tf.TensorSpec(stored_shape, tf.float32, name="images")])

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
    partial = Path(f"{target}.partial")
    shutil.rmtree(partial, ignore_errors=True)
    tf.saved_model.save(module, str(partial), signatures={
        "serving_default": module.serve_uint8, "serving_float": module.serve_float})
    shutil.rmtree(target, ignore_errors=True)
    os.replace(partial, target)


def evaluate_saved_model(path: str, spec: DatasetSpec, images: np.ndarray, labels: np.ndarray,
                         batch_size: int, input_range=(0.0, 1.0)) -> dict[str, float]:
    """Scores an exported model fed raw images as a user would: accuracy, mean cross-entropy
    (as `loss/total`) and the per-class report, keyed like the eval metrics.

    uint8 images go to `serving_default`; float images, mapped from `input_range` to [0, 1], to `serving_float`.
    """
    if not os.path.isdir(path):
        raise TapeloopError(
            stage="checkpoint", problem=f"no SavedModel at {path}", expected="the export of a finished run",
            found="no such folder", fix="let the training run finish, or evaluate --weights=best")
    floating = np.issubdtype(images.dtype, np.floating)
    serve = tf.saved_model.load(path).signatures["serving_float" if floating else "serving_default"]
    if floating:
        images = unit_scaled(images, input_range)
    accuracy = keras.metrics.SparseCategoricalAccuracy()
    cross_entropy = keras.metrics.SparseCategoricalCrossentropy()
    confusion = ConfusionMatrix(spec.class_names)
    for start in range(0, len(labels), batch_size):
        batch_labels = labels[start:start + batch_size]
        probabilities = serve(images=tf.constant(images[start:start + batch_size]))["probabilities"]
        accuracy.update_state(batch_labels, probabilities)
        cross_entropy.update_state(batch_labels, probabilities)
        confusion.update_state(batch_labels, probabilities)
    return {"accuracy": float(accuracy.result()), "loss/total": float(cross_entropy.result()),
            **confusion.report()}
