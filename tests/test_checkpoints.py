import os

import keras
import numpy as np
import pytest
import tensorflow as tf

from data import catalog, pipeline
from models import registry
from tests.helpers import UNIT_RANGE_CHECKS, make_config
from trainer.run_inputs import model_settings
from trainer.run_inputs import make_optimizer
from trainer import checkpoints, losses, steps
from settings.errors import TapeloopError
from trainer.schedules import LearningRate


CROSS_ENTROPY = losses.WeightedLoss({"cross_entropy": 1.0}, num_classes=10)


def make_train_step(model, optimizer):
    return steps.make_train_step(model, optimizer, CROSS_ENTROPY,
                                 steps.make_metrics(CROSS_ENTROPY, with_gradients=True), UNIT_RANGE_CHECKS)


def run_checkpoints(folder, model, optimizer, keep=1, *flags):
    """RunCheckpoints in `folder` with a schedule built from `flags`."""
    config = make_config(folder, *flags)
    schedule = LearningRate(config, total_steps=100, steps_per_epoch=10)
    return checkpoints.RunCheckpoints(str(folder), model, optimizer, schedule, keep, config.early_stopping_metric)


def trained_state(run_dir, *flags, train_steps=2):
    config = make_config(run_dir, *flags)
    model = registry.build_model(config.model, (28, 28, 1), 10, **model_settings(config))
    optimizer = make_optimizer(config)
    optimizer.build(model.trainable_variables)
    train_step = make_train_step(model, optimizer)
    images = tf.random.uniform((8, 28, 28, 1), seed=1)
    for _ in range(train_steps):
        train_step(images, tf.range(8) % 10, tf.ones(8))
    return config, model, optimizer


def test_latest_checkpoint_round_trips_model_optimizer_epoch_and_time(tmp_path):
    config, model, optimizer = trained_state(tmp_path, train_steps=3)
    saved = run_checkpoints(tmp_path, model, optimizer, keep=2)
    saved.training_seconds.assign(12.5)
    saved.save_latest(epochs_done=4)

    _, fresh_model, fresh_optimizer = trained_state(tmp_path / "other", train_steps=0)
    restored = run_checkpoints(tmp_path, fresh_model, fresh_optimizer, keep=2)
    assert restored.restore_latest()
    assert int(fresh_optimizer.iterations.numpy()) == 3 and int(restored.epoch.numpy()) == 4
    assert restored.elapsed_seconds() >= float(saved.wall_seconds.numpy()) > 0
    assert float(restored.training_seconds.numpy()) == 12.5
    for expected, actual in zip(model.variables + optimizer.variables,
                                fresh_model.variables + fresh_optimizer.variables):
        if not expected.path.endswith("seed_generator_state"):  # Dropout RNG: deliberately not restored.
            np.testing.assert_array_equal(expected.numpy(), actual.numpy(), err_msg=expected.path)


def test_a_new_run_directory_has_nothing_to_restore(tmp_path):
    _, model, optimizer = trained_state(tmp_path, train_steps=0)
    assert not run_checkpoints(tmp_path, model, optimizer, keep=1).restore_latest()


def test_best_is_saved_only_when_accuracy_improves(tmp_path):
    _, model, optimizer = trained_state(tmp_path)
    run = run_checkpoints(tmp_path, model, optimizer, keep=1)
    assert run.save_best_if_improved({"accuracy": 0.5, "loss/total": 1.0}, epochs_done=1)
    first = run.best.latest_checkpoint
    assert not run.save_best_if_improved({"accuracy": 0.5, "loss/total": 1.2}, epochs_done=2)
    assert not run.save_best_if_improved({"accuracy": 0.4, "loss/total": 0.5}, epochs_done=2)
    assert run.best.latest_checkpoint == first and run.best_metric.best == 0.5


