"""Batch norm: the layers found, statistics re-estimated against NumPy, and the default momentum."""

import keras
import numpy as np
import pytest

from data import catalog, pipeline
from models import cnn, mlp
from tests.helpers import make_config
from trainer import loop, run_inputs
from trainer.batchnorm import StatisticsEstimator, batch_norm_layers, moving_average_momentum
from trainer.checkpoints import restore_model_weights

EPSILON = 1e-3  # Keras' BatchNormalization default.


def two_norm_model():
    """Batch norm on the pixels, a 1x1 convolution that doubles them, batch norm again."""
    model = keras.Sequential([keras.layers.BatchNormalization(),
                              keras.layers.Conv2D(1, 1, use_bias=False, kernel_initializer="ones"),
                              keras.layers.BatchNormalization()])
    model(np.zeros((1, 28, 28, 1), np.float32))
    model.layers[1].kernel.assign(np.full((1, 1, 1, 1), 2.0, np.float32))
    return model


def test_every_nested_batch_norm_layer_is_found():
    model = cnn.build((28, 28, 1), 10, width=4, depth=3, dropout=0.1)
    model(np.zeros((1, 28, 28, 1), np.float32))
    assert len(batch_norm_layers(model)) == 6  # Two conv blocks a stage.
    assert batch_norm_layers(mlp.build((28, 28, 1), 10, width=8, depth=1, dropout=0.1)) == []


def test_statistics_are_the_mean_over_batches_of_each_batchs_statistics_in_training_mode(tmp_path):
    config = make_config(tmp_path, "--batch_size=4", "--standardize=false")
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (12, 28, 28, 1), dtype=np.uint8)
    train = (images, np.arange(12) % 10)
    model = two_norm_model()
    first, second = batch_norm_layers(model)
    estimator = StatisticsEstimator(model, train, catalog.SYNTHETIC, config)
    estimator.estimate(count=3)  # Three batches of four: all twelve images, in stored order.

    batches = images.astype(np.float64).reshape(3, 4, 28, 28) / 255.0
    means, variances = batches.mean(axis=(1, 2, 3)), batches.var(axis=(1, 2, 3))
    # In training mode the second layer sees the first's output normalized with batch statistics.
    doubled = 2 * (batches - means[:, None, None, None]) / np.sqrt(variances[:, None, None, None] + EPSILON)
    np.testing.assert_allclose(first.moving_mean.numpy(), [means.mean()], rtol=1e-5)
    np.testing.assert_allclose(first.moving_variance.numpy(), [variances.mean()], rtol=1e-4)
    np.testing.assert_allclose(second.moving_mean.numpy(), [doubled.mean(axis=(1, 2, 3)).mean()], atol=1e-5)
    np.testing.assert_allclose(second.moving_variance.numpy(), [doubled.var(axis=(1, 2, 3)).mean()], rtol=1e-4)
    assert first.momentum == second.momentum == 0.99  # The layers' own momentum is back.


def test_kept_puts_the_moving_statistics_back(tmp_path):
    config = make_config(tmp_path, "--batch_size=4")
    images = np.random.default_rng(1).integers(0, 256, (8, 28, 28, 1), dtype=np.uint8)
    model = two_norm_model()
    estimator = StatisticsEstimator(model, (images, np.zeros(8)), catalog.SYNTHETIC, config)
    before = [variable.numpy().copy() for variable in model.non_trainable_variables]
    with estimator.kept():
        estimator.estimate(count=2)
        assert not np.allclose(model.non_trainable_variables[0].numpy(), before[0])
    for variable, value in zip(model.non_trainable_variables, before):
        np.testing.assert_array_equal(variable.numpy(), value)


def test_estimating_leaves_the_dropout_stream_that_training_continues_with_alone(tmp_path):
    # A diagnosis (the gap check's re-estimate) must not change the run it diagnoses.
    config = make_config(tmp_path, "--batch_size=4")
    images = np.random.default_rng(0).integers(0, 256, (12, 28, 28), dtype=np.uint8)
    model = cnn.build((28, 28, 1), 10, width=4, depth=1, dropout=0.5)
    batch = np.random.default_rng(1).uniform(size=(4, 28, 28, 1)).astype(np.float32)
    model(batch)
    state = [variable for variable in model.non_trainable_variables if "seed_generator" in variable.path]
    assert state, "the test needs the model's dropout seed state"
    before = [keras.ops.convert_to_numpy(variable) for variable in state]
    without_estimate = keras.ops.convert_to_numpy(model(batch, training=True))
    for variable, value in zip(state, before):
        variable.assign(value)
    estimator = StatisticsEstimator(model, (images, np.arange(12) % 10), catalog.SYNTHETIC, config)
    with estimator.kept():
        estimator.estimate(count=3)
    np.testing.assert_array_equal(model(batch, training=True), without_estimate)


