"""Batch norm through TensorFlow's fused kernel in training: Keras 3's BatchNormalization computes its
moments and normalization as separate elementwise operations (and their gradients), which take
about 45% of a small convnet's step on a CPU (docs/performance.md); FusedBatchNormV3 does the same
in one oneDNN kernel each way. A subclass, so every tool that finds batch-norm layers (precise batch
norm, the momentum default) and the checkpoint names see a BatchNormalization."""

import keras
import tensorflow as tf


def batch_normalization(fused: bool) -> keras.layers.BatchNormalization:
    """A batch-norm layer: FusedBatchNormalization if `fused` (--fused_batchnorm), else Keras' own."""
    return FusedBatchNormalization() if fused else keras.layers.BatchNormalization()


class FusedBatchNormalization(keras.layers.BatchNormalization):
    """keras.layers.BatchNormalization over the last axis of NHWC images, normalized in training by
    tf.compat.v1.nn.fused_batch_norm; inference (moving statistics) is Keras' own call."""

    def call(self, inputs, training=None, mask=None):
        if (not training or not self.trainable or not (self.center and self.scale) or inputs.shape.rank != 4
                or self.axis not in (-1, 3, [-1], [3])):
            return super().call(inputs, training=training, mask=mask)
        normalized, mean, variance = tf.compat.v1.nn.fused_batch_norm(
            inputs, tf.cast(self.gamma, tf.float32), tf.cast(self.beta, tf.float32), epsilon=self.epsilon,
            data_format="NHWC", is_training=True)
        count = tf.cast(tf.reduce_prod(tf.shape(inputs)[:-1]), tf.float32)
        variance = variance * (count - 1) / count  # The fused op's is Bessel-corrected; Keras' moving one is not.
        momentum = self.momentum
        self.moving_mean.assign(self.moving_mean * momentum + mean * (1 - momentum))
        self.moving_variance.assign(self.moving_variance * momentum + variance * (1 - momentum))
        return normalized