def test_a_tie_on_accuracy_goes_to_the_lower_validation_loss_while_early_stopping_counts_on(tmp_path):
    _, model, optimizer = trained_state(tmp_path)
    run = run_checkpoints(tmp_path, model, optimizer, keep=1)
    assert run.save_best_if_improved({"accuracy": 0.9, "loss/total": 0.4}, epochs_done=1)
    assert not run.save_best_if_improved({"accuracy": 0.9, "loss/total": 0.5}, epochs_done=2)
    assert int(run.best_metric.evaluations_since_best.numpy()) == 1
    assert run.save_best_if_improved({"accuracy": 0.9, "loss/total": 0.3}, epochs_done=3)
    assert int(run.best_metric.evaluations_since_best.numpy()) == 2  # No gain in accuracy since epoch 1.
    assert run.best.latest_checkpoint.endswith(f"ckpt-{int(optimizer.iterations.numpy())}")
    assert float(run.loss_at_best.numpy()) == pytest.approx(0.3)


def test_a_checkpoint_from_before_the_tie_break_resumes_with_the_loss_unknown(tmp_path):
    _, model, optimizer = trained_state(tmp_path)
    run = run_checkpoints(tmp_path, model, optimizer, keep=1)
    run.save_best_if_improved({"accuracy": 0.9, "loss/total": 0.4}, epochs_done=1)
    objects = dict(run._saved_objects)  # What an earlier tapeloop saved: all but loss_at_best.
    del objects["loss_at_best"]
    tf.train.Checkpoint(**objects).save(str(tmp_path / "checkpoints" / "ckpt"))  # Written as ckpt-1.
    _, fresh_model, fresh_optimizer = trained_state(tmp_path / "other", train_steps=0)
    restored = run_checkpoints(tmp_path, fresh_model, fresh_optimizer, keep=1)
    assert restored.restore_latest().endswith("ckpt-1")
    assert restored.best_metric.best == 0.9 and float(restored.loss_at_best.numpy()) == np.inf
    assert int(fresh_optimizer.iterations.numpy()) == 2


def test_best_by_loss_means_lowest_and_survives_a_resume_with_the_schedule_state(tmp_path):
    flags = ("--early_stopping_metric=loss", "--lr_schedule=plateau")
    _, model, optimizer = trained_state(tmp_path)
    run = run_checkpoints(tmp_path, model, optimizer, 1, *flags)
    assert run.save_best_if_improved({"accuracy": 0.5, "loss/total": 0.8}, epochs_done=1)
    assert not run.save_best_if_improved({"accuracy": 0.6, "loss/total": 0.9}, epochs_done=2)
    run.checkpoint.schedule.reductions.assign(2)
    run.save_latest(epochs_done=2)
    _, fresh_model, fresh_optimizer = trained_state(tmp_path / "other", train_steps=0)
    restored = run_checkpoints(tmp_path, fresh_model, fresh_optimizer, 1, *flags)
    assert restored.restore_latest()
    assert restored.best_metric.best == 0.8 and int(restored.best_metric.evaluations_since_best.numpy()) == 1
    assert int(restored.checkpoint.schedule.reductions.numpy()) == 2


def test_keep_limits_the_latest_checkpoints(tmp_path):
    _, model, optimizer = trained_state(tmp_path)
    run = run_checkpoints(tmp_path, model, optimizer, keep=2)
    train_step = make_train_step(model, optimizer)
    for epoch in range(4):
        train_step(tf.zeros((2, 28, 28, 1)), tf.constant([0, 1]), tf.ones(2))
        run.save_latest(epochs_done=epoch)
    assert len(run.latest.checkpoints) == 2


def test_restoring_into_a_different_model_is_a_clear_error(tmp_path):
    _, model, optimizer = trained_state(tmp_path, "--model_width=8")
    run_checkpoints(tmp_path, model, optimizer, keep=1).save_latest(epochs_done=0)
    _, wider, wider_optimizer = trained_state(tmp_path / "other", "--model_width=16", train_steps=0)
    with pytest.raises(TapeloopError) as raised:
        run_checkpoints(tmp_path, wider, wider_optimizer, keep=1).restore_latest()
    assert raised.value.stage == "checkpoint"
    assert "--flagfile=RUN/flags.txt" in raised.value.fix


def test_restore_model_weights_without_checkpoints_is_a_clear_error(tmp_path):
    _, model, _ = trained_state(tmp_path, train_steps=0)
    with pytest.raises(TapeloopError, match="no checkpoint in"):
        checkpoints.restore_model_weights(model, str(tmp_path / "best"))


