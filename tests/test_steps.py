import dataclasses

import numpy as np
import pytest
import tensorflow as tf

from models import registry
from tests.helpers import UNIT_RANGE_CHECKS, make_config
from trainer.run_inputs import model_settings
from trainer.run_inputs import make_optimizer
from trainer import losses, steps
from trainer.averaging import WeightAverage

CROSS_ENTROPY = losses.WeightedLoss({"cross_entropy": 1.0}, num_classes=10)


def model_and_batch(tmp_path, *flags):
    config = make_config(tmp_path, "--model=mlp", "--model_width=32", "--dropout=0", *flags)
    model = registry.build_model("mlp", (28, 28, 1), 10, **model_settings(config))
    rng = np.random.default_rng(0)
    images = tf.constant(rng.uniform(size=(32, 28, 28, 1)), tf.float32)
    labels = tf.constant(rng.integers(0, 10, 32), tf.int32)
    return config, model, images, labels


def batch_loss(model, images, labels, loss=CROSS_ENTROPY, example_weights=None):
    logits = model(images, training=False)
    return float(loss.total(loss.terms(labels, logits, model.trainable_variables, example_weights)))


def test_one_train_step_lowers_the_loss_on_a_fixed_batch(tmp_path):
    config, model, images, labels = model_and_batch(tmp_path, "--optimizer=sgd", "--learning_rate=0.01")
    optimizer = make_optimizer(config)
    metrics = steps.make_metrics(CROSS_ENTROPY, with_gradients=True)
    train_step = steps.make_train_step(model, optimizer, CROSS_ENTROPY, metrics, UNIT_RANGE_CHECKS)
    before = batch_loss(model, images, labels)
    with tf.GradientTape() as tape:
        loss = CROSS_ENTROPY.total(CROSS_ENTROPY.terms(labels, model(images, training=True), model.trainable_variables))
    expected_norm = float(tf.linalg.global_norm(tape.gradient(loss, model.trainable_variables)))
    returned = float(train_step(images, labels, tf.ones(32)))
    assert abs(returned - before) < 1e-5
    assert batch_loss(model, images, labels) < before
    assert int(optimizer.iterations.numpy()) == 1
    values = steps.read_and_reset(metrics)
    assert values["loss/total"] == values["loss/cross_entropy"] == returned
    assert values["gradients/global_norm"] == pytest.approx(expected_norm, rel=1e-5)
    assert steps.read_and_reset(metrics)["loss/total"] == 0.0  # Reset after reading.


def test_train_step_follows_the_gradient_of_the_weighted_total(tmp_path):
    config, model, images, labels = model_and_batch(tmp_path, "--optimizer=sgd", "--momentum=0",
                                                    "--learning_rate=0.1", "--weight_decay=0")
    loss = losses.WeightedLoss({"cross_entropy": 1.0, "l2": 0.01}, num_classes=10)
    example_weights = tf.constant(np.linspace(0, 2, 32), tf.float32)
    with tf.GradientTape() as tape:
        total = loss.total(loss.terms(labels, model(images, training=True), model.trainable_variables,
                                      example_weights))
    expected = [v - 0.1 * g for v, g in zip(model.trainable_variables,
                                            tape.gradient(total, model.trainable_variables))]
    metrics = steps.make_metrics(loss, with_gradients=True)
    returned = steps.make_train_step(model, make_optimizer(config), loss, metrics, UNIT_RANGE_CHECKS)(images, labels, example_weights)
    np.testing.assert_allclose(float(returned), float(total), rtol=1e-6)
    for variable, value in zip(model.trainable_variables, expected):
        np.testing.assert_allclose(variable.numpy(), value.numpy(), rtol=1e-5, atol=1e-7)
    values = steps.read_and_reset(metrics)
    assert {"loss/total", "loss/cross_entropy", "loss/l2"} <= set(values)
    np.testing.assert_allclose(values["loss/total"], values["loss/cross_entropy"] + 0.01 * values["loss/l2"],
                               rtol=1e-6)


