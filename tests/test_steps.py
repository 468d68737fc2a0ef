import numpy as np
import tensorflow as tf

from models import registry
from tests.conftest import make_config
from trainer import losses, steps
from trainer.loop import make_optimizer


def model_and_batch(tmp_path, *flags):
    config = make_config(tmp_path, "--model=mlp", "--model_width=32", "--dropout=0", *flags)
    model = registry.build_model("mlp", (28, 28, 1), 10, config)
    rng = np.random.default_rng(0)
    images = tf.constant(rng.uniform(size=(32, 28, 28, 1)), tf.float32)
    labels = tf.constant(rng.integers(0, 10, 32), tf.int32)
    return config, model, images, labels


def batch_loss(model, images, labels):
    return float(losses.total_loss(losses.loss_terms(labels, model(images, training=False))))


def test_one_train_step_lowers_the_loss_on_a_fixed_batch(tmp_path):
    config, model, images, labels = model_and_batch(tmp_path, "--optimizer=sgd", "--learning_rate=0.01")
    optimizer = make_optimizer(config)
    metrics = steps.make_metrics(with_gradients=True)
    train_step = steps.make_train_step(model, optimizer, metrics)
    before = batch_loss(model, images, labels)
    returned = float(train_step(images, labels))
    assert returned == np.float32(before) or abs(returned - before) < 1e-5
    assert batch_loss(model, images, labels) < before
    assert int(optimizer.iterations.numpy()) == 1
    values = steps.read_and_reset(metrics)
    assert values["loss/total"] == values["loss/cross_entropy"] == returned
    assert values["gradients/global_norm"] > 0
    assert steps.read_and_reset(metrics)["loss/total"] == 0.0  # Reset after reading.


def test_eval_step_leaves_weights_alone_and_weights_batches_by_size(tmp_path):
    _, model, images, labels = model_and_batch(tmp_path)
    weights_before = [v.numpy().copy() for v in model.trainable_variables]
    metrics = steps.make_metrics(with_gradients=False)
    eval_step = steps.make_eval_step(model, metrics)
    eval_step(images[:24], labels[:24])
    eval_step(images[24:], labels[24:])
    values = steps.read_and_reset(metrics)
    logits = model(images, training=False).numpy()
    np.testing.assert_allclose(values["loss/total"], batch_loss(model, images, labels), rtol=1e-5)
    assert values["accuracy"] == np.mean(logits.argmax(1) == labels.numpy())
    for before, variable in zip(weights_before, model.trainable_variables):
        np.testing.assert_array_equal(before, variable.numpy())
