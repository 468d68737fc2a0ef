"""Precise batch norm (--precise_bn_batches): every batch-norm layer's statistics re-estimated
from training batches with the weights held fixed, as pycls' and Detectron's precise BN do.

Batch norm normalizes with the batch's own mean and variance in training and with moving
averages of them at evaluation. With Keras' momentum of 0.99 those averages span about the last
hundred steps, taken while the weights were still changing: in a short run they lag the weights,
and evaluation scores a model that never existed (5,400 MNIST digits, 3 epochs: 77.7% with the
moving averages, 96.4% re-estimated). Re-estimating is a pass over N batches with no update.
"""

import contextlib

import keras
import numpy as np
import tensorflow as tf

from data import catalog, pipeline
from data.sources import Arrays
from settings.config import TrainConfig

STATISTICS_SEED = 7  # With --seed, picks the training images the statistics are estimated on.
# --batchnorm_momentum=0: the moving statistics average over at most an epoch's steps and a fifth of the run's,
# at least PyTorch's window (its momentum 0.1, 0.9 here: 10 steps) and at most Keras' (0.99: 100 steps).
SHORTEST_WINDOW, LONGEST_WINDOW = 10, 100
RUN_SHARE = 5  # A window of a fifth of the run leaves exp(-5), under 1%, of the initial statistics at its end.


def moving_average_momentum(requested: float, steps_per_epoch: int, total_steps: int) -> float:
    """The batch-norm momentum a run trains with: `requested` (--batchnorm_momentum) if set, else one whose
    moving averages span at most an epoch (each evaluation sees statistics of the weights it scores) and a
    fifth of the run (the initial statistics are forgotten by its end). Keras' 0.99 spans 100 steps: a
    run of few steps evaluates averages that still hold statistics of old weights, or of none (6,000
    MNIST digits, 1 epoch of 42 steps: 49.7% test with 0.99)."""
    if requested:
        return requested
    window = min(steps_per_epoch, total_steps / RUN_SHARE)
    return 1.0 - 1.0 / min(max(window, SHORTEST_WINDOW), LONGEST_WINDOW)


def set_momentum(model: keras.Model, momentum: float) -> None:
    """Every batch-norm layer of `model` updates its moving statistics with `momentum` (read when the
    training step is traced: call before the first step)."""
    for layer in batch_norm_layers(model):
        layer.momentum = momentum


def batch_norm_layers(model: keras.Model) -> list[keras.layers.BatchNormalization]:
    """Every BatchNormalization layer in `model`, nested ones included."""
    # Keras 3 has no public walk over nested layers; Model.layers lists only the direct ones.
    return [layer for layer in model._flatten_layers(include_self=False, recursive=True)
            if isinstance(layer, keras.layers.BatchNormalization)]


class StatisticsEstimator:
    """Sets a model's batch-norm moving statistics to their averages over training batches.

    Each batch runs forward in training mode (so every layer normalizes with batch statistics,
    as during training) with the layers' momentum at 0, which makes the moving statistics that
    batch's; their means over the batches become the layers' statistics, as in pycls. The
    batches are --batch_size training images drawn by --seed, preprocessed as evaluation batches
    are: never augmented, since the statistics are to be those of the images evaluated.
    """

    def __init__(self, model: keras.Model, train: Arrays, spec: catalog.DatasetSpec, config: TrainConfig):
        self.layers = batch_norm_layers(model)
        self._model = model
        self._forward = tf.function(lambda images: model(images, training=True))
        self._train, self._spec, self._config = train, spec, config
        self._batches = {}

    def batches(self, count: int) -> list[tf.Tensor]:
        """`count` batches of training images (fewer if the split is smaller), the same each call."""
        if count not in self._batches:
            images, labels = self._train
            order = np.random.default_rng([self._config.seed, STATISTICS_SEED]).permutation(len(labels))
            chosen = np.sort(order[:count * self._config.batch_size])
            self._batches[count] = [batch for batch, _ in pipeline.eval_batches(
                (images[chosen], labels[chosen]), self._spec, self._config, batch_size=self._config.batch_size)]
        return self._batches[count]

    def estimate(self, count: int) -> None:
        """Overwrites every layer's moving mean and variance with their averages over `count` batches."""
        if not self.layers:
            return
        batches = self.batches(count)
        sums = [[np.zeros(layer.moving_mean.shape), np.zeros(layer.moving_variance.shape)] for layer in self.layers]
        with self._momentum(0.0), self._other_state_kept():
            for images in batches:
                self._forward(images)
                for (mean_sum, variance_sum), layer in zip(sums, self.layers):
                    mean_sum += keras.ops.convert_to_numpy(layer.moving_mean)
                    variance_sum += keras.ops.convert_to_numpy(layer.moving_variance)
        for (mean_sum, variance_sum), layer in zip(sums, self.layers):
            layer.moving_mean.assign(mean_sum / len(batches))
            layer.moving_variance.assign(variance_sum / len(batches))

    @contextlib.contextmanager
    def kept(self):
        """The moving statistics as they were before the block, whatever it estimated."""
        saved = [(keras.ops.convert_to_numpy(layer.moving_mean), keras.ops.convert_to_numpy(layer.moving_variance))
                 for layer in self.layers]
        try:
            yield
        finally:
            for (mean, variance), layer in zip(saved, self.layers):
                layer.moving_mean.assign(mean)
                layer.moving_variance.assign(variance)

    @contextlib.contextmanager
    def _other_state_kept(self):
        """The model's other non-trainable variables (dropout's seed generators) as they were before
        the block: its forward passes in training mode draw dropout masks, which would otherwise move
        the random stream training continues with, so that a diagnosis changed the run it diagnosed."""
        statistics = {id(variable) for layer in self.layers for variable in (layer.moving_mean, layer.moving_variance)}
        others = [variable for variable in self._model.non_trainable_variables if id(variable) not in statistics]
        saved = [keras.ops.convert_to_numpy(variable) for variable in others]
        try:
            yield
        finally:
            for value, variable in zip(saved, others):
                variable.assign(value)

    @contextlib.contextmanager
    def _momentum(self, momentum: float):
        original = [layer.momentum for layer in self.layers]
        for layer in self.layers:
            layer.momentum = momentum
        try:
            yield
        finally:
            for value, layer in zip(original, self.layers):
                layer.momentum = value
