"""The fold machinery shared by the label-issue finding and improve.py's cross-validated judging."""

import numpy as np
import pytest

from data import catalog, sources
from diagnosis import folds
from settings.errors import TapeloopError
from tests.helpers import make_config
from trainer import loop


def test_fold_models_train_the_runs_model_on_the_given_data_without_a_validation_split(tmp_path):
    config = make_config(tmp_path, "--lr_schedule=plateau", "--early_stopping_patience=2", "--class_imbalance=10",
                         "--epochs=30", "--strategy=mirrored")
    fold = folds.fold_config(config, "/data/fold0", "/scratch/run0", epochs=2)
    assert (fold.dataset, fold.data_dir, fold.run_dir, fold.epochs) == ("npz", "/data/fold0", "/scratch/run0", 2)
    assert fold.validation_split == 0 and fold.early_stopping_patience == 0 and fold.lr_schedule == "constant"
    assert fold.class_imbalance == 1 and fold.precise_bn_batches == 50 and fold.strategy == "default"
    assert (fold.model, fold.model_width, fold.optimizer) == (config.model, config.model_width, config.optimizer)
    assert folds.fold_config(config, "/d", "/r", epochs=2, precise_bn_default=0).precise_bn_batches == 0


def test_stratified_folds_hold_each_class_in_proportion_and_are_even_in_size():
    labels = np.r_[np.zeros(100, int), np.ones(31, int), np.full(7, 2)]
    fold_of = folds.stratified_folds(labels, 3, seed=0)
    for class_id, count in ((0, 100), (1, 31), (2, 7)):
        per_fold = np.bincount(fold_of[labels == class_id], minlength=3)
        assert per_fold.sum() == count and per_fold.max() - per_fold.min() <= 1
    assert np.ptp(np.bincount(fold_of)) <= 1
    assert np.array_equal(fold_of, folds.stratified_folds(labels, 3, seed=0))
    assert not np.array_equal(fold_of, folds.stratified_folds(labels, 3, seed=1))


@pytest.mark.slow
def test_fold_models_are_read_back_once_finished(tmp_path, monkeypatch):
    images, labels = sources.synthetic_splits(catalog.SYNTHETIC)["train"]
    images, labels = images[:192], labels[:192].astype(np.int64)
    config = make_config(tmp_path, "--model=mlp", "--model_width=32", "--batch_size=32")
    cut = folds.Folds(images, labels, catalog.SYNTHETIC.class_names, folds.stratified_folds(labels, 3, 0),
                      str(tmp_path / "data"))
    first = cut.out_of_fold_probabilities(config, str(tmp_path / "runs"), epochs=1)
    assert sorted(path.name for path in (tmp_path / "runs").iterdir()) == ["fold_0", "fold_1", "fold_2"]
    monkeypatch.setattr(loop, "train", lambda config: pytest.fail("a finished fold model was trained again"))
    assert np.array_equal(cut.out_of_fold_probabilities(config, str(tmp_path / "runs"), epochs=1), first)


def test_a_fold_model_study_refuses_data_that_is_not_a_fold_file(tmp_path):
    with pytest.raises(TapeloopError, match="a fold model's flags name other data than a fold file"):
        folds.refuse_other_data(make_config(tmp_path))  # The synthetic dataset: its test split is real.
    (tmp_path / "data").mkdir()
    with pytest.raises(TapeloopError, match="holding fold.npz"):
        folds.refuse_other_data(make_config(tmp_path, "--dataset=npz", f"--data_dir={tmp_path / 'data'}"))
    folds.write_fold_data(str(tmp_path / "data"), np.zeros((4, 28, 28, 1), np.uint8), np.array([0, 1, 0, 1]),
                          np.array([True, False, False, False]), ("a", "b"))
    folds.refuse_other_data(make_config(tmp_path, "--dataset=npz", f"--data_dir={tmp_path / 'data'}"))