def test_eval_step_leaves_weights_alone_and_reports_per_class_figures(tmp_path):
    _, model, images, labels = model_and_batch(tmp_path)
    weights_before = [v.numpy().copy() for v in model.trainable_variables]
    metrics = steps.make_metrics(CROSS_ENTROPY, class_names=tuple("abcdefghij"))
    eval_step = steps.make_eval_step(model, CROSS_ENTROPY, metrics, UNIT_RANGE_CHECKS)
    eval_step(images[:24], labels[:24])
    eval_step(images[24:], labels[24:])
    values = steps.read_and_reset(metrics)
    predictions = model(images, training=False).numpy().argmax(1)
    truth = labels.numpy()
    np.testing.assert_allclose(values["loss/total"], batch_loss(model, images, labels), rtol=1e-5)
    assert values["accuracy"] == np.mean(predictions == truth)
    recalls = [np.mean(predictions[truth == c] == c) for c in range(10) if np.any(truth == c)]
    np.testing.assert_allclose(values["balanced_accuracy"], np.mean(recalls), rtol=1e-6)
    for before, variable in zip(weights_before, model.trainable_variables):
        np.testing.assert_array_equal(before, variable.numpy())


def test_one_hot_labels_train_and_evaluate_like_class_ids(tmp_path):
    config, model, images, labels = model_and_batch(tmp_path, "--optimizer=sgd")
    one_hot_loss = losses.WeightedLoss({"cross_entropy": 1.0}, 10)
    one_hot = tf.one_hot(labels, 10)
    assert batch_loss(model, images, one_hot, one_hot_loss) == batch_loss(model, images, labels)
    metrics = steps.make_metrics(one_hot_loss, class_names=tuple("abcdefghij"))
    one_hot_checks = dataclasses.replace(UNIT_RANGE_CHECKS, label_format="one_hot")
    steps.make_eval_step(model, one_hot_loss, metrics, one_hot_checks)(images, one_hot)
    assert steps.read_and_reset(metrics)["accuracy"] == np.mean(
        model(images, training=False).numpy().argmax(1) == labels.numpy())
    twin, before = twin_of(model, config), model.trainable_variables[0].numpy().copy()
    for trained, loss, checks, targets in ((model, one_hot_loss, one_hot_checks, one_hot),
                                           (twin, CROSS_ENTROPY, UNIT_RANGE_CHECKS, labels)):
        train_step = steps.make_train_step(trained, make_optimizer(config), loss,
                                           steps.make_metrics(loss, with_gradients=True), checks)
        train_step(images, targets, tf.ones(32))
    for one_hot_trained, id_trained in zip(model.trainable_variables, twin.trainable_variables):
        np.testing.assert_allclose(one_hot_trained.numpy(), id_trained.numpy(), rtol=1e-6, atol=1e-7)
    assert not np.allclose(model.trainable_variables[0].numpy(), before)  # The step did move the weights.


def twin_of(model, config):
    """Another mlp of the same settings, with `model`'s weights."""
    twin = registry.build_model("mlp", (28, 28, 1), 10, **model_settings(config))
    twin.set_weights(model.get_weights())
    return twin


def test_the_compiled_loop_of_n_steps_trains_like_n_single_steps(tmp_path):
    config, looped, images, labels = model_and_batch(tmp_path, "--optimizer=adam", "--learning_rate=0.01")
    single = twin_of(looped, config)
    batches = tf.data.Dataset.from_tensor_slices((images, labels, tf.ones(32))).batch(8)
    loop_optimizer, single_optimizer = make_optimizer(config), make_optimizer(config)
    loop_optimizer.build(looped.trainable_variables)
    train_steps = steps.make_train_loop(looped, loop_optimizer, CROSS_ENTROPY,
                                        steps.make_metrics(CROSS_ENTROPY, with_gradients=True), UNIT_RANGE_CHECKS)
    last_loss = train_steps(iter(batches), 4)
    train_step = steps.make_train_step(single, single_optimizer, CROSS_ENTROPY,
                                       steps.make_metrics(CROSS_ENTROPY, with_gradients=True), UNIT_RANGE_CHECKS)
    losses_one_by_one = [float(train_step(*batch)) for batch in batches]
    assert float(last_loss) == pytest.approx(losses_one_by_one[-1], rel=1e-5)
    assert int(loop_optimizer.iterations.numpy()) == int(single_optimizer.iterations.numpy()) == 4
    for in_loop, one_by_one in zip(looped.trainable_variables, single.trainable_variables):
        np.testing.assert_allclose(in_loop.numpy(), one_by_one.numpy(), rtol=1e-5, atol=1e-6)


