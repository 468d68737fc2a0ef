"""train_step and eval_step builders: small tf.functions over (model, optimizer, loss, metrics).

Metrics are Keras metric objects updated inside the compiled step, so the loop
reads them only when it logs and the device never waits on the host per step.
The train step is written for one replica: under tf.distribute its loss is the
replica's share, its gradients are summed over replicas before the norm and
clipping, and its metrics (variables created in the strategy's scope) are
summed over replicas when read.
"""

import keras
import tensorflow as tf

from trainer.checks import StageChecks
from trainer.distribute import num_replicas, sum_over_replicas
from trainer import losses
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


def _update_metrics(metrics, labels, logits, terms, total):
    batch_size = tf.shape(logits)[0]
    metrics["loss/total"].update_state(total, sample_weight=batch_size)
    for term, value in terms.items():
        metrics[f"loss/{term}"].update_state(value, sample_weight=batch_size)
    class_ids = losses.class_ids(labels)
    metrics["accuracy"].update_state(class_ids, logits)
    if "confusion_matrix" in metrics:
        metrics["confusion_matrix"].update_state(class_ids, logits)


def whole_batch_gradients(replica_gradients: list, optimizer: keras.optimizers.Optimizer,
                          clip_grad_norm: float) -> tuple[list, tf.Tensor]:
    """One replica's gradients of its loss-scaled share -> (what it hands the optimizer, the whole
    batch's gradient norm before clipping, unscaled).

    The loss scale (1 unless float16 loss scaling) keeps small float16 gradients from underflowing;
    the optimizer divides it out, and the norm and clipping use unscaled values. The gradients are
    summed over replicas here, not only inside the optimizer (which sums after its own clipping), so
    that the norm and the clipping see the whole batch; as Keras optimizers sum over replicas once
    more, each replica then hands over its share.
    """
    scale = optimizer.scale_loss(1.0)
    gradients = sum_over_replicas(replica_gradients)
    global_norm = tf.linalg.global_norm(gradients) / scale
    if clip_grad_norm:
        gradients, _ = tf.clip_by_global_norm(gradients, clip_grad_norm * scale, use_norm=global_norm * scale)
    return [gradient / num_replicas() for gradient in gradients], global_norm


def _compiled_train_step(model, optimizer, loss, metrics, checks, clip_grad_norm, jit_compile,
                         gradient_snapshot=None, weight_average=None, accumulate_steps=1, backbone=None):
    """The tf.function for one checked training step (one update) on one batch.

    `gradient_snapshot` (variables shaped like the trainable ones) receives each step's gradients;
    `weight_average` (a WeightAverage) is moved after each update. With `accumulate_steps` N > 1
    the batch is N micro-batches, whose gradients are summed (each micro-batch's loss divided by
    N, so the update is that of the whole batch's mean loss) before the one update. `backbone`
    (a fine_tuning.BackboneOptimizer), if given, updates the backbone's variables.
    """

    def micro_batch_gradients(images, labels, example_weights):
        variables = model.trainable_variables
        with tf.GradientTape() as tape:
            logits = tf.cast(model(images, training=True), tf.float32)  # float32 even under mixed precision
            shares = loss.terms(labels, logits, variables, example_weights)
            scaled_share = optimizer.scale_loss(loss.total(shares) / accumulate_steps)
        terms = {term: share * num_replicas() for term, share in shares.items()}  # This replica's batch.
        total = loss.total(terms)
        _update_metrics(metrics, labels, logits, terms, total)
        return logits, total, tape.gradient(scaled_share, variables)

    def update(images, labels, example_weights):
        variables = model.trainable_variables
        if accumulate_steps == 1:
            logits, total, replica_gradients = micro_batch_gradients(images, labels, example_weights)
        else:
            logits, total, replica_gradients = accumulated(micro_batch_gradients, accumulate_steps, variables,
                                                           images, labels, example_weights)
        gradient_shares, global_norm = whole_batch_gradients(replica_gradients, optimizer, clip_grad_norm)
        pairs = list(zip(gradient_shares, variables))
        optimizer.apply_gradients(backbone.apply_own(pairs) if backbone is not None else pairs)
        if weight_average is not None:
            weight_average.update()
        for snapshot, share in zip(gradient_snapshot or (), gradient_shares):
            snapshot.assign(share * num_replicas() / optimizer.scale_loss(1.0))
        metrics["gradients/global_norm"].update_state(global_norm)
        return logits, total, global_norm, gradient_shares

    if jit_compile:
        update = tf.function(update, jit_compile=True, autograph=False)

    @tf.function(autograph=False)  # Plain Python at trace time: a failed static check raises as itself.
    def checked_step(images, labels, example_weights):
        images, labels = checks.inputs(images, labels)
        logits, total, global_norm, gradients = update(images, labels, example_weights)
        checks.outputs(logits)
        checks.update(total, global_norm, gradients, model.trainable_variables)
        return total

    return checked_step


