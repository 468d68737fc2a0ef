"""Confusion matrix metric and the per-class report derived from it.

Accuracy alone hides imbalance: a model that never predicts a rare class loses
little accuracy. Evaluation therefore reports each class's precision and recall
and the balanced accuracy (the mean recall over classes present).
"""

import keras
import numpy as np
import tensorflow as tf


class ConfusionMatrix(keras.metrics.Metric):
    """Counts of (true class, predicted class) pairs, accumulated over batches."""

    def __init__(self, class_names: tuple[str, ...], name: str = "confusion_matrix"):
        super().__init__(name=name)
        self.class_names = tuple(class_names)
        num_classes = len(self.class_names)
        self.counts = self.add_variable(shape=(num_classes, num_classes), initializer="zeros",
                                        dtype="int64", name="counts")

    def update_state(self, class_ids, logits):
        predictions = tf.argmax(logits, axis=-1, output_type=tf.int32)
        self.counts.assign_add(tf.math.confusion_matrix(
            class_ids, predictions, num_classes=len(self.class_names), dtype=tf.int64))

    def result(self):
        return self.counts.value

    def report(self) -> dict[str, float]:
        """Scalars keyed by TensorBoard tag: balanced_accuracy, recall/<class>, precision/<class>."""
        return class_report(np.asarray(self.result()), self.class_names)


def class_report(confusion: np.ndarray, class_names: tuple[str, ...]) -> dict[str, float]:
    """Per-class precision and recall and the balanced accuracy of a confusion matrix (rows: truth).

    A class without examples has no recall and is left out of the balanced
    accuracy; a class never predicted has precision 0.
    """
    correct = np.diag(confusion).astype(np.float64)
    examples, predicted = confusion.sum(axis=1), confusion.sum(axis=0)
    recall = np.divide(correct, examples, out=np.full(len(correct), np.nan), where=examples > 0)
    precision = np.divide(correct, predicted, out=np.zeros(len(correct)), where=predicted > 0)
    report = {"balanced_accuracy": float(np.nanmean(recall)) if np.any(examples > 0) else 0.0}
    for name, class_recall, class_precision, count in zip(class_names, recall, precision, examples):
        if count:
            report[f"recall/{name}"] = float(class_recall)
        report[f"precision/{name}"] = float(class_precision)
    return report


def score_tag(metric: str) -> str:
    """The evaluation scores' key of an --early_stopping_metric / --metric name."""
    return "loss/total" if metric == "loss" else metric


class MetricTracker(tf.Module):
    """The best value of one evaluation metric so far and the evaluations since it was reached.

    `metric` is `accuracy`, `balanced_accuracy` (higher is better) or `loss`
    (lower is better). Its variables go into the run's checkpoints, so best/,
    early stopping and the plateau schedule carry on across resumes.
    """

    def __init__(self, metric: str):
        super().__init__(name=f"{metric}_tracker")
        self.metric = metric
        self.tag = score_tag(metric)
        self._sign = -1.0 if metric == "loss" else 1.0
        self._best_score = tf.Variable(-np.inf, dtype=tf.float64, trainable=False, name="best_score")
        self.evaluations_since_best = tf.Variable(0, dtype=tf.int64, trainable=False, name="evaluations_since_best")

    @property
    def best(self) -> float:
        """The best value seen (-inf for accuracies, +inf for the loss, before any evaluation)."""
        return self._sign * float(self._best_score.numpy())

    def update(self, results: dict[str, float], loss_at_best: tf.Variable | None = None) -> bool:
        """Reads the metric from an evaluation's results; returns True if it is a new best.

        Given `loss_at_best` (the validation loss of the best evaluation so far, kept up to date
        here), a tie on an accuracy goes to the lower loss: on a small split many evaluations
        share an accuracy while the model still improves. A tie won this way does not restart
        the count of evaluations since the metric last improved (early stopping, the plateau).
        """
        score, best = self._sign * results[self.tag], float(self._best_score.numpy())
        if score > best:
            self._best_score.assign(score)
            self.evaluations_since_best.assign(0)
            if loss_at_best is not None:
                loss_at_best.assign(results["loss/total"])
            return True
        self.evaluations_since_best.assign_add(1)
        if (loss_at_best is not None and self.metric != "loss" and score == best
                and results["loss/total"] < float(loss_at_best.numpy())):
            loss_at_best.assign(results["loss/total"])
            return True
        return False
