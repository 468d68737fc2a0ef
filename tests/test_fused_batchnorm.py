"""The fused batch norm against Keras' own layer: the same outputs, gradients and moving statistics."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from models.fused_batchnorm import FusedBatchNormalization


def twin_layers(channels: int = 6):
    keras_layer, fused = keras.layers.BatchNormalization(momentum=0.9), FusedBatchNormalization(momentum=0.9)
    for layer in (keras_layer, fused):
        layer.build((None, 5, 7, channels))
    rng = np.random.default_rng(0)
    values = [rng.uniform(0.5, 2.0, channels), rng.normal(size=channels), rng.normal(size=channels),
              rng.uniform(0.5, 2.0, channels)]
    for layer in (keras_layer, fused):
        for variable, value in zip((layer.gamma, layer.beta, layer.moving_mean, layer.moving_variance), values):
            variable.assign(value.astype(np.float32))
    return keras_layer, fused


def test_training_outputs_gradients_and_moving_statistics_match_keras():
    keras_layer, fused = twin_layers()
    images = tf.constant(np.random.default_rng(1).normal(2.0, 3.0, (4, 5, 7, 6)).astype(np.float32))
    results = []
    for layer in (keras_layer, fused):
        with tf.GradientTape() as tape:
            tape.watch(images)
            outputs = layer(images, training=True)
            loss = tf.reduce_sum(outputs * tf.range(6, dtype=tf.float32))
        gradients = tape.gradient(loss, [images, layer.gamma, layer.beta])
        results.append((outputs, gradients, layer.moving_mean.numpy(), layer.moving_variance.numpy()))
    (keras_out, keras_grads, keras_mean, keras_var), (fused_out, fused_grads, fused_mean, fused_var) = results
    np.testing.assert_allclose(fused_out, keras_out, atol=1e-5)
    for fused_gradient, keras_gradient in zip(fused_grads, keras_grads):
        np.testing.assert_allclose(fused_gradient, keras_gradient, atol=1e-4)
    np.testing.assert_allclose(fused_mean, keras_mean, atol=1e-6)
    np.testing.assert_allclose(fused_var, keras_var, rtol=1e-5)


@pytest.mark.parametrize("training, trainable", [(False, True), (True, False)])
def test_inference_and_frozen_layers_are_keras_own(training, trainable):
    keras_layer, fused = twin_layers()
    keras_layer.trainable = fused.trainable = trainable
    images = tf.constant(np.random.default_rng(2).normal(size=(3, 5, 7, 6)).astype(np.float32))
    np.testing.assert_array_equal(fused(images, training=training), keras_layer(images, training=training))
    np.testing.assert_array_equal(fused.moving_mean, keras_layer.moving_mean)


def test_under_mixed_bfloat16_the_fused_layer_computes_in_bfloat16():
    keras_layer, _ = twin_layers()
    fused = FusedBatchNormalization(momentum=0.9, dtype="mixed_bfloat16")
    fused.build((None, 5, 7, 6))
    for mine, theirs in zip(fused.weights, keras_layer.weights):
        mine.assign(theirs)
    images = tf.constant(np.random.default_rng(3).normal(size=(4, 5, 7, 6)), tf.float32)
    outputs = fused(images, training=True)
    assert outputs.dtype == tf.bfloat16 and fused.moving_mean.dtype == tf.float32
    np.testing.assert_allclose(tf.cast(outputs, tf.float32), keras_layer(images, training=True), atol=0.05)
