import numpy as np
import pytest

import tensorflow as tf

from tests.conftest import read_scalars, read_texts
from trainer.summaries import (SummaryWriters, confusion_figure, labelled_grid, write_figure, write_hparams,
                               write_histograms, write_scalars, write_text)


def test_scalars_land_in_the_phase_folder_under_their_tags(tmp_path):
    writers = SummaryWriters(str(tmp_path))
    write_scalars(writers.train, {"loss/total": 2.5, "accuracy": 0.25}, step=10)
    write_scalars(writers.train, {"loss/total": 1.5, "accuracy": 0.5}, step=20)
    write_scalars(writers.eval, {"accuracy": 0.75}, step=20)
    writers.close()
    train = read_scalars(tmp_path / "train")
    assert train["loss/total"] == [(10, 2.5), (20, 1.5)]
    np.testing.assert_allclose([value for _, value in train["accuracy"]], [0.25, 0.5])
    assert read_scalars(tmp_path / "eval") == {"accuracy": [(20, 0.75)]}


def test_text_keeps_its_lines_apart_for_the_text_dashboard(tmp_path):
    writers = SummaryWriters(str(tmp_path))
    write_text(writers.train, "diagnostics", "mnist: 60000 examples\nclasses: 10", step=0)
    writers.close()
    assert read_texts(tmp_path / "train") == {"diagnostics": [(0, "mnist: 60000 examples\n\nclasses: 10")]}
    assert read_scalars(tmp_path / "train") == {}


def image_events(folder, tag):
    from tests.conftest import _read_tensors

    return [(step, tf.io.decode_png(value[2])) for step, value in _read_tensors(folder)[tag]]


def test_labelled_grid_and_confusion_matrix_become_png_images(tmp_path):
    writers = SummaryWriters(str(tmp_path))
    images = np.random.default_rng(0).uniform(size=(10, 28, 28, 1))
    write_figure(writers.train, "inputs", labelled_grid(images, [f"digit {i}" for i in range(10)]), step=3)
    confusion = np.array([[5, 1], [0, 4]])
    write_figure(writers.eval, "confusion_matrix", confusion_figure(confusion, ("cat", "dog")), step=3)
    writers.close()
    [(step, grid)] = image_events(tmp_path / "train", "inputs")
    assert step == 3 and grid.shape[2] == 4 and grid.shape[1] > grid.shape[0]  # Two rows of eight: wide.
    [(_, matrix)] = image_events(tmp_path / "eval", "confusion_matrix")
    assert matrix.shape[0] >= 300 and matrix.shape[1] >= 300


def test_histograms_and_hparams_are_written(tmp_path):
    from tests.conftest import _read_tensors

    writers = SummaryWriters(str(tmp_path))
    write_histograms(writers.train, {"weights/dense/kernel": tf.range(100.0)}, step=5)
    write_hparams(writers.run, {"learning_rate": 0.001, "model": "cnn"}, trial_id="run")
    writers.close()
    [(step, buckets)] = _read_tensors(tmp_path / "train")["weights/dense/kernel"]
    assert step == 5 and buckets[:, 2].sum() == 100  # (left, right, count) rows.
    assert "_hparams_/session_start_info" in _read_tensors(tmp_path)


def test_run_summaries_write_an_evaluation_as_scalars_and_two_figures(tmp_path):
    from data import catalog
    from trainer.evaluation import Evaluation
    from trainer.summaries import RunSummaries

    summaries = RunSummaries(str(tmp_path), catalog.MNIST, standardize=False)
    images = np.zeros((2, 28, 28, 1), np.float32)
    summaries.evaluation(Evaluation({"accuracy": 0.5, "loss/total": 0.7}, np.eye(10, dtype=np.int64),
                                    (images, np.array([1, 2]), np.array([7, 3]))), step=30)
    summaries.close()
    assert read_scalars(tmp_path / "eval") == {"accuracy": [(30, 0.5)], "loss/total": [(30, pytest.approx(0.7))]}
    for tag in ("confusion_matrix", "misclassified"):
        [(step, image)] = image_events(tmp_path / "eval", tag)
        assert step == 30 and image.shape[-1] == 4 and image.shape[0] > 100
