import numpy as np
import pytest
import tensorflow as tf

from data import catalog, pipeline
from tests.conftest import make_config


def labelled_images(count: int):
    """Images whose every pixel equals the example's index, so pairing can be checked after batching."""
    indices = np.arange(count)
    return (np.broadcast_to(indices[:, None, None] % 256, (count, 28, 28)).astype(np.uint8),
            (indices % 10).astype(np.uint8))


def test_split_validation_is_disjoint_complete_and_fixed_by_seed():
    images, labels = labelled_images(100)
    (train_x, train_y), (val_x, val_y) = pipeline.split_validation(images, labels, 0.2, seed=3)
    assert len(val_y) == 20 and len(train_y) == 80
    held_out, kept = set(val_x[:, 0, 0]), set(train_x[:, 0, 0])
    assert not held_out & kept and len(held_out | kept) == 100
    (_, _), (again_x, _) = pipeline.split_validation(images, labels, 0.2, seed=3)
    (_, _), (other_x, _) = pipeline.split_validation(images, labels, 0.2, seed=4)
    np.testing.assert_array_equal(val_x, again_x)
    assert set(other_x[:, 0, 0]) != held_out


def test_zero_validation_split_keeps_everything_for_training():
    images, labels = labelled_images(10)
    train, validation = pipeline.split_validation(images, labels, 0.0, seed=0)
    assert validation is None and len(train[1]) == 10


def test_to_model_input_scales_uint8_adds_channels_and_standardizes():
    raw = tf.constant([[[0, 255], [51, 102]]], tf.uint8)
    scaled = pipeline.to_model_input(raw, catalog.MNIST, standardize=False)
    assert scaled.dtype == tf.float32 and scaled.shape == (1, 2, 2, 1)
    np.testing.assert_allclose(scaled.numpy()[0, :, :, 0], [[0.0, 1.0], [0.2, 0.4]], rtol=1e-6)
    standardized = pipeline.to_model_input(raw, catalog.MNIST, standardize=True)
    np.testing.assert_allclose(standardized.numpy(), (scaled.numpy() - 0.1307) / 0.3081, rtol=1e-5)


def test_to_model_input_keeps_float_images_in_their_range():
    images = tf.fill((2, 28, 28, 1), 0.5)
    np.testing.assert_allclose(pipeline.to_model_input(images, catalog.MNIST, False).numpy(), 0.5)


def test_train_batches_are_full_shuffled_and_keep_images_with_labels(tmp_path):
    config = make_config(tmp_path, "--batch_size=16", "--nostandardize")
    images, labels = labelled_images(70)
    batches = list(pipeline.train_batches((images, labels), catalog.MNIST, config, epoch=0))
    assert len(batches) == pipeline.steps_per_epoch(70, 16) == 4
    seen = []
    for batch_images, batch_labels in batches:
        assert batch_images.shape == (16, 28, 28, 1) and batch_images.dtype == tf.float32
        assert batch_labels.dtype == tf.int32
        index = np.rint(batch_images.numpy()[:, 0, 0, 0] * 255).astype(int)
        np.testing.assert_array_equal(index % 10, batch_labels.numpy())
        seen.extend(index)
    assert len(set(seen)) == 64 and seen != sorted(seen)


def test_epoch_order_is_a_function_of_seed_and_epoch_and_skipping_resumes_it(tmp_path):
    config = make_config(tmp_path, "--batch_size=8")
    split = labelled_images(64)

    def order(epoch, skip=0):
        return [labels.numpy().tolist() for _, labels in
                pipeline.train_batches(split, catalog.MNIST, config, epoch, skip_batches=skip)]

    assert order(0) == order(0)
    assert order(0) != order(1)
    assert order(1, skip=3) == order(1)[3:]


def test_eval_batches_cover_every_example_once_in_order(tmp_path):
    config = make_config(tmp_path, "--eval_batch_size=32")
    images, labels = labelled_images(70)
    batches = list(pipeline.eval_batches((images, labels), catalog.MNIST, config))
    assert [len(batch_labels) for _, batch_labels in batches] == [32, 32, 6]
    np.testing.assert_array_equal(np.concatenate([b.numpy() for _, b in batches]), labels)


def test_prepare_data_splits_train_and_leaves_test_alone(tmp_path):
    config = make_config(tmp_path, "--validation_split=0.25")
    data = pipeline.prepare_data(config, catalog.SYNTHETIC)
    train_size = len(data.train[1]) + len(data.validation[1])
    assert len(data.validation[1]) == pytest.approx(train_size / 4, abs=1)
    assert len(data.test[1]) == 512


def test_pipelines_run_without_the_autotuner_whose_thread_stalls_iterator_teardown(tmp_path):
    config = make_config(tmp_path)
    images, labels = labelled_images(70)
    for batches in (pipeline.train_batches((images, labels), catalog.MNIST, config, epoch=0),
                    pipeline.eval_batches((images, labels), catalog.MNIST, config)):
        assert batches.options().autotune.enabled is False