def accumulated(micro_batch_gradients, count: int, variables, *batch):
    """Runs `micro_batch_gradients` on each of the `count` equal slices of `batch` in turn (a
    tf.while_loop, so one micro-batch's activations are alive at a time) -> (all logits, the mean
    total loss, the summed gradients)."""
    micro_batches = [tf.reshape(part, [count, -1, *part.shape[1:]]) for part in batch]
    logits_shape = [micro_batches[0].shape[1], None]

    def one_micro_batch(index, total, gradient_sums, logits):
        micro_logits, micro_total, gradients = micro_batch_gradients(*(part[index] for part in micro_batches))
        sums = [gradient_sum + gradient for gradient_sum, gradient in zip(gradient_sums, gradients)]
        return index + 1, total + micro_total / count, sums, logits.write(index, micro_logits)

    start = (tf.constant(0), tf.constant(0.0), [tf.zeros_like(variable) for variable in variables],
             tf.TensorArray(tf.float32, size=count, element_shape=logits_shape))
    _, total, gradients, logits = tf.while_loop(lambda index, *_: index < count, one_micro_batch, start)
    stacked = logits.stack()
    return tf.reshape(stacked, [-1, stacked.shape[-1]]), total, gradients


def make_train_step(model: keras.Model, optimizer: keras.optimizers.Optimizer, loss: WeightedLoss,
                    metrics: dict[str, keras.metrics.Metric], checks: StageChecks,
                    clip_grad_norm: float = 0.0, jit_compile: bool = False, weight_average=None,
                    accumulate_steps: int = 1, backbone=None):
    """Returns train_step(images, labels, example_weights) -> total loss; updates weights and metrics
    (and `weight_average`, if given). With `accumulate_steps` the batch holds that many
    micro-batches and is one update; `backbone` (a fine_tuning.BackboneOptimizer) updates the
    backbone's variables after --unfreeze_after_epochs.

    With `clip_grad_norm` > 0 the gradients are scaled down to that global norm;
    the metric records the norm before clipping. The stage checks run outside
    the XLA-compiled part (XLA drops assertions) and fail as TapeloopError.
    """
    step = _compiled_train_step(model, optimizer, loss, metrics, checks, clip_grad_norm, jit_compile,
                                weight_average=weight_average, accumulate_steps=accumulate_steps,
                                backbone=backbone)
    return _explaining_failures(step, checks)


def make_train_loop(model: keras.Model, optimizer: keras.optimizers.Optimizer, loss: WeightedLoss,
                    metrics: dict[str, keras.metrics.Metric], checks: StageChecks,
                    clip_grad_norm: float = 0.0, jit_compile: bool = False, gradient_snapshot=None,
                    weight_average=None, strategy: tf.distribute.Strategy | None = None,
                    accumulate_steps: int = 1, backbone=None):
    """Returns train_steps(iterator, count) -> the last total loss, which runs `count` train steps
    on batches from `iterator` inside one tf.function call (--steps_per_loop), saving the host
    round trip per step. `gradient_snapshot` variables, if given, keep the last step's gradients;
    `weight_average`, if given, is moved after every step. Under a `strategy` each step runs on
    every replica (`iterator` distributed) and the loss is the mean over replicas. Each step is
    one update: with `accumulate_steps`, of a batch of that many micro-batches; `backbone` as in
    make_train_step."""
    step = _compiled_train_step(model, optimizer, loss, metrics, checks, clip_grad_norm, jit_compile,
                                gradient_snapshot, weight_average, accumulate_steps, backbone)
    strategy = strategy or tf.distribute.get_strategy()

    def replicated_step(batch):
        return strategy.reduce(tf.distribute.ReduceOp.MEAN, strategy.run(step, args=batch), axis=None)

    @tf.function(autograph=False)
    def train_steps(iterator, count):
        def one_step(index, _):
            return index + 1, replicated_step(iterator.get_next())

        return tf.while_loop(lambda index, _: index < count, one_step, [tf.constant(0), tf.constant(0.0)])[1]

    return _explaining_failures(lambda iterator, count: train_steps(iterator, tf.constant(count)), checks)


def make_eval_step(model: keras.Model, loss: WeightedLoss, metrics: dict[str, keras.metrics.Metric],
                   checks: StageChecks):
    """Returns eval_step(images, labels) -> logits; updates metrics only (examples unweighted)."""

    @tf.function(autograph=False)  # Plain Python at trace time: a failed static check raises as itself.
    def eval_step(images, labels):
        images, labels = checks.inputs(images, labels)
        logits = tf.cast(model(images, training=False), tf.float32)
        checks.outputs(logits)
        terms = loss.terms(labels, logits, model.trainable_variables)
        _update_metrics(metrics, labels, logits, terms, loss.total(terms))
        return logits

    return _explaining_failures(eval_step, checks)


def make_tta_step(model: keras.Model, views):
    """Returns tta_step(images) -> class probabilities averaged over `views(images)`, a list of
    transformed copies of the batch (test-time augmentation)."""

    @tf.function(autograph=False)
    def tta_step(images):
        probabilities = [tf.nn.softmax(tf.cast(model(view, training=False), tf.float32)) for view in views(images)]
        return tf.add_n(probabilities) / len(probabilities)

    return tta_step


def _explaining_failures(step, checks: StageChecks):
    """Wraps a compiled step so that its failed checks surface as their TapeloopError paragraphs."""

    def run(*args):
        try:
            return step(*args)
        except tf.errors.InvalidArgumentError as error:
            explained = checks.explain(error)
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