def test_final_weights_are_the_best_checkpoint_or_without_one_the_latest(tmp_path):
    _, model, optimizer = trained_state(tmp_path, train_steps=0)
    saved = run_checkpoints(tmp_path, model, optimizer, keep=1)
    saved.save_latest(epochs_done=0)
    assert checkpoints.final_weights_dir(str(tmp_path)) == str(tmp_path / "checkpoints")
    saved.save_best_if_improved({"accuracy": 0.5, "loss/total": 1.0}, epochs_done=0)
    assert checkpoints.final_weights_dir(str(tmp_path)) == str(tmp_path / "best")


def test_saved_model_takes_raw_images_and_returns_the_model_probabilities(tmp_path):
    config, model, _ = trained_state(tmp_path)
    target = str(tmp_path / "saved_model")
    checkpoints.export_saved_model(model, catalog.MNIST, config.standardize, target)
    assert sorted(os.listdir(tmp_path)) == ["saved_model"]  # Nothing partial left behind.
    raw = np.random.default_rng(0).integers(0, 256, (5, 28, 28), dtype=np.uint8)
    expected = tf.nn.softmax(model(pipeline.to_model_input(raw, catalog.MNIST, config.standardize))).numpy()
    loaded = tf.saved_model.load(target)
    from_uint8 = loaded.signatures["serving_default"](images=tf.constant(raw))["probabilities"].numpy()
    from_float = loaded.signatures["serving_float"](images=tf.constant(raw / 255.0, tf.float32))["probabilities"]
    np.testing.assert_allclose(from_uint8, expected, atol=1e-5)
    np.testing.assert_allclose(from_float.numpy(), expected, atol=1e-5)
    np.testing.assert_allclose(from_uint8.sum(axis=1), 1.0, rtol=1e-5)


def test_evaluate_saved_model_scores_raw_images(tmp_path):
    config, model, _ = trained_state(tmp_path)
    checkpoints.export_saved_model(model, catalog.MNIST, config.standardize, str(tmp_path / "sm"))
    raw = np.random.default_rng(1).integers(0, 256, (30, 28, 28), dtype=np.uint8)
    labels = np.arange(30) % 10
    probabilities = tf.nn.softmax(model(pipeline.to_model_input(raw, catalog.MNIST, True))).numpy()
    scores = checkpoints.evaluate_saved_model(str(tmp_path / "sm"), catalog.MNIST, raw, labels, batch_size=7)
    predictions = probabilities.argmax(1)
    assert scores["accuracy"] == pytest.approx(np.mean(predictions == labels))
    for digit in range(10):
        assert scores[f"recall/{digit}"] == pytest.approx(np.mean(predictions[labels == digit] == digit))
    expected_loss = -np.mean(np.log(probabilities[np.arange(30), labels]))
    assert scores["loss/total"] == pytest.approx(expected_loss, rel=1e-4)


class LayersInAList(keras.Model):
    """The Keras 3 pitfall: a list of layers is invisible to tf.train.Checkpoint."""

    def __init__(self):
        super().__init__(name="layers_in_a_list")
        self.blocks = [keras.layers.Dense(4), keras.layers.BatchNormalization()]
        self.head = keras.layers.Dense(10)

    def call(self, images, training=False):
        x = keras.ops.reshape(images, (-1, 784))
        for block in self.blocks:
            x = block(x, training=training)
        return self.head(x)


def test_a_model_whose_variables_checkpoints_would_lose_is_refused(tmp_path):
    model = LayersInAList()
    model(tf.zeros((1, 28, 28, 1)))
    optimizer = keras.optimizers.Adam()
    optimizer.build(model.trainable_variables)
    with pytest.raises(TapeloopError) as raised:
        run_checkpoints(tmp_path, model, optimizer, keep=1)
    assert raised.value.stage == "checkpoint"
    assert "moving_mean" in raised.value.found and "keras.Sequential" in raised.value.fix


@pytest.mark.parametrize("name", ["cnn", "mlp"])
def test_the_built_in_models_are_fully_checkpointed(tmp_path, name):
    config = make_config(tmp_path, f"--model={name}")
    model = registry.build_model(name, (28, 28, 1), 10, **model_settings(config))
    checkpoints.assert_checkpoint_covers(model)


