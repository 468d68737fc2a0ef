import dataclasses
import math

import numpy as np
import pytest
import tensorflow as tf

from tests.helpers import UNIT_RANGE_CHECKS
from trainer.checks import DivergenceGuard, StageChecks, TrainingWarnings
from settings.errors import TapeloopError

LABELS = np.array([0, 3, 1, 1, 2, 0], np.int32)
IMAGES = tf.fill((6, 28, 28, 1), 0.5)


def explained(checks, images, labels, stage):
    """Runs one stage of `checks` compiled, as the steps do; returns the paragraph of its failure."""
    @tf.function(autograph=False)
    def run(images, labels):
        images, labels = checks.inputs(images, labels)
        if stage == "outputs":
            checks.outputs(images[:, 0, :10, 0] / tf.reduce_min(images))
        return images

    try:
        run(images, labels)
    except tf.errors.InvalidArgumentError as error:
        return checks.explain(error).paragraph()
    raise AssertionError("no check failed")


def test_a_nan_loss_stops_the_run_reporting_the_step_and_learning_rate():
    guard = DivergenceGuard(factor=10)
    guard.check(1, 2.3, 0.5)
    with pytest.raises(TapeloopError) as raised:
        guard.check(200, math.nan, 0.5)
    message = str(raised.value)
    assert "[loss] training diverged by step 200: the loss became nan" in message
    assert "with learning rate 0.5" in message and "lower --learning_rate (try 0.05)" in message
    assert "--warmup_steps" in message and "last good checkpoint" in message


def test_a_loss_that_climbs_past_the_factor_and_its_start_stops_the_run():
    guard = DivergenceGuard(factor=10)
    for step, loss in enumerate([2.3, 1.0, 0.2, 1.9], start=1):
        guard.check(step, loss, 1e-3)  # 1.9 > 10 x 0.2, but below the first loss: still healthy.
    with pytest.raises(TapeloopError, match=r"grew to 2.5, over 10x its lowest value \(0.2\) and above its first"):
        guard.check(5, 2.5, 1e-3)


def test_a_run_that_starts_from_trained_weights_is_judged_against_the_loss_at_chance():
    resumed = DivergenceGuard(factor=10, chance_loss=math.log(10))  # Its first loss is already small.
    for step, loss in enumerate([0.0023, 0.0031, 0.024, 0.3], start=11):
        resumed.check(step, loss, 1e-2)  # Over 10x the lowest, but far below chance: noise, not divergence.
    with pytest.raises(TapeloopError, match=r"grew to 2.5, over 10x its lowest value \(0.0023\) and above the "
                                            r"loss at chance \(2.303\)"):
        resumed.check(15, 2.5, 1e-2)


def test_healthy_noise_near_the_minimum_and_factor_zero_pass():
    guard = DivergenceGuard(factor=10)
    for step, loss in enumerate([2.3, 0.05, 0.3, 0.04, 0.45], start=1):
        guard.check(step, loss, 1e-3)
    unguarded = DivergenceGuard(factor=0)
    for step, loss in enumerate([2.3, 0.1, 500.0], start=1):
        unguarded.check(step, loss, 1e-3)
    with pytest.raises(TapeloopError, match="the loss became inf"):
        unguarded.check(4, math.inf, 1e-3)


def test_one_hot_labels_given_to_a_sparse_loss_are_refused_naming_the_fix():
    with pytest.raises(TapeloopError) as raised:
        UNIT_RANGE_CHECKS.inputs(IMAGES, tf.one_hot(LABELS, 10))
    message = str(raised.value)
    assert "[labels]" in message and "[batch] integer class ids" in message
    assert "shape (6, 10) and dtype float32" in message and "--label_format=one_hot" in message


def test_class_ids_given_to_a_one_hot_loss_are_refused_naming_the_fix():
    one_hot = dataclasses.replace(UNIT_RANGE_CHECKS, label_format="one_hot")
    with pytest.raises(TapeloopError, match=r"Expected \[batch, 10\] one-hot rows.*--label_format=sparse"):
        one_hot.inputs(IMAGES, tf.constant(LABELS))
    with pytest.raises(TapeloopError, match="shape \\(6, 3\\)"):
        one_hot.inputs(IMAGES, tf.one_hot(LABELS, 3))


def test_one_hot_rows_that_are_not_one_hot_are_explained():
    one_hot = dataclasses.replace(UNIT_RANGE_CHECKS, label_format="one_hot")
    smoothed = tf.one_hot(LABELS, 10) * 0.9 + 0.01
    message = explained(one_hot, IMAGES, smoothed, "inputs")
    assert "[labels]" in message and "one-hot rows of 10 zeros and ones summing to 1" in message


SOFT = dataclasses.replace(UNIT_RANGE_CHECKS, label_format="soft")


def mixed_targets(share: float = 0.7) -> tf.Tensor:
    """Each example's row mixed with the next one's, as MixUp does."""
    one_hot = tf.one_hot(LABELS, 10)
    return share * one_hot + (1 - share) * tf.roll(one_hot, 1, axis=0)


def test_soft_targets_pass_the_training_label_check():
    images, labels = SOFT.inputs(IMAGES, mixed_targets())
    np.testing.assert_array_equal(labels, mixed_targets())
    SOFT.inputs(IMAGES, tf.one_hot(LABELS, 10))  # An unmixed example is a one-hot row.


@pytest.mark.parametrize("targets, found", [
    (mixed_targets() * 0.9, "rows summing to 0.9 to 0.9"),
    (mixed_targets(1.3), "label values from -0.3 to 1.3, rows summing to 1 to 1")])
