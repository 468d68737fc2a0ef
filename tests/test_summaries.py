import numpy as np
import pytest

import tensorflow as tf

from tests.helpers import read_scalars, read_texts
from trainer.summaries import (SummaryWriters, confusion_figure, labelled_grid, mosaic, write_figure, write_hparams,
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
    from tests.helpers import read_tensors

    return [(step, tf.io.decode_png(value[2])) for step, value in read_tensors(folder)[tag]]


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
    from tests.helpers import read_tensors

    writers = SummaryWriters(str(tmp_path))
    write_histograms(writers.train, {"weights/dense/kernel": tf.range(100.0)}, step=5)
    write_hparams(writers.run, {"learning_rate": 0.001, "model": "cnn"}, trial_id="run")
    writers.close()
    [(step, buckets)] = read_tensors(tmp_path / "train")["weights/dense/kernel"]
    assert step == 5 and buckets[:, 2].sum() == 100  # (left, right, count) rows.
    assert "_hparams_/session_start_info" in read_tensors(tmp_path)


def test_a_histograms_buckets_count_the_values_between_their_edges(tmp_path):
    from tests.helpers import read_tensors

    values = np.concatenate([np.zeros(7), np.full(3, 2.5), np.linspace(-4.0, 9.0, 40)]).astype(np.float32)
    writers = SummaryWriters(str(tmp_path))
    write_histograms(writers.train, {"weights/x": tf.constant(values)}, step=1)
    writers.close()
    [(_, buckets)] = read_tensors(tmp_path / "train")["weights/x"]
    edges = np.append(buckets[:, 0], buckets[-1, 1])
    assert edges[0] == values.min() and edges[-1] == values.max()
    np.testing.assert_array_equal(buckets[:, 2], np.histogram(values, bins=edges)[0])


def test_hparams_read_back_through_the_plugins_own_format(tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    from tensorboard.plugins.hparams import plugin_data_pb2

    writers = SummaryWriters(str(tmp_path))
    write_hparams(writers.run, {"learning_rate": 0.003, "model": "cnn", "augment_flip": True}, trial_id="lr_3e-3")
    writers.close()
    events = EventAccumulator(str(tmp_path))
    events.Reload()
    content = events.SummaryMetadata("_hparams_/session_start_info").plugin_data.content
    session = plugin_data_pb2.HParamsPluginData.FromString(content).session_start_info
    assert session.group_name == "lr_3e-3"
    assert session.hparams["learning_rate"].number_value == pytest.approx(0.003)
    assert session.hparams["model"].string_value == "cnn" and session.hparams["augment_flip"].bool_value


def test_the_grid_tiles_each_image_into_its_cell_under_a_caption_band():
    images = np.random.default_rng(0).uniform(-0.5, 1.5, size=(5, 4, 6, 1))  # Out of range: clipped.
    tiled = mosaic(images, columns=3, caption_pixels=2)
    assert tiled.shape == (2 * (2 + 4 + 1), 3 * (6 + 1), 3)
    for index, image in enumerate(images):
        top, left = (index // 3) * 7 + 2, (index % 3) * 7
        np.testing.assert_array_equal(tiled[top:top + 4, left:left + 6], np.repeat(np.clip(image, 0, 1), 3, axis=-1))
        assert np.all(tiled[top - 2:top, left:left + 6] == 1.0)  # The caption band is white.
    assert np.all(tiled[7 + 2:, 2 * 7:] == 1.0)  # The sixth cell is empty.


def test_a_figure_is_logged_as_the_pixels_that_were_drawn(tmp_path):
    import matplotlib.pyplot as plt

    figure = plt.figure(figsize=(1, 1))  # write_figure renders at 100 dpi: 100 x 100 pixels.
    axes = figure.add_axes([0, 0, 1, 1])
    axes.axis("off")
    drawn = np.zeros((10, 10, 3))
    drawn[:, :5, 0], drawn[:, 5:, 2] = 1.0, 1.0  # Red left half, blue right half.
    axes.imshow(drawn, interpolation="nearest", aspect="auto")
    writers = SummaryWriters(str(tmp_path))
    write_figure(writers.train, "inputs", figure, step=0)
    writers.close()
    [(_, image)] = image_events(tmp_path / "train", "inputs")
    image = image.numpy()
    assert image.shape == (100, 100, 4)
    np.testing.assert_array_equal(image[5:95, 5:45], np.broadcast_to([255, 0, 0, 255], (90, 40, 4)))
    np.testing.assert_array_equal(image[5:95, 55:95], np.broadcast_to([0, 0, 255, 255], (90, 40, 4)))


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
