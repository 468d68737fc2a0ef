import numpy as np
import tensorflow as tf

from models import mlp
from tests.conftest import make_config


def test_mlp_flattens_images_into_logits(tmp_path):
    model = mlp.build((28, 28, 1), 10, make_config(tmp_path, "--model_width=16"))
    logits = model(tf.random.uniform((5, 28, 28, 1)), training=False)
    assert logits.shape == (5, 10)
    assert [v.shape for v in model.trainable_variables if len(v.shape) == 2] == [(784, 16), (16, 16), (16, 10)]


def test_mlp_depth_sets_the_hidden_layers(tmp_path):
    model = mlp.build((28, 28, 1), 10, make_config(tmp_path, "--model_width=8", "--model_depth=3"))
    model(tf.zeros((1, 28, 28, 1)))
    assert [v.shape for v in model.trainable_variables if len(v.shape) == 2] == [(784, 8), (8, 8), (8, 8), (8, 10)]


def test_mlp_dropout_acts_only_in_training(tmp_path):
    model = mlp.build((28, 28, 1), 10, make_config(tmp_path, "--model_width=16", "--dropout=0.5"))
    images = tf.random.uniform((4, 28, 28, 1))
    np.testing.assert_array_equal(model(images, training=False), model(images, training=False))
    assert not np.allclose(model(images, training=True), model(images, training=True))