def test_soft_targets_that_do_not_sum_to_one_or_go_negative_are_explained(targets, found):
    message = explained(SOFT, IMAGES, targets, "inputs")
    assert "[labels] the batch's soft targets are not valid" in message
    assert "non-negative shares summing to 1" in message and found in message


def test_class_ids_or_the_wrong_width_are_refused_where_soft_targets_are_expected():
    for labels, found in ((tf.constant(LABELS), "shape (6,) and dtype int32"),
                          (mixed_targets()[:, :8], "shape (6, 8)")):
        with pytest.raises(TapeloopError) as raised:
            SOFT.inputs(IMAGES, labels)
        message = str(raised.value)
        assert "[labels]" in message and "[batch, 10] float rows" in message and found in message


def test_standardized_values_pass_and_values_past_the_range_are_explained():
    standardized = StageChecks("standard", (28, 28, 1), ((0 - 0.1307) / 0.3081, (1 - 0.1307) / 0.3081), 10)
    within = tf.fill((6, 28, 28, 1), (1 - 0.1307) / 0.3081)
    images, _ = standardized.inputs(within, tf.constant(LABELS))
    assert images.shape == within.shape
    message = explained(standardized, within * 255, tf.constant(LABELS), "inputs")
    assert "[batch]" in message and "values in [-0.424, 2.82]" in message and "pixel values from 719.5 to 719.5" in message


def test_non_finite_logits_are_explained():
    message = explained(UNIT_RANGE_CHECKS, tf.zeros((6, 28, 28, 1)), tf.constant(LABELS), "outputs")
    assert "[model output] the model's logits are not finite" in message and "lower --learning_rate" in message


def test_off_adds_no_checks_and_full_checks_every_gradient_and_variable():
    off = dataclasses.replace(UNIT_RANGE_CHECKS, level="off")
    images, labels = off.inputs(tf.fill((6, 28, 28), 300.0), tf.constant(LABELS))
    assert images.shape == (6, 28, 28)  # Passed through untouched.
    full = dataclasses.replace(UNIT_RANGE_CHECKS, level="full")
    variable = tf.Variable([1.0, np.inf])
    with pytest.raises(tf.errors.InvalidArgumentError, match="tapeloop-check:variables"):
        full.update(tf.constant(1.0), tf.constant(1.0), [tf.constant([1.0, 2.0])], [variable])
    UNIT_RANGE_CHECKS.update(tf.constant(1.0), tf.constant(1.0), [tf.constant([1.0, 2.0])], [variable])
    with pytest.raises(tf.errors.InvalidArgumentError, match="tapeloop-check:gradients"):
        full.update(tf.constant(1.0), tf.constant(1.0), [tf.constant([np.nan])], [])


def test_training_warnings_are_issued_once_each():
    warnings = TrainingWarnings(num_classes=10)
    warnings.first_outputs(np.full((4, 10), 0.1))
    warnings.first_outputs(np.full((4, 10), 0.1))
    warnings.first_outputs(np.random.default_rng(0).normal(size=(4, 10)))
    warnings.end_of_first_epoch(first_loss=2.35, loss=2.30)
    for eval_accuracy in (0.95, 0.80, 0.70):
        if warnings.gap_to_explain(0.99, eval_accuracy):
            warnings.accuracy_gap(train_accuracy=0.99, eval_accuracy=eval_accuracy, precise_bn_batches=32)
    assert not warnings.gap_to_explain(0.99, 0.5)  # Explained once: no more evaluations spent on it.
    assert [warning.stage for warning in warnings.issued] == ["model output", "training", "eval"]
    assert "training 0.9900, validation 0.8000" in warnings.issued[2].found
    quiet = TrainingWarnings(num_classes=10)
    quiet.end_of_first_epoch(first_loss=2.35, loss=0.5)
    assert quiet.issued == []


def test_a_wide_accuracy_gap_is_blamed_on_what_closes_it():
    assert not TrainingWarnings.accuracy_gap_is_wide(0.99, 0.89) and TrainingWarnings.accuracy_gap_is_wide(0.99, 0.88)
    cases = [({"precise_bn_accuracy": 0.96}, "batch-norm statistics that lag the weights", "--precise_bn_batches=32"),
             ({"precise_bn_accuracy": 0.80, "raw_weights_accuracy": 0.95}, "weight average lags the weights",
              "lower --ema_decay"),
             ({"precise_bn_accuracy": 0.80, "raw_weights_accuracy": 0.80}, "the model is overfitting", "--dropout"),
             ({}, "the model is overfitting", "--dropout")]
    for scores, problem, fix in cases:
        warnings = TrainingWarnings(num_classes=10)
        warnings.accuracy_gap(train_accuracy=0.97, eval_accuracy=0.74, precise_bn_batches=32, **scores)
        [warning] = warnings.issued
        assert problem in warning.problem and fix in warning.fix
    bn = TrainingWarnings(num_classes=10)
    bn.accuracy_gap(0.97, 0.74, precise_bn_batches=32, precise_bn_accuracy=0.86)  # Closes half of 23 points.
    assert "0.8600 with statistics re-estimated on 32 training batches" in bn.issued[0].found
    ruled_out = TrainingWarnings(num_classes=10)
    ruled_out.accuracy_gap(0.97, 0.74, precise_bn_batches=32, precise_bn_accuracy=0.85)
    assert "re-estimated batch-norm statistics do not close it" in ruled_out.issued[0].found
