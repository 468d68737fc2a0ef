import numpy as np
import tensorflow as tf

from trainer import losses


def reference_cross_entropy(labels, logits):
    shifted = logits - logits.max(axis=1, keepdims=True)
    log_probabilities = shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))
    return -log_probabilities[np.arange(len(labels)), labels].mean()


def test_cross_entropy_matches_a_numpy_reference_in_value_and_gradient():
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(6, 4)).astype(np.float32) * 3
    labels = np.array([0, 3, 1, 1, 2, 0])
    logits_variable = tf.Variable(logits)
    with tf.GradientTape() as tape:
        terms = losses.loss_terms(tf.constant(labels), logits_variable)
    assert set(terms) == set(losses.TERMS)
    np.testing.assert_allclose(terms["cross_entropy"].numpy(), reference_cross_entropy(labels, logits), rtol=1e-5)
    softmax = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    expected_gradient = (softmax - np.eye(4)[labels]) / len(labels)
    np.testing.assert_allclose(tape.gradient(terms["cross_entropy"], logits_variable).numpy(),
                               expected_gradient, atol=1e-6)


def test_total_loss_sums_the_terms():
    assert float(losses.total_loss({"a": tf.constant(1.5), "b": tf.constant(0.25)})) == 1.75
