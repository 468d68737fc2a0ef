"""train_step and eval_step builders: small tf.functions over (model, optimizer, loss, metrics).

Metrics are Keras metric objects updated inside the compiled step, so the loop
reads them only when it logs and the device never waits on the host per step.
"""

import keras
import tensorflow as tf

from trainer.checks import StageChecks
from trainer.losses import WeightedLoss
from trainer.metrics import ConfusionMatrix


def make_metrics(loss: WeightedLoss, with_gradients: bool = False,
                 class_names: tuple[str, ...] | None = None) -> dict[str, keras.metrics.Metric]:
    """Running metrics keyed by their TensorBoard tag; a confusion matrix when given class names."""
    metrics = {"loss/total": keras.metrics.Mean()}
    metrics.update({f"loss/{term}": keras.metrics.Mean() for term in loss.weights})
    metrics["accuracy"] = keras.metrics.SparseCategoricalAccuracy()
    if with_gradients:
        metrics["gradients/global_norm"] = keras.metrics.Mean()
    if class_names is not None:
        metrics["confusion_matrix"] = ConfusionMatrix(class_names)
    return metrics


def _update_metrics(metrics, loss, labels, logits, terms, total):
    batch_size = tf.shape(logits)[0]
    metrics["loss/total"].update_state(total, sample_weight=batch_size)
    for term, value in terms.items():
        metrics[f"loss/{term}"].update_state(value, sample_weight=batch_size)
    class_ids = loss.class_ids(labels)
    metrics["accuracy"].update_state(class_ids, logits)
    if "confusion_matrix" in metrics:
        metrics["confusion_matrix"].update_state(class_ids, logits)


def make_train_step(model: keras.Model, optimizer: keras.optimizers.Optimizer, loss: WeightedLoss,
                    metrics: dict[str, keras.metrics.Metric], checks: StageChecks,
                    clip_grad_norm: float = 0.0, jit_compile: bool = False):
    """Returns train_step(images, labels, example_weights) -> total loss; updates weights and metrics.

    With `clip_grad_norm` > 0 the gradients are scaled down to that global norm;
    the metric records the norm before clipping. The stage checks run outside
    the XLA-compiled part (XLA drops assertions) and fail as TapeloopError.
    """

    def update(images, labels, example_weights):
        with tf.GradientTape() as tape:
            logits = model(images, training=True)
            terms = loss.terms(labels, logits, model.trainable_variables, example_weights)
            total = loss.total(terms)
        gradients = tape.gradient(total, model.trainable_variables)
        if clip_grad_norm:
            gradients, global_norm = tf.clip_by_global_norm(gradients, clip_grad_norm)
        else:
            global_norm = tf.linalg.global_norm(gradients)
        optimizer.apply_gradients(zip(gradients, model.trainable_variables))
        _update_metrics(metrics, loss, labels, logits, terms, total)
        metrics["gradients/global_norm"].update_state(global_norm)
        return logits, total, global_norm, gradients

    if jit_compile:
        update = tf.function(update, jit_compile=True, autograph=False)

    @tf.function(autograph=False)  # Plain Python at trace time: a failed static check raises as itself.
    def checked_step(images, labels, example_weights):
        images, labels = checks.inputs(images, labels)
        logits, total, global_norm, gradients = update(images, labels, example_weights)
        checks.outputs(logits)
        checks.update(total, global_norm, gradients, model.trainable_variables)
        return total

    return _explaining_failures(checked_step, checks)


def make_eval_step(model: keras.Model, loss: WeightedLoss, metrics: dict[str, keras.metrics.Metric],
                   checks: StageChecks):
    """Returns eval_step(images, labels) -> logits; updates metrics only (examples unweighted)."""

    @tf.function(autograph=False)  # Plain Python at trace time: a failed static check raises as itself.
    def eval_step(images, labels):
        images, labels = checks.inputs(images, labels)
        logits = model(images, training=False)
        checks.outputs(logits)
        terms = loss.terms(labels, logits, model.trainable_variables)
        _update_metrics(metrics, loss, labels, logits, terms, loss.total(terms))
        return logits

    return _explaining_failures(eval_step, checks)


def _explaining_failures(step, checks: StageChecks):
    """Wraps a compiled step so that its failed checks surface as their TapeloopError paragraphs."""

    def run(images, labels, *args):
        try:
            return step(images, labels, *args)
        except tf.errors.InvalidArgumentError as error:
            explained = checks.explain(error, images, labels)
            if explained is None:
                raise
            raise explained from None

    return run


def read_and_reset(metrics: dict[str, keras.metrics.Metric]) -> dict[str, float]:
    """Every metric's current value as floats keyed by tag (a confusion matrix as its per-class
    report); then starts them afresh."""
    values = {}
    for name, metric in metrics.items():
        if isinstance(metric, ConfusionMatrix):
            values.update(metric.report())
        else:
            values[name] = float(metric.result())
        metric.reset_state()
    return values
