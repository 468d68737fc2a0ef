"""Weight averaging (--ema_decay): an exponential moving average of the model's weights."""

import contextlib

import keras
import tensorflow as tf


class WeightAverage(tf.Module):
    """Shadow copies of a model's float variables, moved towards them after every training step.

    Evaluation, best/ and the export use the average; training continues from
    the raw weights. Unlike Keras optimizers' `use_ema`, this averages the
    batch-norm statistics too (they must match the averaged weights), and it
    warms the decay up as min(decay, (1 + t) / (10 + t)) after t updates, as
    tf.train.ExponentialMovingAverage's `num_updates` does, so that evaluations
    in the first epoch are not dominated by the initial weights. It lives in the
    checkpoints beside the model.
    """

    def __init__(self, model: keras.Model, decay: float):
        super().__init__(name="weight_average")
        self.decay = decay
        self._model_variables = [variable for variable in model.variables
                                 if tf.as_dtype(variable.dtype).is_floating]
        # Under tf.distribute every replica computes the same update: keep the first replica's.
        first_replica = tf.VariableAggregation.ONLY_FIRST_REPLICA
        self.averages = [tf.Variable(tf.convert_to_tensor(variable), trainable=False, aggregation=first_replica)
                         for variable in self._model_variables]
        self.updates = tf.Variable(0, dtype=tf.int64, trainable=False, aggregation=first_replica)

    def update(self) -> None:
        """Moves every average towards its variable's current value (inside the train step)."""
        updates = tf.cast(self.updates, tf.float32)
        decay = tf.minimum(self.decay, (1.0 + updates) / (10.0 + updates))
        for average, variable in zip(self.averages, self._model_variables):
            average.assign(decay * average + (1.0 - decay) * tf.convert_to_tensor(variable))
        self.updates.assign_add(1)

    def copy_to_model(self) -> None:
        """Overwrites the model's variables with the averages."""
        for average, variable in zip(self.averages, self._model_variables):
            variable.assign(average)

    @contextlib.contextmanager
    def swapped_in(self):
        """The averages in the model for the duration of the block, the raw weights back after it."""
        raw = [tf.identity(tf.convert_to_tensor(variable)) for variable in self._model_variables]
        self.copy_to_model()
        try:
            yield
        finally:
            for value, variable in zip(raw, self._model_variables):
                variable.assign(value)
