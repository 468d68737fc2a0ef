"""One evaluation pass alone, against a model whose predictions are known by construction."""

import dataclasses

import keras
import numpy as np
import pytest
import tensorflow as tf

from data import catalog
from tests.helpers import make_config
from trainer.evaluation import Evaluator, summarize_split

SPEC = dataclasses.replace(catalog.MNIST, image_shape=(2, 2, 1), class_names=("a", "b", "c"))


def pixel_model():
    """Logit c is pixel c of the 2x2 image (the fourth pixel is ignored)."""
    model = keras.Sequential([keras.Input((2, 2, 1)), keras.layers.Flatten(), keras.layers.Dense(3, use_bias=False)])
    model.layers[-1].set_weights([np.eye(4, 3, dtype=np.float32)])
    return model


def test_a_pass_scores_keeps_the_first_mistakes_and_fills_the_confusion_matrix(tmp_path):
    images = np.random.default_rng(0).random((7, 2, 2, 1)).astype(np.float32)
    labels = np.array([0, 1, 2, 0, 1, 2, 0], np.int32)
    predicted = images.reshape(7, 4)[:, :3].argmax(axis=1)
    batches = [(tf.constant(images[:4]), tf.constant(labels[:4])), (tf.constant(images[4:]), tf.constant(labels[4:]))]
    evaluation = Evaluator(make_config(tmp_path, "--nostandardize"), SPEC, pixel_model()).run(batches, 2)

    expected_confusion = np.zeros((3, 3), np.int64)
    np.add.at(expected_confusion, (labels, predicted), 1)
    np.testing.assert_array_equal(evaluation.confusion, expected_confusion)
    assert evaluation.scores["accuracy"] == pytest.approx(np.mean(predicted == labels))
    logits = images.reshape(7, 4)[:, :3]
    cross_entropy = np.log(np.exp(logits).sum(axis=1)) - logits[np.arange(7), labels]
    assert evaluation.scores["loss/total"] == pytest.approx(cross_entropy.mean(), rel=1e-5)
    wrong = np.flatnonzero(predicted != labels)[:2]
    kept_images, kept_true, kept_predicted = evaluation.misclassified
    np.testing.assert_array_equal(kept_images, images[wrong])
    np.testing.assert_array_equal(kept_true, labels[wrong])
    np.testing.assert_array_equal(kept_predicted, predicted[wrong])


def test_one_hot_labels_are_scored_like_class_ids(tmp_path):
    images = np.random.default_rng(1).random((5, 2, 2, 1)).astype(np.float32)
    labels = np.array([2, 1, 0, 0, 1], np.int32)
    config = make_config(tmp_path, "--nostandardize")
    sparse = Evaluator(config, SPEC, pixel_model()).run([(tf.constant(images), tf.constant(labels))])
    one_hot_config = make_config(tmp_path, "--nostandardize", "--label_format=one_hot")
    one_hot = Evaluator(one_hot_config, SPEC, pixel_model()).run([(tf.constant(images), tf.one_hot(labels, 3))])
    assert one_hot.scores == pytest.approx(sparse.scores)
    np.testing.assert_array_equal(one_hot.confusion, sparse.confusion)


def test_a_split_summary_nests_the_per_class_figures():
    values = {"accuracy": 0.5, "loss/total": 1.25, "balanced_accuracy": 0.4, "precision/a": 1.0, "recall/a": 0.5,
              "precision/b": 0.0}
    assert summarize_split(values, ("a", "b")) == {
        "accuracy": 0.5, "loss": 1.25, "balanced_accuracy": 0.4,
        "per_class": {"a": {"precision": 1.0, "recall": 0.5}, "b": {"precision": 0.0, "recall": None}}}
