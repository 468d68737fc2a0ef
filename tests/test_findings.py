"""Each detector on constructed curves and arrays: it fires on its own signature and not on a healthy run."""

import dataclasses

import numpy as np
import pytest

from diagnosis import findings

STEPS_PER_EPOCH = 100


def curves(train_loss, train_accuracy, eval_loss=(), eval_accuracy=(), learning_rate=1e-3, log_every=20):
    train_loss = np.asarray(train_loss, float)
    steps = np.arange(1, len(train_loss) + 1) * log_every
    eval_loss = np.asarray(eval_loss, float)
    return findings.Curves(
        steps=steps, train_loss=train_loss, train_accuracy=np.broadcast_to(np.asarray(train_accuracy, float),
                                                                           train_loss.shape),
        learning_rate=np.broadcast_to(np.asarray(learning_rate, float), train_loss.shape),
        steps_per_epoch=STEPS_PER_EPOCH, eval_epochs=np.arange(1, len(eval_loss) + 1), eval_loss=eval_loss,
        eval_accuracy=np.asarray(eval_accuracy, float), num_classes=10)


def healthy():
    """A run that learns fast and levels off, with a decaying rate: validation close to training."""
    logs = 50
    loss = 0.03 + 2.3 * np.exp(-np.arange(logs) / 4.0)
    accuracy = np.minimum(0.995, 0.5 + np.arange(logs) / 10)
    rate = 1e-3 * (1 + np.cos(np.pi * np.arange(logs) / logs)) / 2 + 1e-6
    return curves(loss, accuracy, eval_loss=[0.08, 0.05, 0.04, 0.035, 0.033, 0.032, 0.031, 0.0305, 0.0303, 0.0302],
                  eval_accuracy=[0.975, 0.982, 0.986, 0.988, 0.989, 0.990, 0.9905, 0.9907, 0.9908, 0.9908],
                  learning_rate=rate)


def test_a_healthy_run_has_no_curve_finding():
    assert findings.from_curves(healthy()) == []


def test_overfitting_is_a_validation_loss_rising_after_its_minimum_with_a_training_gap():
    run = curves(np.linspace(2, 0.01, 40), 1.0, eval_loss=[0.5, 0.3, 0.25, 0.3, 0.4, 0.5],
                 eval_accuracy=[0.90, 0.93, 0.94, 0.94, 0.935, 0.93])
    finding = findings.overfitting(run)
    assert finding.kind == "overfitting" and finding.cost == pytest.approx(0.07)
    assert "lowest at epoch 3 (0.2500)" in finding.evidence and "rose 100%" in finding.evidence
    assert "--augment_shift" in finding.suggestion and finding.severity == "major"
    memorized = findings.overfitting(curves(np.linspace(2, 0.01, 40), 0.999, eval_loss=[0.5, 0.3, 0.25, 0.24],
                                            eval_accuracy=[0.90, 0.94, 0.96, 0.97]))
    assert "learnt its training set (0.9990) by epoch 4" in memorized.evidence and "2.9 points" in memorized.evidence
    close = curves(np.linspace(2, 0.01, 40), 0.995, eval_loss=[0.5, 0.3, 0.25, 0.24],
                   eval_accuracy=[0.9, 0.95, 0.98, 0.99])
    assert findings.overfitting(close) is None


def test_underfitting_is_low_training_accuracy_with_a_loss_that_stopped_falling():
    run = curves(np.r_[np.linspace(2.3, 1.5, 10), np.full(30, 1.5)], 0.45)
    finding = findings.underfitting(run)
    assert finding.cost == pytest.approx(0.55) and "training accuracy is 0.4500" in finding.evidence
    assert findings.underfitting(curves(np.linspace(2.3, 0.1, 40), 0.97)) is None


def test_a_low_learning_rate_is_a_slow_steady_fall_still_going_at_a_constant_rate():
    run = curves(np.linspace(2.35, 2.20, 40), 0.15, learning_rate=1e-6)
    finding = findings.learning_rate_low(run)
    assert finding is not None and "6% from 2.3500 to 2.2000" in finding.evidence
    assert "to 0.000548" in finding.suggestion and "below adam's usual range" in finding.evidence
    slow_at_a_usual_rate = findings.learning_rate_low(curves(np.linspace(2.35, 2.0, 40), 0.3, learning_rate=1e-3))
    assert "usual range" not in slow_at_a_usual_rate.evidence and "15% from 2.3500" in slow_at_a_usual_rate.evidence
    fell_far = curves(np.r_[13.0, np.linspace(2.4, 0.8, 14)], 0.75, learning_rate=0.1)
    assert findings.learning_rate_low(dataclasses.replace(fell_far, optimizer="sgd")) is None
    decayed = curves(np.linspace(2.35, 2.20, 40), 0.15, learning_rate=np.linspace(1e-3, 1e-5, 40))
    assert findings.learning_rate_low(decayed) is None  # The schedule explains the late fall.
    assert findings.learning_rate_low(healthy()) is None