def test_evaluate_saved_model_feeds_float_images_through_the_float_signature(tmp_path):
    config = make_config(tmp_path)
    model = registry.build_model(config.model, (28, 28, 1), 10, **model_settings(config))
    checkpoints.export_saved_model(model, catalog.MNIST, True, str(tmp_path / "sm"))
    raw = np.random.default_rng(2).integers(0, 256, (12, 28, 28)).astype(np.uint8)
    labels = np.arange(12) % 10
    as_uint8 = checkpoints.evaluate_saved_model(str(tmp_path / "sm"), catalog.MNIST, raw, labels, 5)
    as_float = checkpoints.evaluate_saved_model(str(tmp_path / "sm"), catalog.MNIST, raw.astype(np.float32) - 128,
                                                labels, 5, input_range=(-128.0, 127.0))
    assert as_float["loss/total"] == pytest.approx(as_uint8["loss/total"], rel=1e-4)


def test_checkpoints_are_found_from_their_files_in_step_order(tmp_path):
    for name in ("ckpt-9.index", "ckpt-10.index", "ckpt-10.data-00000-of-00001", "ckpt-11_temp", "checkpoint",
                 "ckpt-x.index", "notes.txt"):
        (tmp_path / name).write_text("")
    assert checkpoints.checkpoint_prefixes(str(tmp_path)) == [str(tmp_path / "ckpt-9"), str(tmp_path / "ckpt-10")]
    assert checkpoints.latest_checkpoint(str(tmp_path)) == str(tmp_path / "ckpt-10")
    assert checkpoints.checkpoint_prefixes(str(tmp_path / "absent")) == []


def test_a_deleted_state_file_is_rebuilt_so_the_manager_keeps_pruning(tmp_path):
    _, model, optimizer = trained_state(tmp_path)
    run = run_checkpoints(tmp_path, model, optimizer, 2)
    for _ in range(2):
        optimizer.iterations.assign_add(1)
        run.save_latest(epochs_done=0)
    (tmp_path / "checkpoints" / "checkpoint").unlink()
    run = run_checkpoints(tmp_path, model, optimizer, 2)
    assert tf.train.get_checkpoint_state(str(tmp_path / "checkpoints")) is not None
    optimizer.iterations.assign_add(1)
    run.save_latest(epochs_done=0)
    assert [os.path.basename(path) for path in checkpoints.checkpoint_prefixes(str(tmp_path / "checkpoints"))] \
        == ["ckpt-4", "ckpt-5"]  # The oldest (step 3) was pruned: the manager knew of it.


def test_a_failed_export_leaves_the_previous_saved_model_in_place(tmp_path, monkeypatch):
    config, model, _ = trained_state(tmp_path)
    target = str(tmp_path / "sm")
    checkpoints.export_saved_model(model, catalog.MNIST, config.standardize, target)
    before = {name: (tmp_path / "sm" / name).read_bytes() for name in ("saved_model.pb",)}

    def disk_full(module, path, signatures):
        os.makedirs(os.path.join(path, "variables"))
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(tf.saved_model, "save", disk_full)
    with pytest.raises(TapeloopError, match=r"\[export\] could not write the SavedModel .*No space left on device"):
        checkpoints.export_saved_model(model, catalog.MNIST, config.standardize, target)
    assert (tmp_path / "sm" / "saved_model.pb").read_bytes() == before["saved_model.pb"]
    assert sorted(os.listdir(tmp_path)) == sorted(set(os.listdir(tmp_path)) - {"sm.partial"})
    assert not (tmp_path / "sm.partial").exists()


def test_an_export_interrupted_between_its_two_renames_is_put_back(tmp_path):
    config, model, _ = trained_state(tmp_path)
    target = tmp_path / "sm"
    checkpoints.export_saved_model(model, catalog.MNIST, config.standardize, str(target))
    os.replace(target, tmp_path / "sm.previous")  # The state a crash after the first rename leaves.
    checkpoints.load_saved_model(str(tmp_path / "sm.previous"))
    checkpoints.export_saved_model(model, catalog.MNIST, config.standardize, str(target))
    assert checkpoints.load_saved_model(str(target)) is not None
    assert not (tmp_path / "sm.previous").exists()
