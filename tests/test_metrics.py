import numpy as np
import pytest
import tensorflow as tf

from trainer.metrics import ConfusionMatrix, class_report


def test_class_report_of_a_hand_made_confusion_matrix():
    confusion = np.array([[8, 2, 0],   # class a: 10 examples, 8 right
                          [1, 3, 0],   # class b: 4 examples, 3 right
                          [0, 0, 0]])  # class c: no examples, never predicted
    report = class_report(confusion, ("a", "b", "c"))
    assert report["recall/a"] == 0.8 and report["recall/b"] == 0.75 and "recall/c" not in report
    assert report["precision/a"] == 8 / 9 and report["precision/b"] == 3 / 5 and report["precision/c"] == 0
    assert report["balanced_accuracy"] == pytest.approx((0.8 + 0.75) / 2)


def test_balanced_accuracy_exposes_a_model_that_ignores_the_rare_class():
    confusion = np.array([[99, 0], [1, 0]])  # Always predicts class 0: 99% accurate.
    report = class_report(confusion, ("common", "rare"))
    assert report["balanced_accuracy"] == 0.5 and report["recall/rare"] == 0.0


def test_confusion_matrix_accumulates_batches_and_resets():
    metric = ConfusionMatrix(("a", "b", "c"))
    metric.update_state(tf.constant([0, 1, 2]), tf.constant([[5.0, 0, 0], [0, 0, 1], [0, 0, 1]]))
    metric.update_state(tf.constant([1]), tf.constant([[0.0, 2, 1]]))
    np.testing.assert_array_equal(metric.result(), [[1, 0, 0], [0, 1, 1], [0, 0, 1]])
    assert metric.report()["recall/b"] == 0.5
    metric.reset_state()
    assert np.asarray(metric.result()).sum() == 0
