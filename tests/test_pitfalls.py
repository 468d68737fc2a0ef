"""The classic accuracy pitfalls, each reproduced through a public entry point (flags, a dataset
directory, a model in the registry, or the step builders) and caught with the stage and the fix."""

import dataclasses
import math

import keras
import numpy as np
import pytest
import tensorflow as tf

from data import catalog, pipeline, sources
from models import registry
from tests.helpers import UNIT_RANGE_CHECKS, make_config, run_script, write_idx
from trainer import loop, losses, preflight, run_inputs, steps
from settings.errors import TapeloopError
from trainer.flags import parse_config
from trainer.run_inputs import model_settings

CROSS_ENTROPY = losses.WeightedLoss({"cross_entropy": 1.0}, num_classes=10)


def write_mnist_folder(folder, train_images=None, train_labels=None, test_images=None, test_labels=None):
    """An MNIST-named IDX folder holding the synthetic dataset, with any array replaced."""
    synthetic = sources.synthetic_splits(catalog.SYNTHETIC)
    arrays = {"train-images-idx3-ubyte.gz": train_images, "train-labels-idx1-ubyte.gz": train_labels,
              "t10k-images-idx3-ubyte.gz": test_images, "t10k-labels-idx1-ubyte.gz": test_labels}
    defaults = [*synthetic["train"], *synthetic["test"]]
    folder.mkdir(parents=True, exist_ok=True)
    for (name, array), default in zip(arrays.items(), defaults):
        write_idx(folder / name, default if array is None else array)
    return folder


def synthetic_train():
    return sources.synthetic_splits(catalog.SYNTHETIC)["train"]


def diagnose_folder(folder, *flags):
    return preflight.diagnose(parse_config(["--dataset=mnist", f"--data_dir={folder}", "--batch_size=32", *flags]))


def flat(text: str) -> str:
    return " ".join(text.split())


def train_step_error(images, labels, loss=CROSS_ENTROPY, checks=UNIT_RANGE_CHECKS) -> str:
    model = registry.build_model("mlp", (28, 28, 1), 10, **model_settings(make_config("/unused", "--model=mlp")))
    optimizer = keras.optimizers.SGD(0.01)
    step = steps.make_train_step(model, optimizer, loss, steps.make_metrics(loss, with_gradients=True), checks)
    weights_before = [variable.numpy().copy() for variable in model.trainable_variables]
    with pytest.raises(TapeloopError) as raised:
        step(images, labels, tf.ones(len(labels)))
    for before, variable in zip(weights_before, model.trainable_variables):
        np.testing.assert_array_equal(before, variable.numpy())  # The bad batch never reached the update.
    return flat(str(raised.value))


def random_batch(size=16):
    rng = np.random.default_rng(0)
    return rng.uniform(size=(size, 28, 28, 1)).astype(np.float32), rng.integers(0, 10, size).astype(np.int32)


# 1. Pixels left at 0-255 where the model expects [0, 1].
@pytest.mark.slow
def test_1_float_pixels_at_0_255_are_caught_in_the_data_and_in_the_batch(tmp_path):
    images, labels = synthetic_train()
    folder = write_mnist_folder(tmp_path / "data", train_images=images.astype(np.float32))
    result = run_script("diagnose", "--dataset=mnist", f"--data_dir={folder}", "--batch_size=32")
    assert result.returncode == 1
    message = flat(result.stderr)
    assert "[raw data] the train images are outside --input_range=0,1" in message
    assert "values from 0 to 254" in message and "Fix: pass --input_range=0,255" in message
    # The fix works: pixels scaled to [0, 1] give a first loss near chance (0-255 inputs give hundreds).
    assert diagnose_folder(folder, "--input_range=0,255")["loss"] < 3 * math.log(10)
    batch, batch_labels = random_batch()
    message = train_step_error(batch * 255, batch_labels)
    assert "[batch]" in message and "values in [0, 1]" in message and "pixel values from" in message
    assert "data.pipeline.to_model_input" in message and "0-255" in message


# 2. uint8 or integer images reaching the model.
def test_2_integer_images_reaching_the_model_are_refused():
    batch, labels = random_batch()
    message = train_step_error(tf.constant((batch * 255).astype(np.uint8)), labels)
    assert "[batch]" in message and "found images of dtype uint8" in message
    assert "tf.cast(images, tf.float32) / 255" in message