def test_a_high_learning_rate_is_loss_spikes_after_the_first_epoch():
    loss = np.r_[np.linspace(2.3, 0.4, 10), [0.35, 1.2, 0.5, 0.3, 0.9, 0.28, 0.3, 1.5, 0.4, 0.3]]
    finding = findings.learning_rate_high(curves(loss, 0.85, learning_rate=0.5))
    assert "3 logged training losses" in finding.evidence and "worst: 1.5000 at step 360" in finding.evidence
    assert "to 0.167 or less" in finding.suggestion
    underfit = findings.underfitting(curves(loss, 0.85))
    assert finding.cost > underfit.cost  # The cause ranks above its symptom.
    early_spike = np.r_[[2.3, 3.0, 1.0, 2.5], np.linspace(0.9, 0.1, 20)]  # Within epoch 1: not counted.
    assert findings.learning_rate_high(curves(early_spike, 0.95)) is None
    collapse = findings.learning_rate_high(curves(np.r_[5.2, np.full(11, np.log(10) + 0.004)], 0.1, learning_rate=0.3))
    assert "sits at chance level (2.3026)" in collapse.evidence and "predicts the same" in collapse.evidence
    assert findings.learning_rate_high(curves(np.r_[5.2, np.linspace(2.5, 2.4, 11)], 0.1)) is None
    blow_up = findings.learning_rate_high(curves(np.r_[13.3, np.linspace(2.4, 0.8, 14)], 0.75, learning_rate=0.1))
    assert "reached 13.3000 by step 20, 6 times chance level" in blow_up.evidence


def test_too_few_epochs_is_validation_still_improving_at_the_end():
    run = curves(np.linspace(2, 0.2, 30), 0.95, eval_loss=[0.5, 0.35, 0.3], eval_accuracy=[0.90, 0.93, 0.945])
    finding = findings.too_few_epochs(run)
    assert finding.cost == pytest.approx(0.015) and "--epochs=6" in finding.suggestion
    assert findings.too_few_epochs(healthy()) is None  # Gains under 0.1 point.


def test_capacity_is_training_accuracy_flat_and_no_better_than_validation():
    run = curves(np.r_[np.linspace(2.3, 0.5, 10), np.full(30, 0.5)], 0.86, eval_loss=[0.5, 0.5, 0.5],
                 eval_accuracy=[0.85, 0.855, 0.855])
    finding = findings.capacity(run)
    assert finding.cost == pytest.approx(0.07) and "--model_width" in finding.suggestion


def small_split_run():
    """The digits case: 90 validation images, accuracy 88/90 from epoch 3 on, the loss still falling."""
    eval_loss = [0.40, 0.25, 0.20, 0.15, 0.12, 0.10, 0.09, 0.08]
    return curves(np.linspace(2, 0.05, 40), 0.99, eval_loss=eval_loss,
                  eval_accuracy=[80 / 90, 85 / 90] + [88 / 90] * 5 + [87 / 90])


def test_a_kept_checkpoint_with_a_much_higher_loss_and_no_clear_accuracy_lead_is_reported():
    finding = findings.checkpoint_selection(small_split_run(), "accuracy", kept_epoch=3, validation_examples=90)
    assert finding.cost == pytest.approx(1 / 90) and finding.severity == "moderate"
    assert "epoch 3" in finding.evidence and "epoch 8" in finding.evidence and "1.11 points" in finding.evidence
    assert "--early_stopping_metric=loss" in finding.suggestion and "--weights=latest" in finding.suggestion
    # Not reported: a last checkpoint two examples behind, the last one kept, a healthy run.
    behind = dataclasses.replace(small_split_run(), eval_accuracy=np.r_[small_split_run().eval_accuracy[:-1], 86 / 90])
    assert findings.checkpoint_selection(behind, "accuracy", kept_epoch=3, validation_examples=90) is None
    assert findings.checkpoint_selection(small_split_run(), "accuracy", kept_epoch=8, validation_examples=90) is None
    assert findings.checkpoint_selection(healthy(), "accuracy", kept_epoch=9, validation_examples=5000) is None


