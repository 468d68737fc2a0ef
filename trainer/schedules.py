"""Learning-rate schedules: functions of the global step, with an optional linear warm-up.

`constant`, `step`, `exponential`, `cosine` and `onecycle` are closed forms of
the step, so a resumed run continues the same curve from its restored step
counter. `plateau` also reacts to evaluations; its state (the best metric, the
evaluations since, the reductions so far) lives in variables that the run's
checkpoints hold.
"""

import math

import keras
import tensorflow as tf

from settings.config import TrainConfig
from trainer.metrics import MetricTracker


class LearningRate(tf.Module, keras.optimizers.schedules.LearningRateSchedule):
    """The run's learning rate as a function of the global step (pass it to the optimizer).

    With `--warmup_steps=W`, step s < W trains at (s + 1) / W of the rate the
    schedule has at step W; `exponential` and `cosine` start decaying at W.
    """

    def __init__(self, config: TrainConfig, total_steps: int, steps_per_epoch: int):
        super().__init__(name="learning_rate")
        self.kind = config.lr_schedule
        self.base = config.learning_rate
        self.warmup_steps = config.warmup_steps
        self.minimum = config.min_learning_rate
        self.total_steps = total_steps
        if self.kind == "step":
            self._piecewise = keras.optimizers.schedules.PiecewiseConstantDecay(
                list(config.lr_boundaries), list(config.lr_values))
        elif self.kind == "exponential":
            self._exponential = keras.optimizers.schedules.ExponentialDecay(
                self.base, config.lr_decay_steps or steps_per_epoch, config.lr_decay_rate)
        elif self.kind == "cosine":
            self._cosine = keras.optimizers.schedules.CosineDecay(
                self.base, config.lr_decay_steps or max(1, total_steps - self.warmup_steps),
                alpha=self.minimum / self.base)
        elif self.kind == "onecycle":
            self.peak_step = max(1, round(config.onecycle_peak_fraction * total_steps))
            self.initial_ratio = config.onecycle_initial_ratio
            self.final_ratio = config.onecycle_final_ratio
        self.plateau = MetricTracker(config.plateau_metric)
        self.plateau_factor = config.plateau_factor
        self.plateau_patience = config.plateau_patience
        self.reductions = tf.Variable(0, dtype=tf.int64, trainable=False, name="plateau_reductions")

    def __call__(self, step):
        step = tf.cast(step, tf.float32)
        rate = self._after_warmup(tf.maximum(step, float(self.warmup_steps)))
        if self.warmup_steps:
            rate *= tf.minimum(1.0, (step + 1.0) / self.warmup_steps)
        return rate

    def _after_warmup(self, step):
        since_warmup = step - self.warmup_steps
        if self.kind == "step":
            return tf.cast(self._piecewise(step), tf.float32)
        if self.kind == "exponential":
            return tf.maximum(self.minimum, self._exponential(since_warmup))
        if self.kind == "cosine":
            return self._cosine(since_warmup)
        if self.kind == "onecycle":
            return self._one_cycle(step)
        if self.kind == "plateau":
            lowered = self.base * tf.pow(self.plateau_factor, tf.cast(self.reductions, tf.float32))
            return tf.maximum(self.minimum, lowered)
        return tf.constant(self.base, tf.float32)

    def _one_cycle(self, step):
        """Cosine rise from base * initial_ratio to base at the peak step, cosine fall to base * final_ratio."""
        peak, total = float(self.peak_step), float(max(self.total_steps, self.peak_step + 1))
        rising = step < peak
        progress = tf.where(rising, step / peak, tf.minimum(1.0, (step - peak) / (total - peak)))
        start = tf.where(rising, self.base * self.initial_ratio, self.base)
        end = tf.where(rising, self.base, self.base * self.final_ratio)
        return end + (start - end) * 0.5 * (1.0 + tf.cos(math.pi * progress))

    def end_of_evaluation(self, results: dict[str, float]) -> bool:
        """Feeds an evaluation to `plateau`; returns True when it lowered the rate."""
        if self.kind != "plateau" or self.plateau.update(results):
            return False
        if self.plateau.evaluations_since_best.numpy() < self.plateau_patience:
            return False
        self.reductions.assign_add(1)
        self.plateau.evaluations_since_best.assign(0)
        return True

    def get_config(self):
        return {"kind": self.kind, "base": self.base, "warmup_steps": self.warmup_steps}