# 3. Flat [B, 784] images for a conv model, or a missing channel axis.
def test_3_flat_images_and_a_missing_channel_axis_are_refused(tmp_path):
    images, _ = synthetic_train()
    folder = write_mnist_folder(tmp_path / "data", train_images=images.reshape(len(images), 784))
    with pytest.raises(TapeloopError) as raised:
        diagnose_folder(folder)
    message = flat(str(raised.value))
    assert "[data]" in message and "wrong shape" in message and "found shape [2048, 784]" in message
    assert "flattened rows: reshape them to [N, 28, 28]" in message
    batch, labels = random_batch()
    message = train_step_error(batch[..., 0], labels)
    assert "[batch]" in message and "images of shape (16, 28, 28)" in message
    assert "add the channel axis" in message


# 4. One-hot labels given to a sparse loss, and class ids to a one-hot loss.
def test_4_labels_in_the_other_format_are_refused_naming_the_flag():
    batch, labels = random_batch()
    message = train_step_error(batch, tf.one_hot(labels, 10))
    assert "[labels]" in message and "--label_format=one_hot" in message
    message = train_step_error(batch, labels, checks=dataclasses.replace(UNIT_RANGE_CHECKS, label_format="one_hot"))
    assert "[labels]" in message and "--label_format=sparse" in message


# 5. Labels outside [0, num_classes).
def test_5_labels_outside_the_classes_are_caught_in_the_data_and_in_the_batch(tmp_path):
    images, labels = synthetic_train()
    one_based = (labels.astype(np.int64) + 1).astype(np.uint8)
    with pytest.raises(TapeloopError) as raised:
        diagnose_folder(write_mnist_folder(tmp_path / "data", train_labels=one_based))
    message = flat(str(raised.value))
    assert "[raw data]" in message and "train labels are outside the classes" in message
    assert "labels from 1 to 10" in message and "1-based labels need 1 subtracting" in message
    batch, batch_labels = random_batch()
    message = train_step_error(batch, np.where(batch_labels == 3, 10, batch_labels).astype(np.int32))
    assert "[labels]" in message and "class ids in [0, 10)" in message and "to 10" in message


# 6. A 99:1 class imbalance left unweighted.
@pytest.mark.slow
def test_6_a_99_to_1_imbalance_left_unweighted_is_warned_about_with_the_fix(tmp_path):
    images, _ = synthetic_train()
    labels = np.where(np.arange(2000) % 100 == 0, 1, 0).astype(np.uint8)  # 1980 zeros, 20 ones.
    test_images, test_labels = sources.synthetic_splits(catalog.SYNTHETIC)["test"]
    folder = write_mnist_folder(tmp_path / "data", train_images=images[:2000], train_labels=labels,
                                test_images=test_images[:100], test_labels=np.arange(100, dtype=np.uint8) % 2)
    result = run_script("diagnose", "--dataset=mnist", f"--data_dir={folder}", "--batch_size=32",
                        "--validation_split=0")
    assert result.returncode == 0, result.stderr
    output = flat(result.stdout)
    assert "tapeloop: warning: [raw data] the training classes are imbalanced 99:1" in output
    assert "pass --class_weights=balanced" in output and "1 warning(s)" in output
    weighted = diagnose_folder(folder, "--class_weights=balanced", "--validation_split=0")
    assert weighted["warnings"] == []


# 7. A learning rate so high that the loss diverges or turns NaN (the divergence guard's own
# test is in test_cli.py; here the step's checks catch the NaN the moment it appears).
def test_7_a_loss_that_turns_nan_stops_at_that_step_with_the_learning_rate_fix(tmp_path):
    config = make_config(tmp_path, "--model=mlp", "--optimizer=sgd", "--learning_rate=1e30", "--momentum=0",
                         "--weight_decay=0")
    keras.utils.set_random_seed(0)  # Weights from an earlier test's random state may stay finite for longer.
    model = registry.build_model("mlp", (28, 28, 1), 10, **model_settings(config))
    step = steps.make_train_step(model, run_inputs.make_optimizer(config), CROSS_ENTROPY,
                                 steps.make_metrics(CROSS_ENTROPY, with_gradients=True), UNIT_RANGE_CHECKS)
    batch, labels = random_batch()
    with pytest.raises(TapeloopError) as raised:
        for _ in range(5):
            step(batch, labels, tf.ones(16))
    message = flat(str(raised.value))
    assert "are not finite" in message and "lower --learning_rate" in message and "--warmup_steps" in message


