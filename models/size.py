"""What a model costs: its trainable parameters and the floating-point operations of one
example's forward pass in inference mode, counted by TensorFlow's profiler on the traced graph.
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

    graph = forward.get_concrete_function(tf.TensorSpec([1, *input_shape], tf.float32)).graph
    options = tf.compat.v1.profiler.ProfileOptionBuilder.float_operation()
    options["output"] = "none"
    logger = tf.get_logger()
    level = logger.level
    logger.setLevel(logging.ERROR)  # The v1 profiler warns about its own deprecated internals.
    try:
        return int(tf.compat.v1.profiler.profile(graph=graph, cmd="op", options=options).total_float_ops)
    finally:
        logger.setLevel(level)
