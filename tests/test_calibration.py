"""Calibration error and temperature against closed forms and a known generating temperature."""

import numpy as np
import pytest

from diagnosis import calibration


def test_ece_is_the_gap_between_confidence_and_accuracy():
    probabilities = np.tile([0.8, 0.1, 0.1], (10, 1))  # Always 80% sure of class 0...
    labels = np.array([0] * 6 + [1] * 4)  # ... and right 60% of the time.
    assert calibration.expected_calibration_error(probabilities, labels) == pytest.approx(0.2)
    counts, confidence, accuracy = calibration.reliability_bins(probabilities, labels)
    assert counts[12] == 10 and confidence[12] == pytest.approx(0.8) and accuracy[12] == pytest.approx(0.6)
    two_bins = np.array([[0.95, 0.05]] * 4 + [[0.55, 0.45]] * 4)
    right = np.array([0, 0, 0, 0, 0, 0, 1, 1])  # 100% in the 0.95 bin, 50% in the 0.55 bin.
    assert calibration.expected_calibration_error(two_bins, right) == pytest.approx((0.05 + 0.05) / 2)


def test_softmax_with_temperature():
    logits = np.array([[2.0, 0.0]])
    assert calibration.softmax(logits, 2.0)[0, 0] == pytest.approx(np.e / (np.e + 1))


def test_the_fitted_temperature_recovers_the_one_that_generated_the_labels():
    rng = np.random.default_rng(0)
    logits = rng.normal(scale=4.0, size=(20000, 5))
    for true_temperature in (0.5, 2.5):
        probabilities = calibration.softmax(logits, true_temperature)
        labels = np.array([rng.choice(5, p=row) for row in probabilities])
        fitted = calibration.fit_temperature(logits, labels)
        assert fitted == pytest.approx(true_temperature, rel=0.05)
        after = calibration.expected_calibration_error(calibration.softmax(logits, fitted), labels)
        before = calibration.expected_calibration_error(calibration.softmax(logits), labels)
        assert after < 0.02 < before
