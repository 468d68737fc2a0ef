"""improve.py's judging by cross-validation, for a run whose validation split judges the metric too
coarsely (a long tail leaves its rarest class a handful of validation examples, each worth points).

The run's training and validation examples together are cut into K stratified folds (diagnosis/folds.py,
the machinery the label-issue finding uses). For each fold, a run's settings train on the other folds
and predict it; every example is so predicted once, by a model that never saw it, and two settings'
pooled predictions are compared example by example (the same seed and fold order for both, so the
comparison stays paired). A run's fold models live in STUDY_DIR/folds/<the run's name>: an incumbent's
serve every trial compared with it, across rounds, and a killed fold run resumes.
"""

import dataclasses
import os

import numpy as np

from data import pipeline
from diagnosis import folds
from trainer.run_directory import load_run_config

MIN_FOLDS, MAX_FOLDS = 3, 10
RARE_CLASS_TRAINING = 20  # Examples of the rarest class each fold model should train on, where it can.


def fold_count(labels: np.ndarray) -> int:
    """K: 3, or more when the rarest class is so small that fold models trained on (K - 1) / K of it would
    see fewer than RARE_CLASS_TRAINING of its examples; at most MAX_FOLDS."""
    counts = np.bincount(labels)
    rarest = counts[counts > 0].min()
    return next((count for count in range(MIN_FOLDS, MAX_FOLDS + 1)
                 if rarest * (count - 1) / count >= RARE_CLASS_TRAINING), MAX_FOLDS)


@dataclasses.dataclass(frozen=True, eq=False)
class CrossValidation:
    """The folds every run of an improvement is judged on, and where their fold models go."""

    folds: folds.Folds
    study_dir: str

    @classmethod
    def of(cls, config, data: pipeline.PreparedData, study_dir: str) -> "CrossValidation":
        images, labels, _ = data.training_examples()
        fold_of = folds.stratified_folds(labels, fold_count(labels), config.seed)
        return cls(folds.Folds(images, labels, data.spec.class_names, fold_of,
                               os.path.join(study_dir, "folds", "data")), study_dir)

    @property
    def labels(self) -> np.ndarray:
        return self.folds.labels

    def runs_folder(self, run_dir: str) -> str:
        """STUDY_DIR/folds/<the run's path in the study folder>, or .../start for the run being improved."""
        inside = os.path.relpath(os.path.abspath(run_dir), os.path.abspath(self.study_dir))
        return os.path.join(self.study_dir, "folds", "start" if inside.startswith("..") else inside)

    def fold_arguments(self, run_dir: str) -> tuple:
        """The run's settings and how its fold models train: in their folder, for its epochs, its step
        budget scaled to a fold model's share of the examples, its own batch-norm settings."""
        config = load_run_config(run_dir)
        share = (self.folds.count - 1) / self.folds.count
        return config, self.runs_folder(run_dir), config.epochs, round(config.max_steps * share), 0

    def correct(self, run_dir: str) -> np.ndarray:
        """Which examples the fold models of the run's settings classify right, each predicted by the model
        that did not train on it (trained here unless finished)."""
        probabilities = self.folds.out_of_fold_probabilities(*self.fold_arguments(run_dir))
        return probabilities.argmax(axis=1) == self.labels

    def pending(self, run_dir: str) -> list:
        """The settings of the run's fold models not yet finished."""
        return [run for run in self.folds.fold_runs(*self.fold_arguments(run_dir)) if not folds.finished(run.run_dir)]

    def describe(self) -> str:
        rarest = np.bincount(self.labels)
        return (f"{self.folds.count}-fold cross-validation of the run's {len(self.labels):,} training and validation "
                f"examples (its rarest class: {rarest[rarest > 0].min()}, each judged once); the incumbent's "
                f"{self.folds.count} fold models once per incumbent, and {self.folds.count} per trial beside its run")
