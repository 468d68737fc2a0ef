"""What a model costs: its trainable parameters and the floating-point operations of one
example's forward pass in inference mode and of its training step, counted by TensorFlow's
profiler on the traced graph.
A multiply-add counts as two operations; papers often count it as one (ResNet-20's "41M FLOPs"
are about 82M here)."""

import logging

import keras
import numpy as np
import tensorflow as tf


def parameter_count(model: keras.Model) -> int:
    """Trainable weights (batch norm's moving statistics are not parameters)."""
    return int(sum(np.prod(variable.shape) for variable in model.trainable_variables))


def forward_flops(model: keras.Model, input_shape: tuple[int, int, int]) -> int:
    """Floating-point operations of the forward pass on one float32 example of `input_shape`."""
    @tf.function(autograph=False)
    def forward(images):
        return model(images, training=False)

    return profiled_flops(forward.get_concrete_function(tf.TensorSpec([1, *input_shape], tf.float32)).graph)


def training_flops(model: keras.Model, input_shape: tuple[int, int, int]) -> int:
    """Floating-point operations of one example's training step, forward in training mode and backward
    (the gradients of a cross-entropy loss with respect to every trainable weight): about three forward
    passes, since each weighted layer's backward computes two products of its forward's size."""
    @tf.function(autograph=False)
    def step(images, labels):
        with tf.GradientTape() as tape:
            logits = model(images, training=True)
            loss = tf.reduce_mean(tf.nn.sparse_softmax_cross_entropy_with_logits(labels, logits))
        return tape.gradient(loss, model.trainable_variables)

    return profiled_flops(step.get_concrete_function(tf.TensorSpec([1, *input_shape], tf.float32),
                                                     tf.TensorSpec([1], tf.int32)).graph)


def profiled_flops(graph: tf.Graph) -> int:
    """The floating-point operations TensorFlow's profiler counts in `graph`."""
    options = tf.compat.v1.profiler.ProfileOptionBuilder.float_operation()
    options["output"] = "none"
    logger = tf.get_logger()
    level = logger.level
    logger.setLevel(logging.ERROR)  # The v1 profiler warns about its own deprecated internals.
    try:
        return int(tf.compat.v1.profiler.profile(graph=graph, cmd="op", options=options).total_float_ops)
    finally:
        logger.setLevel(level)