def test_a_checkpoint_kept_by_loss_clearly_less_accurate_than_the_last_is_reported():
    overconfident = curves(np.linspace(2, 0.05, 40), 0.99, eval_loss=[0.30, 0.25, 0.27, 0.31, 0.36],
                           eval_accuracy=[0.900, 0.915, 0.925, 0.930, 0.935])
    finding = findings.checkpoint_selection(overconfident, "loss", kept_epoch=2, validation_examples=1000)
    assert finding.cost == pytest.approx(0.02) and "--early_stopping_metric=accuracy" in finding.suggestion
    close = dataclasses.replace(overconfident, eval_accuracy=np.array([0.900, 0.915, 0.915, 0.916, 0.917]))
    assert findings.checkpoint_selection(close, "loss", kept_epoch=2, validation_examples=1000) is None


def test_batch_norm_statistics_cost_what_re_estimating_them_gains():
    finding = findings.batchnorm_statistics("validation", 0.58, 0.95, 50)
    assert finding.cost == pytest.approx(0.37) and "--precise_bn_batches=50" in finding.suggestion
    assert findings.batchnorm_statistics("validation", 0.990, 0.991, 50) is None


def test_class_confusion_names_the_most_confused_pairs_in_order():
    confusion = np.array([[50, 8, 0], [1, 40, 0], [0, 3, 30]])
    finding, pairs = findings.class_confusion("test", confusion, ("a", "b", "c"), pairs=2)
    assert pairs == [(0, 1), (2, 1)] and finding.severity == "info"
    assert "a as b 8 times (13.8% of a), c as b 3 times" in finding.evidence
    assert findings.class_confusion("test", np.diag([5, 5]), ("a", "b")) == (None, [])


def test_class_imbalance_needs_rare_classes_recalled_worse():
    counts, examples = np.array([1000, 1000, 50]), np.array([100, 100, 50])
    finding = findings.class_imbalance(counts, np.array([98, 97, 30]), examples, ("a", "b", "c"), 0.96, 0.85)
    assert "20 times the examples of the smallest (c: 50)" in finding.evidence
    assert "(c) is recalled 0.6000 against 0.9750" in finding.evidence
    assert "--class_weights=balanced" in finding.suggestion and finding.flags == {"class_weights": "balanced"}
    assert findings.class_imbalance(counts, np.array([98, 97, 48]), examples, ("a", "b", "c"), 0.97, 0.97) is None


