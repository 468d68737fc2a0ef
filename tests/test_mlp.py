import numpy as np
import tensorflow as tf

from models import mlp
from tests.helpers import random_weights


def test_mlp_flattens_images_into_logits():
    model = mlp.build((28, 28, 1), 10, width=16, depth=2, dropout=0.3)
    logits = model(tf.random.uniform((5, 28, 28, 1)), training=False)
    assert logits.shape == (5, 10)
    assert [v.shape for v in model.trainable_variables if len(v.shape) == 2] == [(784, 16), (16, 16), (16, 10)]


def test_mlp_depth_sets_the_hidden_layers():
    model = mlp.build((28, 28, 1), 10, width=8, depth=3, dropout=0.3)
    model(tf.zeros((1, 28, 28, 1)))
    assert [v.shape for v in model.trainable_variables if len(v.shape) == 2] == [(784, 8), (8, 8), (8, 8), (8, 10)]


def test_mlp_dropout_acts_only_in_training():
    model = mlp.build((28, 28, 1), 10, width=16, depth=2, dropout=0.5)
    images = tf.random.uniform((4, 28, 28, 1))
    np.testing.assert_array_equal(model(images, training=False), model(images, training=False))
    assert not np.allclose(model(images, training=True), model(images, training=True))


def test_the_mlp_forward_pass_is_its_matrix_products_and_relus():
    images = np.random.default_rng(0).uniform(size=(6, 3, 3, 1)).astype(np.float32)
    model = random_weights(mlp.build((3, 3, 1), 4, width=5, depth=2, dropout=0.0), images, seed=0)
    (w1, b1), (w2, b2), (w3, b3) = [(layer.kernel.numpy(), layer.bias.numpy())
                                    for layer in (*model.hidden.layers, model.head)]
    hidden = np.maximum(np.maximum(images.reshape(6, 9) @ w1 + b1, 0) @ w2 + b2, 0)
    np.testing.assert_allclose(model(images, training=False), hidden @ w3 + b3, rtol=1e-5, atol=1e-5)
