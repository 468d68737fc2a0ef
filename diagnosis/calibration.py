"""How far predicted confidence is from accuracy: expected calibration error, the reliability
diagram's bins, and the softmax temperature that fixes it (Guo et al., 2017)."""

import numpy as np

BINS = 15  # Guo et al.'s choice.


def softmax(logits: np.ndarray, temperature: float = 1.0) -> np.ndarray:
    scaled = np.asarray(logits, np.float64) / temperature
    scaled -= scaled.max(axis=1, keepdims=True)
    exponentials = np.exp(scaled)
    return exponentials / exponentials.sum(axis=1, keepdims=True)


def reliability_bins(probabilities: np.ndarray, labels: np.ndarray, bins: int = BINS):
    """Per equal-width confidence bin: (count, mean confidence, accuracy) of the top predictions."""
    confidence = probabilities.max(axis=1)
    correct = probabilities.argmax(axis=1) == labels
    which = np.minimum((confidence * bins).astype(int), bins - 1)
    counts = np.bincount(which, minlength=bins)
    mean_confidence = np.bincount(which, confidence, minlength=bins) / np.maximum(counts, 1)
    accuracy = np.bincount(which, correct.astype(float), minlength=bins) / np.maximum(counts, 1)
    return counts, mean_confidence, accuracy


def expected_calibration_error(probabilities: np.ndarray, labels: np.ndarray, bins: int = BINS) -> float:
    """The count-weighted mean gap between confidence and accuracy over the bins."""
    counts, mean_confidence, accuracy = reliability_bins(probabilities, labels, bins)
    return float(np.sum(counts * np.abs(mean_confidence - accuracy)) / len(labels))


def negative_log_likelihood(logits: np.ndarray, labels: np.ndarray, temperature: float) -> float:
    probabilities = softmax(logits, temperature)
    return float(-np.mean(np.log(np.maximum(probabilities[np.arange(len(labels)), labels], 1e-300))))


def fit_temperature(logits: np.ndarray, labels: np.ndarray) -> float:
    """The temperature T minimizing the negative log-likelihood of softmax(logits / T), found by
    golden-section search on log T in [1/20, 20] (the likelihood is unimodal in T)."""
    low, high = np.log(0.05), np.log(20.0)
    ratio = (np.sqrt(5) - 1) / 2
    for _ in range(60):
        left, right = high - ratio * (high - low), low + ratio * (high - low)
        left_loss = negative_log_likelihood(logits, labels, np.exp(left))
        if left_loss < negative_log_likelihood(logits, labels, np.exp(right)):
            high = right
        else:
            low = left
    return float(np.exp((low + high) / 2))