# 8. NaN or Inf in the input data.
def test_8_nan_pixels_in_the_data_are_refused(tmp_path):
    images, _ = synthetic_train()
    images = images.astype(np.float32) / 255
    images[7, 3, 3] = np.nan
    with pytest.raises(TapeloopError) as raised:
        diagnose_folder(write_mnist_folder(tmp_path / "data", train_images=images))
    message = flat(str(raised.value))
    assert "[raw data]" in message and "contain NaN or Inf" in message and "found 1 NaN or Inf values" in message


# 9. Images of different sizes in one dataset, without a resize.
def test_9_test_images_of_another_size_are_refused_with_the_resize_fix(tmp_path):
    test_images = np.zeros((20, 32, 32), np.uint8)
    folder = write_mnist_folder(tmp_path / "data", test_images=test_images, test_labels=np.zeros(20, np.uint8))
    with pytest.raises(TapeloopError) as raised:
        diagnose_folder(folder)
    message = flat(str(raised.value))
    assert "the test images in" in message and "found shape [20, 32, 32]" in message
    assert "resize every image to 28x28" in message


# 10. A model whose head applies softmax before a from-logits loss.
@pytest.mark.slow
def test_10_a_registered_model_with_a_softmax_head_is_warned_about(tmp_path, monkeypatch, caplog):
    def softmax_head(input_shape, num_classes, **settings):
        return keras.Sequential([keras.layers.Flatten(), keras.layers.Dense(32, activation="relu"),
                                 keras.layers.Dense(num_classes, activation="softmax")])

    monkeypatch.setitem(registry.BUILDERS, "softmax_head", softmax_head)
    caplog.set_level("WARNING", logger="absl")
    loop.train(make_config(tmp_path, "--model=softmax_head", "--max_steps=3"))
    message = flat(caplog.text)
    assert "tapeloop: warning: [model output] the model's outputs look like probabilities" in message
    assert "remove the softmax" in message
    caplog.clear()
    loop.train(make_config(tmp_path / "plain", "--model=mlp", "--max_steps=3"))
    assert "look like probabilities" not in caplog.text


# 11. Augmentation reaching evaluation data.
@pytest.mark.slow
def test_11_augmented_evaluation_batches_are_refused_before_the_run_starts(tmp_path, monkeypatch):
    plain_eval_batches = pipeline.eval_batches

    def flipped_eval_batches(*args):  # What adding augmentation to the shared pipeline would do.
        return plain_eval_batches(*args).map(lambda images, labels: (tf.image.flip_left_right(images), labels))

    monkeypatch.setattr(pipeline, "eval_batches", flipped_eval_batches)
    with pytest.raises(TapeloopError) as raised:
        loop.train(make_config(tmp_path / "run"))
    message = flat(str(raised.value))
    assert "[eval] the evaluation batches are not the stored images" in message
    assert "augmentation" in message and "data.pipeline.train_batches only" in message
    assert not (tmp_path / "run").exists()


# 12. Images and labels shuffled separately: the loss stays near log(num_classes).
@pytest.mark.slow
def test_12_labels_shuffled_apart_from_images_are_warned_about_after_the_first_epoch(tmp_path, caplog):
    images, labels = synthetic_train()
    shuffled = np.random.default_rng(1).permutation(labels)
    folder = write_mnist_folder(tmp_path / "data", train_labels=shuffled)
    caplog.set_level("WARNING", logger="absl")
    loop.train(make_config(tmp_path / "run", "--dataset=mnist", f"--data_dir={folder}", "--model=mlp"))
    message = flat(caplog.text)
    assert "tapeloop: warning: [training] the training loss is not falling after the first epoch" in message
    assert "shuffle images and labels together" in message
    caplog.clear()
    loop.train(make_config(tmp_path / "matched", "--dataset=mnist", f"--data_dir={write_mnist_folder(tmp_path / 'ok')}",
                           "--model=mlp"))
    assert "not falling" not in caplog.text
