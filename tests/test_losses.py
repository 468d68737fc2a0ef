import keras
import numpy as np
import pytest
import tensorflow as tf

from models import registry
from tests.helpers import make_config
from trainer.run_inputs import model_settings
from trainer import losses
from settings.errors import TapeloopError

NUM_CLASSES = 4
LABELS = np.array([0, 3, 1, 1, 2, 0])


def softmax(logits):
    exponentials = np.exp(logits - logits.max(axis=1, keepdims=True))
    return exponentials / exponentials.sum(axis=1, keepdims=True)


def sigmoid(logits):
    return 1 / (1 + np.exp(-logits))


# NumPy references: per-example value and its gradient with respect to the logits.
def reference_cross_entropy(targets, logits):
    return -(targets * np.log(softmax(logits))).sum(axis=1), softmax(logits) - targets


def reference_binary_cross_entropy(targets, logits):
    probabilities = sigmoid(logits)
    values = -(targets * np.log(probabilities) + (1 - targets) * np.log(1 - probabilities)).mean(axis=1)
    return values, (probabilities - targets) / logits.shape[1]


def reference_focal(targets, logits, gamma=2.0):
    """-sum_c y_c (1 - p_c)^g log p_c over softmax probabilities, and its gradient in the logits."""
    probabilities = softmax(logits)
    values = -(targets * (1 - probabilities) ** gamma * np.log(probabilities)).sum(axis=1)
    # d/dp_c of -y_c (1 - p_c)^g log p_c, then through dp_c/dz_j = p_c (delta_cj - p_j).
    by_probability = targets * (gamma * (1 - probabilities) ** (gamma - 1) * np.log(probabilities)
                                - (1 - probabilities) ** gamma / probabilities)
    through_softmax = by_probability * probabilities
    return values, through_softmax - probabilities * through_softmax.sum(axis=1, keepdims=True)


REFERENCES = {"cross_entropy": reference_cross_entropy, "binary_cross_entropy": reference_binary_cross_entropy,
              "focal": reference_focal}


def term_and_gradient(loss, labels, logits, example_weights=None):
    logits_variable = tf.Variable(logits)
    weights = None if example_weights is None else tf.constant(example_weights)
    with tf.GradientTape() as tape:
        (value,) = loss.terms(tf.constant(labels), logits_variable, example_weights=weights).values()
    return value.numpy(), tape.gradient(value, logits_variable).numpy()


CLASS_WEIGHTS = (1.0, 2.0, 0.5, 4.0)
SAMPLE_WEIGHTS = np.array([0.5, 2.0, 1.0, 0.25, 1.5, 0.75])


def weightings():
    """(name, tapeloop's example weights or None, the NumPy reference weights)."""
    class_only = np.array(CLASS_WEIGHTS)[LABELS]
    both = class_only * SAMPLE_WEIGHTS
    per_class = losses.class_weights(CLASS_WEIGHTS, LABELS, NUM_CLASSES)
    return [
        ("unweighted", None, np.ones(6)),
        ("class_weights", losses.example_weights(LABELS, per_class), class_only * 6 / class_only.sum()),
        ("class_and_sample_weights", losses.example_weights(LABELS, per_class, SAMPLE_WEIGHTS),
         both * 6 / both.sum()),
    ]


@pytest.mark.parametrize("term", sorted(REFERENCES))
@pytest.mark.parametrize("label_format", ["sparse", "one_hot", "soft"])
@pytest.mark.parametrize("weighting", range(3), ids=[name for name, _, _ in weightings()])
def test_each_term_matches_its_numpy_reference_in_value_and_gradient(term, label_format, weighting):
    """Class ids, one-hot rows and soft targets (MixUp/CutMix's mixed rows) against NumPy."""
    _, example_weights, reference_weights = weightings()[weighting]
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(6, NUM_CLASSES)).astype(np.float32) * 3
    targets = np.eye(NUM_CLASSES, dtype=np.float32)[LABELS]
    if label_format == "soft":  # Each row mixes its class with another's, as MixUp does.
        share = rng.uniform(size=(6, 1)).astype(np.float32)
        targets = share * targets + (1 - share) * targets[::-1]
    labels = LABELS.astype(np.int32) if label_format == "sparse" else targets
    loss = losses.WeightedLoss({term: 1.0}, NUM_CLASSES)
    value, gradient = term_and_gradient(loss, labels, logits, example_weights)
    expected_values, expected_gradients = REFERENCES[term](targets.astype(np.float64), logits.astype(np.float64))
    np.testing.assert_allclose(value, (reference_weights * expected_values).sum() / 6, rtol=1e-5)
    np.testing.assert_allclose(gradient, reference_weights[:, None] * expected_gradients / 6, atol=1e-6)