def test_a_long_tails_rare_classes_are_pooled_since_each_has_few_validation_examples():
    """The long-tail MNIST case: the rarest class's 2 validation examples are both right, yet the
    rarer half of the classes is recalled 6 points worse than the rest."""
    counts = np.array([5305, 3650, 1950, 1191, 672, 375, 245, 155, 87, 57])
    examples = np.array([618, 392, 191, 130, 83, 45, 30, 19, 11, 2])
    correct = np.array([617, 391, 189, 121, 81, 44, 28, 17, 9, 2])
    names = tuple(map(str, range(10)))
    finding = findings.class_imbalance(counts, correct, examples, names, 0.9855, 0.9519)
    assert finding and "(9, 8, 7, 6, 5) is recalled 0.9346 against 0.9894" in finding.evidence
    assert finding.severity == "major"  # Accuracy 3.4 points above balanced accuracy.
    few = findings.class_imbalance(counts, correct // 10, examples // 10, names, 0.9855, 0.9519)
    assert few is None  # The same recalls on a tenth of the examples: within the noise.


def test_a_run_of_one_epoch_still_falling_fast_is_too_few_epochs_without_a_validation_curve():
    """42 steps logged every 5 (one epoch: one evaluation, no curve); the loss halves over the second half."""
    falling = curves(np.geomspace(2.3, 0.3, 8), 0.9, eval_loss=[0.3], eval_accuracy=[0.92], log_every=5)
    finding = findings.too_few_epochs(falling)
    assert finding.flags == {"epochs": 2} and "a run of 1 epoch(s) has no validation curve" in finding.evidence
    levelled = curves(np.r_[np.geomspace(2.3, 0.3, 4), np.full(4, 0.3)], 0.9, eval_loss=[0.3], eval_accuracy=[0.92],
                      log_every=5)
    assert findings.too_few_epochs(levelled) is None
    decayed = curves(np.geomspace(2.3, 0.3, 8), 0.9, learning_rate=np.geomspace(1e-3, 1e-5, 8), log_every=5)
    assert findings.too_few_epochs(decayed) is None  # One-cycle's end explains a late fall by itself.


def test_findings_are_ranked_by_cost_with_descriptive_ones_last():
    cheap = findings.Finding("too_few_epochs", 0.003, "", "")
    costly = findings.Finding("overfitting", 0.05, "", "")
    info = findings.Finding("calibration", None, "", "")
    assert findings.ranked([info, cheap, None, costly]) == [costly, cheap, info]
    assert [f.severity for f in (costly, findings.Finding("x", 0.006, "", ""), cheap, info)] == [
        "major", "moderate", "minor", "info"]


def test_each_fixable_finding_carries_its_flags_computed_from_the_evidence():
    settings = {"model_width": 16, "augment_shift": 0.0, "augment_rotation": 0.0, "randaugment_layers": 0,
                "dropout": 0.3, "optimizer": "adam", "weight_decay": 0.0}
    spiky = np.r_[np.linspace(2.3, 0.3, 20), [0.3, 1.2, 0.3, 1.1, 0.3, 0.3, 0.3, 0.3]]
    for rate in (0.01, 0.1):  # Spikes: a third of the rate; the fix follows the rate.
        found = findings.learning_rate_high(curves(spiky, 0.9, learning_rate=rate))
        assert found.flags == {"learning_rate": pytest.approx(rate / 3, rel=2e-3)}
    collapsed = findings.learning_rate_high(curves(np.full(20, np.log(10)), 0.1, learning_rate=0.5))
    assert collapsed.flags == {"learning_rate": 0.05}  # A collapse: a tenth.
    slow = findings.learning_rate_low(curves(np.linspace(2.3, 1.5, 40), 0.5, learning_rate=1e-6))
    assert slow.flags == {"learning_rate": 0.000548}  # Tenfold is below Adam's usual range: its middle.
    near = findings.learning_rate_low(curves(np.linspace(2.3, 1.5, 40), 0.5, learning_rate=2e-4))
    assert near.flags == {"learning_rate": 0.002}  # Tenfold.
    epochs = findings.too_few_epochs(curves(np.linspace(2, 0.2, 30), 0.95, eval_loss=[0.5, 0.35, 0.3],
                                            eval_accuracy=[0.90, 0.93, 0.945]))
    assert epochs.flags == {"epochs": 6}
    capped = findings.too_few_epochs(dataclasses.replace(  # A --max_steps cap doubles too, or nothing would change.
        curves(np.linspace(2, 0.2, 30), 0.95, eval_loss=[0.5, 0.35, 0.3], eval_accuracy=[0.90, 0.93, 0.945]),
        settings={**settings, "max_steps": 250}))
    assert capped.flags == {"epochs": 6, "max_steps": 500} and "--epochs=6 --max_steps=500" in capped.suggestion
    overfit = dataclasses.replace(curves(np.linspace(2, 0.01, 40), 1.0, eval_loss=[0.3, 0.25, 0.35, 0.45],
                                         eval_accuracy=[0.9, 0.92, 0.92, 0.92]), settings=settings)
    assert findings.overfitting(overfit).flags == {"augment_shift": 0.1, "augment_rotation": 10.0}
    augmented = dataclasses.replace(overfit, settings={**settings, "augment_shift": 0.1, "randaugment_layers": 2})
    assert findings.overfitting(augmented).flags == {"dropout": 0.5}
    flat = dataclasses.replace(curves(np.r_[np.linspace(2.3, 0.5, 10), np.full(30, 0.5)], 0.86,
                                      eval_loss=[0.5, 0.5, 0.5], eval_accuracy=[0.86, 0.86, 0.86]), settings=settings)
    assert findings.capacity(flat).flags == {"model_width": 32}
    assert findings.batchnorm_statistics("validation", 0.8, 0.95, 50).flags == {"precise_bn_batches": 50}
    assert findings.checkpoint_selection(small_split_run(), "accuracy", 3, 90).flags == {"early_stopping_metric": "loss"}