def test_the_batches_are_drawn_by_seed_without_replacement_and_never_augmented(tmp_path):
    images = np.arange(40, dtype=np.uint8).reshape(40, 1, 1, 1) * np.ones((1, 28, 28, 1), np.uint8)
    train = (images, np.zeros(40))
    config = make_config(tmp_path, "--batch_size=8", "--standardize=false", "--augment_shift=0.2")
    drawn = StatisticsEstimator(two_norm_model(), train, catalog.SYNTHETIC, config).batches(3)
    pixels = np.concatenate([batch.numpy() for batch in drawn]) * 255.0
    assert len(drawn) == 3 and all(batch.shape == (8, 28, 28, 1) for batch in drawn)
    assert np.allclose(pixels, pixels[:, :1, :1, :])  # Each image still one flat value: unshifted.
    values = np.round(pixels[:, 0, 0, 0]).astype(int)
    assert len(set(values)) == 24  # No image twice.
    other_seed = make_config(tmp_path, "--batch_size=8", "--standardize=false", "--seed=1")
    redrawn = StatisticsEstimator(two_norm_model(), train, catalog.SYNTHETIC, other_seed).batches(3)
    assert set(np.round(np.concatenate([b.numpy() for b in redrawn])[:, 0, 0, 0] * 255).astype(int)) != set(values)


def test_the_default_momentum_spans_at_most_an_epoch_and_a_fifth_of_the_run_between_pytorch_and_keras():
    def window(steps_per_epoch, total_steps):
        return 1 / (1 - moving_average_momentum(0.0, steps_per_epoch, total_steps))

    assert window(10, 300) == pytest.approx(10)  # 1,797 digits, 30 epochs: PyTorch's 0.9.
    assert window(3, 90) == pytest.approx(10)  # Never fewer than 10 steps.
    assert window(42, 420) == pytest.approx(42)  # An epoch.
    assert window(42, 42) == pytest.approx(10)  # One epoch: a fifth of it, at least 10.
    assert window(422, 844) == pytest.approx(100) and moving_average_momentum(0.0, 422, 844) == 0.99  # Keras'.
    assert window(422, 300) == pytest.approx(60)  # --max_steps=300: a fifth of the run.
    assert moving_average_momentum(0.95, 3, 30) == 0.95  # --batchnorm_momentum as asked.


@pytest.mark.slow
def test_a_run_of_few_steps_an_epoch_ends_with_moving_statistics_near_the_weights_own(tmp_path):
    """Two epochs of 28 steps: with Keras' 0.99 the moving variance still holds over half of its initial
    ones; with the default (a fifth of the run's 56 steps) it is near the statistics re-estimated with
    the final weights (what --precise_bn_batches computes)."""
    gaps = {}
    for momentum in ("0", "0.99"):
        run_dir = tmp_path / momentum
        results = loop.train(make_config(run_dir, "--epochs=2", f"--batchnorm_momentum={momentum}", "--noscore_test"))
        config = make_config(run_dir)
        model = run_inputs.build_model(config, catalog.SYNTHETIC)
        restore_model_weights(model, str(run_dir / "checkpoints"))
        moving = [keras.ops.convert_to_numpy(layer.moving_variance) for layer in batch_norm_layers(model)]
        StatisticsEstimator(model, pipeline.prepare_data(config).train, catalog.SYNTHETIC, config).estimate(8)
        precise = [keras.ops.convert_to_numpy(layer.moving_variance) for layer in batch_norm_layers(model)]
        gaps[momentum] = np.mean([np.mean(np.abs(np.log(m / p))) for m, p in zip(moving, precise)])
        assert results["batchnorm_momentum"] == pytest.approx(1 - 1 / 11.2 if momentum == "0" else 0.99)
    assert gaps["0"] < 0.5 * gaps["0.99"]
