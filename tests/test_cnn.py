import numpy as np
import tensorflow as tf

from models import cnn


def test_cnn_maps_images_to_one_logit_per_class():
    model = cnn.build((28, 28, 1), 7, width=4, depth=2, dropout=0.3)
    logits = model(tf.random.uniform((3, 28, 28, 1)), training=False)
    assert logits.shape == (3, 7) and logits.dtype == tf.float32
    assert not np.allclose(tf.reduce_sum(tf.nn.softmax(logits), -1) - tf.reduce_sum(logits, -1), 0)


def test_cnn_width_and_depth_set_the_stages_and_their_filters():
    for depth, filters, flattened in ((2, [5, 5, 10, 10], 7 * 7 * 10), (3, [5, 5, 10, 10, 20, 20], 3 * 3 * 20)):
        model = cnn.build((28, 28, 1), 10, width=5, depth=depth, dropout=0.3)
        model(tf.zeros((1, 28, 28, 1)))
        kernels = [v.shape for v in model.trainable_variables if len(v.shape) == 4]
        assert [shape[-1] for shape in kernels] == filters
        assert model.head.kernel.shape == (flattened, 10)


def test_cnn_dropout_and_batch_norm_act_only_in_training():
    model = cnn.build((28, 28, 1), 10, width=4, depth=2, dropout=0.5)
    images = tf.random.uniform((4, 28, 28, 1))
    np.testing.assert_array_equal(model(images, training=False), model(images, training=False))
    assert not np.allclose(model(images, training=True), model(images, training=True))


def test_cnn_takes_rgb_32x32_images():
    model = cnn.build((32, 32, 3), 10, width=4, depth=3, dropout=0.3)
    assert model(tf.random.uniform((2, 32, 32, 3)), training=False).shape == (2, 10)
    assert model.stages.layers[0].layers[0].conv.kernel.shape == (3, 3, 3, 4)
    assert model.head.kernel.shape == (4 * 4 * 16, 10)
