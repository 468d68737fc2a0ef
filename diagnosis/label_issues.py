"""Likely mislabeled examples (the label_issues finding): confident learning, from the cleanlab
library, on out-of-sample predicted probabilities.

The test split's probabilities come from the run's own model, which never trained on it. Its
training split's cannot: the model has fit those labels, wrong ones included. They come from
cross-validation instead: the training examples are cut into folds, and for each fold a model of
the run's own flags is trained on the others (through loop.train, in a scratch folder) and
predicts it. That costs `folds` trainings of `epochs` epochs on (folds - 1) / folds of the data:
the cheap mode is 2 folds x 2 epochs (more on small datasets, up to the run's epochs, so that each
fold model trains MIN_FOLD_STEPS steps), the thorough one 5 folds x the run's epochs.
"""

import dataclasses
import tempfile

import numpy as np
from cleanlab.filter import find_label_issues
from cleanlab.rank import get_label_quality_scores

from diagnosis import folds
from settings.config import TrainConfig

MODES = {"cheap": (2, 2), "thorough": (5, None)}  # mode -> (folds, epochs; None: the run's own).
MIN_FOLD_STEPS = 400  # A cheap fold model trains at least this many steps (up to the run's epochs).
IMAGES_KEPT = 32  # Of the likeliest issues, for the report's grid.
MIN_MODEL_ACCURACY = 0.8  # Below it, the model disagreeing with a label says more about the model.
REVIEW_SCORE = "self_confidence"  # cleanlab's default label-quality score: the probability of the given label.


@dataclasses.dataclass(frozen=True)
class LabelIssues:
    """The likely mislabeled examples of one split, most likely first."""

    split: str
    examined: int
    indices: np.ndarray  # Into the split as stored (file order, before any validation split).
    labels: np.ndarray  # Their stored labels...
    suggested: np.ndarray  # ... and the class the out-of-sample probabilities favour.
    images: np.ndarray  # The stored images of the first IMAGES_KEPT.
    model_accuracy: float  # Of the out-of-sample probabilities against the stored labels.
    review: "ReviewQueue | None" = None  # Every example ranked, the lowest label quality first.

    @property
    def usable(self) -> bool:
        """Whether the probabilities are good enough for confident learning to mean anything."""
        return self.model_accuracy >= MIN_MODEL_ACCURACY


@dataclasses.dataclass(frozen=True)
class ReviewQueue:
    """The examples of a split whose labels a person should look at first: the `count` lowest
    label-quality scores (REVIEW_SCORE, from cleanlab) of all its examples, lowest first, whether or not
    confident learning flags them."""

    indices: np.ndarray  # Into the split as stored.
    scores: np.ndarray  # Label quality in [0, 1]: low, likely wrong.
    labels: np.ndarray
    suggested: np.ndarray  # The class the probabilities favour.
    images: np.ndarray  # Their stored images.

    def as_json(self) -> list[dict]:
        return [{"index": int(index), "score": float(score), "label": int(label), "suggested": int(suggested)}
                for index, score, label, suggested in zip(self.indices, self.scores, self.labels, self.suggested)]


def issues_in(split: str, images: np.ndarray, labels: np.ndarray, probabilities: np.ndarray,
              stored_index: np.ndarray | None = None, review_count: int = 0) -> LabelIssues:
    """Confident learning on one split's out-of-sample probabilities (none if they are no better
    than MIN_MODEL_ACCURACY), and its `review_count` examples of lowest label quality."""
    model_accuracy = float(np.mean(probabilities.argmax(axis=1) == labels))
    usable = model_accuracy >= MIN_MODEL_ACCURACY
    ranked = ranked_issues(labels, probabilities) if usable else np.array([], int)
    stored_index = np.arange(len(labels)) if stored_index is None else stored_index
    return LabelIssues(split=split, examined=len(labels), indices=stored_index[ranked], labels=labels[ranked],
                       suggested=probabilities[ranked].argmax(axis=1), images=images[ranked[:IMAGES_KEPT]],
                       model_accuracy=model_accuracy,
                       review=review_queue(images, labels, probabilities, stored_index, review_count)
                       if usable and review_count else None)


def review_queue(images: np.ndarray, labels: np.ndarray, probabilities: np.ndarray, stored_index: np.ndarray,
                 count: int) -> ReviewQueue:
    """The `count` examples of lowest label quality, lowest first (ties in stored order)."""
    scores = get_label_quality_scores(labels, probabilities, method=REVIEW_SCORE)
    lowest = np.argsort(scores, kind="stable")[:count]
    return ReviewQueue(indices=stored_index[lowest], scores=scores[lowest], labels=labels[lowest],
                       suggested=probabilities[lowest].argmax(axis=1), images=images[lowest])


def ranked_issues(labels: np.ndarray, probabilities: np.ndarray) -> np.ndarray:
    """Indices of the likely mislabeled examples, most likely first (cleanlab's confident learning,
    ranked by self-confidence: the probability the model gives the stored label)."""
    present = np.unique(labels)
    if len(present) < 2:
        return np.array([], int)
    return np.asarray(find_label_issues(labels, probabilities, return_indices_ranked_by="self_confidence"), int)


def out_of_fold_probabilities(config: TrainConfig, images: np.ndarray, labels: np.ndarray,
                              class_names: tuple[str, ...], mode: str) -> np.ndarray:
    """Each example's class probabilities from a model that never saw it (cross-validation, in a
    scratch folder)."""
    count, epochs = MODES[mode]
    steps_per_epoch = max(1, int(len(labels) * (count - 1) / count) // config.batch_size)
    epochs = max(epochs, min(config.epochs, -(-MIN_FOLD_STEPS // steps_per_epoch))) if epochs else config.epochs
    with tempfile.TemporaryDirectory(prefix="tapeloop-folds-") as scratch:
        cut = folds.Folds(images, labels, class_names, folds.random_folds(len(labels), count, config.seed), scratch)
        return cut.out_of_fold_probabilities(config, scratch, epochs)


def training_split_issues(config: TrainConfig, training_examples: tuple[np.ndarray, np.ndarray, np.ndarray],
                          class_names: tuple[str, ...], mode: str, review_count: int = 0) -> LabelIssues:
    """The likely mislabeled examples of the stored training split (validation part included), from
    its images, labels and stored indices (PreparedData.training_examples)."""
    images, labels, stored_index = training_examples
    probabilities = out_of_fold_probabilities(config, images, labels, class_names, mode)
    return issues_in("train", images, labels, probabilities, stored_index, review_count)
