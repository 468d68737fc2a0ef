"""Weighted loss terms and class weights.

The training objective is `sum(weight[term] * term)` over the terms named in
`--loss_weights`. Per-example terms are averaged as `sum(w_i * loss_i) / B`,
where the example weights `w_i` (class weights times sample weights) are
normalized on the host to mean 1 over the training split, so weighting changes
which examples matter, not the scale of the loss.

Under tf.distribute each replica computes its share of the global batch's
loss: per-example terms through `tf.nn.compute_average_loss` (divided by the
global batch) and `l2` through `tf.nn.scale_regularization_loss`, so that the
gradients summed over replicas are those of the whole batch. Outside
distribution both are the plain values.
"""

import dataclasses

import numpy as np
import tensorflow as tf

from settings.config import TrainConfig
from settings.errors import TapeloopError

@dataclasses.dataclass(frozen=True)
class WeightedLoss:
    """The loss of a run: which terms and their weights; it reads class ids or target rows."""

    weights: dict[str, float]
    num_classes: int
    label_smoothing: float = 0.0
    focal_gamma: float = 2.0

    def terms(self, labels: tf.Tensor, logits: tf.Tensor, variables=(),
              example_weights: tf.Tensor | None = None) -> dict[str, tf.Tensor]:
        """Each named term as a scalar (unweighted by its term weight; this replica's share under
        tf.distribute); `variables` feed `l2`."""
        targets = self.targets(labels)
        per_example = {
            "cross_entropy": lambda: tf.nn.softmax_cross_entropy_with_logits(
                labels=self._smoothed(targets), logits=logits),
            "binary_cross_entropy": lambda: tf.reduce_mean(
                tf.nn.sigmoid_cross_entropy_with_logits(labels=targets, logits=logits), axis=-1),
            "focal": lambda: _softmax_focal(targets, logits, self.focal_gamma),
        }
        terms = {}
        for term in self.weights:
            if term == "l2":
                terms[term] = tf.nn.scale_regularization_loss(l2_penalty(variables))
            else:
                terms[term] = tf.nn.compute_average_loss(per_example[term](), sample_weight=example_weights)
        return terms

    def total(self, terms: dict[str, tf.Tensor]) -> tf.Tensor:
        """The objective: each term times its weight, summed."""
        return tf.add_n([self.weights[term] * value for term, value in terms.items()])

    def targets(self, labels: tf.Tensor) -> tf.Tensor:
        """Labels -> float target rows [B, num_classes]: class ids [B] as one-hot rows, rows [B, K]
        (one-hot, or MixUp/CutMix's soft targets) as they are."""
        if labels.shape.rank == 1:
            return tf.one_hot(labels, self.num_classes, dtype=tf.float32)
        return tf.cast(labels, tf.float32)

    def _smoothed(self, targets):
        return targets * (1.0 - self.label_smoothing) + self.label_smoothing / self.num_classes


def class_ids(labels: tf.Tensor) -> tf.Tensor:
    """Integer class ids [B] from labels of either format: ids as they are, one-hot rows by their argmax."""
    return labels if labels.shape.rank == 1 else tf.argmax(labels, axis=-1, output_type=tf.int32)


def _softmax_focal(targets: tf.Tensor, logits: tf.Tensor, gamma: float) -> tf.Tensor:
    """Focal loss (Lin et al. 2017) over a softmax: -sum_c y_c (1 - p_c)^gamma log p_c."""
    log_probabilities = tf.nn.log_softmax(logits)
    modulation = tf.pow(1.0 - tf.exp(log_probabilities), gamma)
    return -tf.reduce_sum(targets * modulation * log_probabilities, axis=-1)


def l2_penalty(variables) -> tf.Tensor:
    """Half the sum of squares of the kernels; biases and normalization parameters are spared."""
    kernels = [variable for variable in variables if variable.name.endswith("kernel")]
    return tf.add_n([tf.nn.l2_loss(kernel) for kernel in kernels]) if kernels else tf.constant(0.0)


def from_config(config: TrainConfig, num_classes: int) -> WeightedLoss:
    """The WeightedLoss that `config`'s loss flags describe."""
    return WeightedLoss(weights=dict(config.loss_weights), num_classes=num_classes,
                        label_smoothing=config.label_smoothing,
                        focal_gamma=config.focal_gamma)


def class_weights(setting: str | tuple[float, ...], labels: np.ndarray, num_classes: int) -> np.ndarray:
    """One weight per class from --class_weights: none (all 1), balanced (n / (k * count_c)) or given."""
    if setting == "none":
        return np.ones(num_classes)
    if setting == "balanced":
        counts = np.bincount(labels, minlength=num_classes)
        present = counts > 0
        weights = np.zeros(num_classes)
        weights[present] = len(labels) / (present.sum() * counts[present])
        return weights
    if len(setting) != num_classes:
        raise TapeloopError(
            stage="loss", problem="--class_weights has the wrong number of weights",
            expected=f"{num_classes}, one per class", found=f"{len(setting)}: {','.join(map(str, setting))}",
            fix=f"give {num_classes} comma-separated weights, or --class_weights=balanced")
    return np.asarray(setting, dtype=np.float64)


def example_weights(labels: np.ndarray, per_class: np.ndarray,
                    sample_weights: np.ndarray | None = None) -> np.ndarray:
    """Per-example weights (class weight times sample weight), scaled to mean 1 over `labels`."""
    weights = per_class[labels] * (1.0 if sample_weights is None else sample_weights)
    if not weights.sum() > 0:
        raise TapeloopError(
            stage="loss", problem="every training example has weight 0",
            expected="class and sample weights that leave some examples with a positive weight",
            found=f"class weights {per_class.tolist()}", fix="check --class_weights and --sample_weights")
    return (weights * len(weights) / weights.sum()).astype(np.float32)
