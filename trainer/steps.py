"""train_step and eval_step builders: small tf.functions over (model, optimizer, loss, metrics).

Metrics are Keras metric objects updated inside the compiled step, so the loop
reads them only when it logs and the device never waits on the host per step.
"""

import keras
import tensorflow as tf

from trainer import losses


def make_metrics(with_gradients: bool) -> dict[str, keras.metrics.Metric]:
    """Running metrics keyed by their TensorBoard tag."""
    metrics = {"loss/total": keras.metrics.Mean()}
    metrics.update({f"loss/{term}": keras.metrics.Mean() for term in losses.TERMS})
    metrics["accuracy"] = keras.metrics.SparseCategoricalAccuracy()
    if with_gradients:
        metrics["gradients/global_norm"] = keras.metrics.Mean()
    return metrics


def _update_loss_metrics(metrics, terms, total, batch_size):
    metrics["loss/total"].update_state(total, sample_weight=batch_size)
    for term, value in terms.items():
        metrics[f"loss/{term}"].update_state(value, sample_weight=batch_size)


def make_train_step(model: keras.Model, optimizer: keras.optimizers.Optimizer,
                    metrics: dict[str, keras.metrics.Metric], jit_compile: bool = False):
    """Returns train_step(images, labels) -> total loss, which updates weights and metrics."""

    @tf.function(jit_compile=jit_compile)
    def train_step(images, labels):
        with tf.GradientTape() as tape:
            logits = model(images, training=True)
            terms = losses.loss_terms(labels, logits)
            total = losses.total_loss(terms)
        gradients = tape.gradient(total, model.trainable_variables)
        optimizer.apply_gradients(zip(gradients, model.trainable_variables))
        batch_size = tf.shape(labels)[0]
        _update_loss_metrics(metrics, terms, total, batch_size)
        metrics["accuracy"].update_state(labels, logits)
        metrics["gradients/global_norm"].update_state(tf.linalg.global_norm(gradients))
        return total

    return train_step


def make_eval_step(model: keras.Model, metrics: dict[str, keras.metrics.Metric]):
    """Returns eval_step(images, labels) -> logits, which updates metrics only."""

    @tf.function
    def eval_step(images, labels):
        logits = model(images, training=False)
        terms = losses.loss_terms(labels, logits)
        _update_loss_metrics(metrics, terms, losses.total_loss(terms), tf.shape(labels)[0])
        metrics["accuracy"].update_state(labels, logits)
        return logits

    return eval_step


def read_and_reset(metrics: dict[str, keras.metrics.Metric]) -> dict[str, float]:
    """Current value of every metric as a float; then starts them afresh."""
    values = {name: float(metric.result()) for name, metric in metrics.items()}
    for metric in metrics.values():
        metric.reset_state()
    return values
