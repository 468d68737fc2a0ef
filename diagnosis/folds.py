"""Cross-validation folds of a run's training examples, one machinery for the label-issue finding
(out-of-sample probabilities of the training split) and for improve.py's cross-validated judging.

Each fold model is an ordinary run of the run's own flags (loop.train) on the examples of the other
folds, written as an npz file beside it; it predicts the examples of its fold. A fold run whose
folder already holds a finished run is read back, and one stopped midway resumes, as any run does.
"""

import dataclasses
import os

import numpy as np
from absl import logging

from settings.config import TrainConfig
from settings.errors import TapeloopError
from trainer import loop
from trainer.checkpoints import saved_model_probabilities

FOLD_SEED = 11
FOLD_DATA_FILE = "fold.npz"


def random_folds(count: int, folds: int, seed: int) -> np.ndarray:
    """Each of `count` examples' fold, by a permutation drawn from `seed`."""
    return np.random.default_rng([seed, FOLD_SEED]).permutation(count) % folds


def stratified_folds(labels: np.ndarray, folds: int, seed: int) -> np.ndarray:
    """Each example's fold, dealt class by class in an order drawn from `seed`, so that every fold
    holds each class's examples in the same proportion (within one) and the folds' sizes differ by
    at most one."""
    rng = np.random.default_rng([seed, FOLD_SEED])
    fold_of = np.empty(len(labels), np.int64)
    dealt = 0
    for class_id in np.unique(labels):
        members = rng.permutation(np.flatnonzero(labels == class_id))
        fold_of[members] = (dealt + np.arange(len(members))) % folds
        dealt += len(members)
    return fold_of


def fold_config(config: TrainConfig, data_dir: str, run_dir: str, epochs: int, max_steps: int = 0,
                precise_bn_default: int = 50) -> TrainConfig:
    """The run's flags for a fold model: its data from `data_dir` as given, no validation split, no
    schedule or stopping that needs one, one device, and precise batch norm with `precise_bn_default`
    batches if the run had none (short runs need it; 0 keeps the run's setting)."""
    return dataclasses.replace(
        config, dataset="npz", data_dir=data_dir, validation_split=0.0, class_imbalance=1.0, sample_weights=None,
        label_format="sparse", epochs=epochs, max_steps=max_steps, run_dir=run_dir, early_stopping_patience=0,
        lr_schedule="constant" if config.lr_schedule == "plateau" else config.lr_schedule,
        checkpoint_every_steps=0, image_summary_every_steps=0, histogram_every_steps=0, profile_steps=(),
        precise_bn_batches=config.precise_bn_batches or precise_bn_default, strategy="default", cpu_devices=1,
        progress="log", score_test=True)


def write_fold_data(data_dir: str, images: np.ndarray, labels: np.ndarray, held_out: np.ndarray,
                    class_names: tuple[str, ...]) -> None:
    """The fold's npz file: training on the other folds, `held_out` as its test split (written whole once)."""
    path = os.path.join(data_dir, FOLD_DATA_FILE)
    if os.path.isfile(path):
        return
    os.makedirs(data_dir, exist_ok=True)
    partial = path + ".partial.npz"
    np.savez(partial, x_train=images[~held_out], y_train=labels[~held_out], x_test=images[held_out],
             y_test=labels[held_out], class_names=np.array(class_names))
    os.replace(partial, path)


def refuse_other_data(config: TrainConfig) -> None:
    """Refuses a fold-model run whose data is not a fold file: a fold model scores its test split, which
    must be its held-out fold (part of the training data), never a dataset's real test split."""
    if config.dataset != "npz" or not os.path.isfile(os.path.join(config.data_dir or "", FOLD_DATA_FILE)):
        raise TapeloopError(stage="search", problem="a fold model's flags name other data than a fold file",
                            expected=f"--dataset=npz and a --data_dir holding {FOLD_DATA_FILE} (written by improve.py)",
                            found=f"--dataset={config.dataset} --data_dir={config.data_dir}",
                            fix="--fold_models is for the studies improve.py creates; leave it out of other searches")


def finished(run_dir: str) -> bool:
    return os.path.isfile(os.path.join(run_dir, "results.json")) and os.path.isdir(os.path.join(run_dir,
                                                                                                "saved_model"))


@dataclasses.dataclass(frozen=True)
class Folds:
    """A run's training examples cut into folds, the fold files under `data_folder` (data_0, ...)."""

    images: np.ndarray
    labels: np.ndarray
    class_names: tuple[str, ...]
    fold_of: np.ndarray
    data_folder: str

    @property
    def count(self) -> int:
        return int(self.fold_of.max()) + 1

    def fold_runs(self, config: TrainConfig, runs_folder: str, epochs: int, max_steps: int = 0,
                  precise_bn_default: int = 50) -> list[TrainConfig]:
        """The settings of `config`'s fold models, one a fold, in `runs_folder`/fold_K, their data written."""
        runs = []
        for fold in range(self.count):
            data_dir = os.path.join(self.data_folder, f"data_{fold}")
            write_fold_data(data_dir, self.images, self.labels, self.fold_of == fold, self.class_names)
            runs.append(fold_config(config, data_dir, os.path.join(runs_folder, f"fold_{fold}"), epochs, max_steps,
                                    precise_bn_default))
        return runs

    def out_of_fold_probabilities(self, config: TrainConfig, runs_folder: str, epochs: int, max_steps: int = 0,
                                  precise_bn_default: int = 50) -> np.ndarray:
        """Each example's class probabilities from the fold model that never saw it: `config`'s flags
        trained on the other folds, in `runs_folder`/fold_K (read back when finished, resumed when not)."""
        probabilities = np.zeros((len(self.labels), len(self.class_names)), np.float32)
        for fold, run in enumerate(self.fold_runs(config, runs_folder, epochs, max_steps, precise_bn_default)):
            held_out = self.fold_of == fold
            if not finished(run.run_dir):
                logging.info("Fold model %d of %d: %d examples, %d epochs, in %s.", fold + 1, self.count,
                             int((~held_out).sum()), run.epochs, run.run_dir)
                os.makedirs(run.run_dir, exist_ok=True)
                loop.train(run)
            probabilities[held_out] = saved_model_probabilities(
                os.path.join(run.run_dir, "saved_model"), self.images[held_out], config.eval_batch_size,
                config.input_range)
        return probabilities
