"""models/size.py's training FLOPs against the closed form of a model small enough to count by hand."""

import keras

from models import size


def test_a_training_step_counts_the_forward_pass_and_each_weights_gradient():
    """One dense layer on 16 pixels to 10 logits: forward 2 x 16 x 10; its weights' gradient is one more
    product of that size (x^T g), and the images' gradient is not computed (nothing needs it); the
    loss adds a few operations per logit."""
    model = keras.Sequential([keras.Input((4, 4, 1)), keras.layers.Flatten(), keras.layers.Dense(10, use_bias=False)])
    forward = size.forward_flops(model, (4, 4, 1))
    assert forward == 2 * 16 * 10
    assert 2 * forward <= size.training_flops(model, (4, 4, 1)) <= 2 * forward + 5 * 10
    deeper = keras.Sequential([keras.Input((4, 4, 1)), keras.layers.Flatten(),
                               keras.layers.Dense(8, use_bias=False), keras.layers.Dense(10, use_bias=False)])
    first, second = 2 * 16 * 8, 2 * 8 * 10  # The second layer also passes the gradient back to the first.
    assert 2 * first + 3 * second <= size.training_flops(deeper, (4, 4, 1)) <= 2 * first + 3 * second + 5 * 10