def test_label_smoothing_mixes_the_targets_with_the_uniform_distribution():
    logits = np.random.default_rng(1).normal(size=(6, NUM_CLASSES)).astype(np.float32)
    loss = losses.WeightedLoss({"cross_entropy": 1.0}, NUM_CLASSES, label_smoothing=0.2)
    value, gradient = term_and_gradient(loss, LABELS.astype(np.int32), logits)
    smoothed = np.eye(NUM_CLASSES)[LABELS] * 0.8 + 0.2 / NUM_CLASSES
    expected_values, expected_gradients = reference_cross_entropy(smoothed, logits.astype(np.float64))
    np.testing.assert_allclose(value, expected_values.mean(), rtol=1e-5)
    np.testing.assert_allclose(gradient, expected_gradients / 6, atol=1e-6)


def test_l2_is_half_the_squared_kernels_and_spares_biases_and_norm_parameters(tmp_path):
    config = make_config(tmp_path)
    model = registry.build_model("cnn", (28, 28, 1), 10, **model_settings(config))
    variables = model.trainable_variables
    kernels = [v for v in variables if v.path.endswith("/kernel")]
    assert kernels and len(kernels) < len(variables)  # Biases, gammas and betas exist and are left out.
    with tf.GradientTape() as tape:
        penalty = losses.l2_penalty(variables)
    expected = sum(0.5 * np.sum(v.numpy().astype(np.float64) ** 2) for v in kernels)
    np.testing.assert_allclose(penalty.numpy(), expected, rtol=1e-5)
    for variable, gradient in zip(variables, tape.gradient(penalty, variables)):
        if variable.path.endswith("/kernel"):
            np.testing.assert_allclose(gradient.numpy(), variable.numpy(), rtol=1e-6)
        else:
            assert gradient is None, variable.path


def test_the_total_is_the_weighted_sum_of_the_terms():
    loss = losses.WeightedLoss({"cross_entropy": 1.0, "focal": 0.5, "l2": 1e-3}, NUM_CLASSES)
    kernel = keras.Variable(np.full((3, 3), 2.0, np.float32), name="kernel")
    logits = tf.constant(np.random.default_rng(2).normal(size=(6, NUM_CLASSES)), tf.float32)
    terms = loss.terms(tf.constant(LABELS, tf.int32), logits, [kernel])
    assert set(terms) == {"cross_entropy", "focal", "l2"}
    assert float(terms["l2"]) == pytest.approx(0.5 * 9 * 4)
    expected = float(terms["cross_entropy"]) + 0.5 * float(terms["focal"]) + 1e-3 * float(terms["l2"])
    assert float(loss.total(terms)) == pytest.approx(expected, rel=1e-6)


def test_class_ids_read_both_label_formats():
    np.testing.assert_array_equal(losses.class_ids(tf.one_hot(LABELS, NUM_CLASSES)).numpy(), LABELS)
    np.testing.assert_array_equal(losses.class_ids(tf.constant(LABELS)).numpy(), LABELS)


def test_balanced_class_weights_are_n_over_k_times_the_class_count():
    labels = np.array([0] * 6 + [1] * 3 + [2] * 1)
    np.testing.assert_allclose(losses.class_weights("balanced", labels, 3), [10 / 18, 10 / 9, 10 / 3])
    np.testing.assert_array_equal(losses.class_weights("none", labels, 3), [1, 1, 1])
    # A class absent from training gets weight 0 and does not count in k.
    np.testing.assert_allclose(losses.class_weights("balanced", labels, 4), [10 / 18, 10 / 9, 10 / 3, 0])


def test_example_weights_have_mean_one_whatever_the_class_and_sample_weights():
    labels = np.array([0] * 6 + [1] * 3 + [2] * 1)
    given = losses.example_weights(labels, losses.class_weights((1.0, 2.0, 10.0), labels, 3))
    assert given.mean() == pytest.approx(1.0)
    np.testing.assert_allclose(given[[0, 6, 9]] / given[0], [1, 2, 10])
    sample_weights = np.linspace(0.5, 2.0, 10)
    combined = losses.example_weights(labels, losses.class_weights("balanced", labels, 3), sample_weights)
    assert combined.mean() == pytest.approx(1.0)
    np.testing.assert_allclose(combined / combined[0], (np.array([10 / 18] * 6 + [10 / 9] * 3 + [10 / 3])
                                                        * sample_weights) / (10 / 18 * 0.5), rtol=1e-6)


def test_class_weights_of_the_wrong_length_or_all_zero_are_refused():
    labels = np.array([0, 1, 2, 2])
    with pytest.raises(TapeloopError, match="wrong number of weights.*Expected 3, one per class.*found 2"):
        losses.class_weights((1.0, 2.0), labels, 3)
    with pytest.raises(TapeloopError, match="every training example has weight 0"):
        losses.example_weights(labels, np.ones(3), sample_weights=np.zeros(4))


def test_from_config_reads_the_loss_flags(tmp_path):
    config = make_config(tmp_path, "--loss_weights=focal=1,l2=5e-4", "--focal_gamma=1.5",
                         "--label_format=one_hot", "--label_smoothing=0.1")
    loss = losses.from_config(config, num_classes=10)
    assert loss == losses.WeightedLoss({"focal": 1.0, "l2": 5e-4}, 10, 0.1, 1.5)
