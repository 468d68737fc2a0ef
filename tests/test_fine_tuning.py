"""--freeze=backbone and --unfreeze_after_epochs: frozen variables and batch-norm statistics
bit-identical through training steps, no optimizer slots or decay for them, the backbone's
rate after the unfreeze against the closed-form SGD update, and a resume either side of the
unfreeze equal to an uninterrupted run."""

import numpy as np
import pytest
import tensorflow as tf

from data import catalog
from tests.helpers import UNIT_RANGE_CHECKS, checkpoint_values, make_config
from trainer import fine_tuning, loop, losses, run_inputs, steps
from settings.errors import TapeloopError
from trainer.schedules import LearningRate

CROSS_ENTROPY = losses.WeightedLoss({"cross_entropy": 1.0}, num_classes=10)
SGD = ("--optimizer=sgd", "--momentum=0", "--weight_decay=0", "--learning_rate=0.5", "--dropout=0")


def batch(seed=0):
    rng = np.random.default_rng(seed)
    return (tf.constant(rng.uniform(size=(16, 28, 28, 1)), tf.float32),
            tf.constant(rng.integers(0, 10, 16), tf.int32), tf.ones(16))


def frozen_model_and_optimizers(tmp_path, *flags):
    config = make_config(tmp_path, "--model=cnn", "--freeze=backbone", *flags)
    model = run_inputs.build_model(config, catalog.SYNTHETIC)
    frozen = fine_tuning.freeze(config, model)
    schedule = LearningRate(config, total_steps=100, steps_per_epoch=10)
    optimizer = run_inputs.make_optimizer(config, schedule)
    optimizer.build(model.trainable_variables)
    backbone = fine_tuning.backbone_optimizer(config, frozen, run_inputs.make_optimizer, schedule, optimizer)
    return config, model, frozen, optimizer, backbone


def test_a_frozen_backbone_and_its_batch_norm_statistics_stay_bit_identical(tmp_path):
    config, model, frozen, optimizer, _ = frozen_model_and_optimizers(
        tmp_path, "--optimizer=sgd", "--momentum=0.9", "--weight_decay=0.1", "--learning_rate=0.5")
    head = [model.head.kernel, model.head.bias]
    assert [v.path for v in model.trainable_variables] == [v.path for v in head] and len(frozen) == 4 * 3  # 4 conv-BN layers: kernel, gamma, beta.
    weights = model.weights  # Not the dropout's random-number state.
    before = {variable.path: variable.numpy().copy() for variable in weights}
    train_step = steps.make_train_step(model, optimizer, CROSS_ENTROPY, steps.make_metrics(CROSS_ENTROPY, True),
                                       UNIT_RANGE_CHECKS)
    for seed in range(3):
        train_step(*batch(seed))
    for variable in weights:
        if any(variable is weight for weight in head):
            assert not np.array_equal(variable.numpy(), before[variable.path])
        else:  # Kernels (decay would shrink them), norm scales, moving mean and variance.
            np.testing.assert_array_equal(variable.numpy(), before[variable.path], err_msg=variable.path)
    slots = [variable for variable in optimizer.variables if "momentum" in variable.path]
    assert [tuple(slot.shape) for slot in slots] == [tuple(variable.shape) for variable in head]


def test_after_the_unfreeze_the_backbone_moves_at_its_scale_of_the_rate(tmp_path):
    config, model, frozen, optimizer, backbone = frozen_model_and_optimizers(
        tmp_path, *SGD, "--unfreeze_after_epochs=1", "--epochs=2", "--backbone_lr_scale=0.1")
    fine_tuning.unfreeze(config, model, epoch=1)
    images, labels, weights = batch()
    with tf.GradientTape() as tape:
        total = CROSS_ENTROPY.total(CROSS_ENTROPY.terms(labels, model(images, training=True)))
    gradients = dict(zip((v.path for v in model.trainable_variables),
                         tape.gradient(total, model.trainable_variables)))
    before = {variable.path: variable.numpy().copy() for variable in model.trainable_variables}
    train_step = steps.make_train_step(model, optimizer, CROSS_ENTROPY, steps.make_metrics(CROSS_ENTROPY, True),
                                       UNIT_RANGE_CHECKS, backbone=backbone)
    train_step(images, labels, weights)
    frozen_paths = {variable.path for variable in frozen}
    for variable in model.trainable_variables:
        rate = 0.5 * (0.1 if variable.path in frozen_paths else 1.0)
        np.testing.assert_allclose(variable.numpy(), before[variable.path] - rate * gradients[variable.path].numpy(),
                                   rtol=1e-4, atol=1e-6, err_msg=variable.path)
    assert int(optimizer.iterations) == int(backbone.optimizer.iterations) == 1


@pytest.mark.parametrize("flags, message", [
    (("--unfreeze_after_epochs=2",), "--unfreeze_after_epochs has nothing to unfreeze"),
    (("--freeze=backbone", "--unfreeze_after_epochs=2", "--epochs=3", "--mixed_precision=float16"),
     "float16 loss scaling"),
    (("--freeze=backbone", "--unfreeze_after_epochs=5", "--epochs=1"),
     "--unfreeze_after_epochs=5 can never happen in a run of --epochs=1"),
    (("--freeze=backbone", "--unfreeze_after_epochs=2", "--epochs=2"),
     "--unfreeze_after_epochs=2 can never happen in a run of --epochs=2"),
])
def test_fine_tuning_flags_that_do_not_go_together_are_refused(tmp_path, flags, message):
    config = make_config(tmp_path, *flags)
    with pytest.raises(TapeloopError, match=message):
        fine_tuning.freeze(config, run_inputs.build_model(config, catalog.SYNTHETIC))


@pytest.mark.slow
def test_a_run_resumed_before_and_after_the_unfreeze_ends_as_an_uninterrupted_one(tmp_path, caplog):
    flags = ("--model=cnn", "--dropout=0", "--epochs=2", "--batch_size=128", "--freeze=backbone", "--unfreeze_after_epochs=1",
             "--optimizer=adam", "--learning_rate=0.01")
    loop.train(make_config(tmp_path / "whole", *flags))
    for stop in (9, 17, 28):  # An epoch is 14 steps: stopped while frozen, then after the unfreeze.
        caplog.clear()
        caplog.set_level("INFO", logger="absl")
        assert loop.train(make_config(tmp_path / "resumed", *flags, f"--max_steps={stop}"))["steps"] == stop
        assert ("the backbone is unfrozen" in caplog.text) == (stop != 9)
    prefixes = ("model/", "optimizer/", "backbone_optimizer/")
    whole = checkpoint_values(tmp_path / "whole" / "checkpoints", prefixes)
    continued = checkpoint_values(tmp_path / "resumed" / "checkpoints", prefixes)
    assert whole.keys() == continued.keys() and any(name.startswith("backbone_optimizer/") for name in whole)
    for name, value in whole.items():
        np.testing.assert_allclose(continued[name], value, rtol=1e-5, atol=1e-6, err_msg=name)