def test_clipping_scales_the_update_to_the_global_norm_and_logs_the_norm_before(tmp_path):
    config, model, images, labels = model_and_batch(tmp_path, "--optimizer=sgd", "--momentum=0",
                                                    "--learning_rate=1.0", "--weight_decay=0")
    with tf.GradientTape() as tape:
        total = CROSS_ENTROPY.total(CROSS_ENTROPY.terms(labels, model(images, training=True)))
    norm = float(tf.linalg.global_norm(tape.gradient(total, model.trainable_variables)))
    before = [v.numpy().copy() for v in model.trainable_variables]
    metrics = steps.make_metrics(CROSS_ENTROPY, with_gradients=True)
    train_step = steps.make_train_step(model, make_optimizer(config), CROSS_ENTROPY, metrics, UNIT_RANGE_CHECKS,
                                       clip_grad_norm=0.01)
    train_step(images, labels, tf.ones(32))
    update_norm = np.sqrt(sum(np.sum((v.numpy() - b) ** 2) for v, b in zip(model.trainable_variables, before)))
    assert norm > 0.1
    np.testing.assert_allclose(update_norm, 0.01, rtol=1e-4)
    np.testing.assert_allclose(steps.read_and_reset(metrics)["gradients/global_norm"], norm, rtol=1e-5)


def test_tta_step_averages_the_class_probabilities_over_the_views(tmp_path):
    _, model, images, _ = model_and_batch(tmp_path)
    tta_step = steps.make_tta_step(model, lambda batch: [batch, batch * 0.5, tf.reverse(batch, axis=[2])])
    expected = np.mean([tf.nn.softmax(model(view, training=False)).numpy()
                        for view in (images, images * 0.5, tf.reverse(images, axis=[2]))], axis=0)
    np.testing.assert_allclose(tta_step(images).numpy(), expected, rtol=1e-5)


def test_weight_average_moves_once_per_train_step(tmp_path):
    config, model, images, labels = model_and_batch(tmp_path, "--learning_rate=0.01")
    optimizer = make_optimizer(config)
    average = WeightAverage(model, decay=0.5)
    train_step = steps.make_train_step(model, optimizer, CROSS_ENTROPY, steps.make_metrics(CROSS_ENTROPY, True),
                                       UNIT_RANGE_CHECKS, weight_average=average)
    before = average.averages[0].numpy().copy()
    for _ in range(3):
        train_step(images, labels, tf.ones(32))
    assert int(average.updates.numpy()) == 3
    assert not np.allclose(average.averages[0].numpy(), before)
    assert not np.allclose(average.averages[0].numpy(), model.trainable_variables[0].numpy())


def test_accumulated_micro_batches_update_like_the_whole_batch_at_once(tmp_path):
    # Without batch norm, N micro-batches' summed gradients (each micro-batch's mean loss / N)
    # are the gradient of the whole batch's mean loss: the same update, the same metrics.
    config, accumulated, images, labels = model_and_batch(tmp_path, "--optimizer=sgd", "--momentum=0.9",
                                                          "--learning_rate=0.5", "--weight_decay=0")
    whole, initial = twin_of(accumulated, config), accumulated.trainable_variables[0].numpy().copy()
    loss = losses.WeightedLoss({"cross_entropy": 1.0, "l2": 1e-3}, num_classes=10)
    example_weights = tf.constant(np.random.default_rng(1).uniform(0.5, 2.0, 32), tf.float32)
    results = {}
    for model, count in ((accumulated, 4), (whole, 1)):
        metrics = steps.make_metrics(loss, with_gradients=True)
        train_step = steps.make_train_step(model, make_optimizer(config), loss, metrics, UNIT_RANGE_CHECKS,
                                           accumulate_steps=count)
        returned = [float(train_step(images, labels, example_weights)) for _ in range(2)]
        results[count] = returned, steps.read_and_reset(metrics)
    np.testing.assert_allclose(results[4][0], results[1][0], rtol=1e-5)
    for tag, value in results[1][1].items():
        np.testing.assert_allclose(results[4][1][tag], value, rtol=1e-5, err_msg=tag)
    for by_parts, at_once in zip(accumulated.trainable_variables, whole.trainable_variables):
        np.testing.assert_allclose(by_parts.numpy(), at_once.numpy(), rtol=1e-5, atol=1e-6)
    assert not np.allclose(accumulated.trainable_variables[0].numpy(), initial)  # The updates did move it.
