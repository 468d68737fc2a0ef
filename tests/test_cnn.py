import numpy as np
import tensorflow as tf

from data import catalog
from models import cnn, size
from tests.helpers import REPO, numpy_conv_same, random_weights
from trainer import run_inputs
from trainer.checkpoints import assert_checkpoint_covers
from trainer.flags import parse_config


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


def test_the_lean_cnn_has_one_conv_block_a_stage_and_a_quarter_of_the_flops():
    lean = cnn.build_lean((28, 28, 1), 10, width=16, depth=2, dropout=0.1)
    full = cnn.build((28, 28, 1), 10, width=16, depth=2, dropout=0.1)
    for model in (lean, full):
        model(tf.zeros((1, 28, 28, 1)))
    kernels = [v.shape for v in lean.trainable_variables if len(v.shape) == 4]
    assert kernels == [(3, 3, 1, 16), (3, 3, 16, 32)] and lean.head.kernel.shape == (7 * 7 * 32, 10)
    # Convolutions: 2 x 9 x (1 x 16 x 28^2 + 16 x 32 x 14^2); the head 2 x 1,568 x 10; batch norm, ReLU
    # and pooling a few operations an activation.
    convolutions = 2 * 9 * (16 * 28 * 28 + 16 * 32 * 14 * 14)
    assert convolutions < size.forward_flops(lean, (28, 28, 1)) < 1.2 * convolutions
    assert size.forward_flops(lean, (28, 28, 1)) < size.forward_flops(full, (28, 28, 1)) / 4
    assert_checkpoint_covers(lean)


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


def test_a_conv_block_is_convolution_batch_norm_and_relu_with_batch_statistics_only_in_training():
    rng = np.random.default_rng(0)
    images = rng.normal(size=(3, 5, 6, 2)).astype(np.float32)
    block = cnn.ConvBlock(4)
    block(images)
    kernel = rng.normal(size=(3, 3, 2, 4)).astype(np.float32)
    gamma, beta = rng.uniform(0.5, 2.0, 4), rng.normal(size=4)
    moving_mean, moving_variance = rng.normal(size=4), rng.uniform(0.5, 2.0, 4)
    block.conv.kernel.assign(kernel)
    for variable, value in zip((block.norm.gamma, block.norm.beta, block.norm.moving_mean,
                                block.norm.moving_variance), (gamma, beta, moving_mean, moving_variance)):
        variable.assign(value.astype(np.float32))
    convolved = numpy_conv_same(images, kernel)

    def normalized(mean, variance):
        return np.maximum(gamma * (convolved - mean) / np.sqrt(variance + 1e-3) + beta, 0.0)

    np.testing.assert_allclose(block(images, training=False), normalized(moving_mean, moving_variance),
                               rtol=1e-4, atol=1e-4)
    batch_mean, batch_variance = convolved.mean(axis=(0, 1, 2)), convolved.var(axis=(0, 1, 2))
    np.testing.assert_allclose(block(images, training=True), normalized(batch_mean, batch_variance),
                               rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(block.norm.moving_mean, 0.99 * moving_mean + 0.01 * batch_mean, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(block.norm.moving_variance, 0.99 * moving_variance + 0.01 * batch_variance, rtol=1e-5)


def test_the_cnn_forward_pass_is_its_stages_then_flatten_and_head():
    images = np.random.default_rng(1).uniform(size=(2, 4, 4, 1)).astype(np.float32)
    model = random_weights(cnn.build((4, 4, 1), 3, width=2, depth=1, dropout=0.0), images, seed=1)
    first, second = model.stages.layers[0].layers[:2]
    x = images
    for block in (first, second):
        norm = block.norm
        x = numpy_conv_same(x, block.conv.kernel.numpy())
        x = np.maximum(norm.gamma.numpy() * (x - norm.moving_mean.numpy()) / np.sqrt(norm.moving_variance.numpy()
                                                                                      + 1e-3) + norm.beta.numpy(), 0)
    pooled = x.reshape(2, 2, 2, 2, 2, 2).max(axis=(2, 4))  # 2x2 max-pooling of [2, 4, 4, 2].
    expected = pooled.reshape(2, -1) @ model.head.kernel.numpy() + model.head.bias.numpy()
    np.testing.assert_allclose(model(images, training=False), expected, rtol=1e-4, atol=1e-4)


SPEED_RECIPE = dict(width=32, depth=2, dropout=0.0, filters_per_stage=(24, 32), kernel_sizes=(5, 3),
                    conv_padding="valid", batchnorm=False, pool_first=True, dense_units=256)


def test_the_pytorch_speed_recipe_is_registry_options_with_its_shapes_and_parameters():
    model = cnn.build_lean((28, 28, 1), 10, **SPEED_RECIPE)
    model(tf.zeros((1, 28, 28, 1)))
    shapes = [tuple(v.shape) for v in model.trainable_variables]
    assert shapes == [(5, 5, 1, 24), (24,), (3, 3, 24, 32), (32,), (800, 256), (256,), (256, 10), (10,)]
    # conv1 5*5*1*24 + 24, conv2 3*3*24*32 + 32, dense 800*256 + 256, head 256*10 + 10 (28 -> 24 -> 12 -> 10 -> 5).
    assert size.parameter_count(model) == 624 + 6_944 + 205_056 + 2_570 == 215_194
    assert not any("batch_normalization" in v.path for v in model.variables)
    multiply_adds = 24 * 24 * 24 * 25 + 10 * 10 * 32 * 24 * 9 + 800 * 256 + 256 * 10
    assert 2 * multiply_adds < size.forward_flops(model, (28, 28, 1)) < 2.1 * multiply_adds
    assert_checkpoint_covers(model)


def test_pooling_first_without_batch_norm_is_the_same_function_and_with_it_normalizes_the_pooled_map():
    images = tf.random.uniform((2, 28, 28, 1), seed=3)
    settings = dict(SPEED_RECIPE, dropout=0.0)
    pooled_first = cnn.build_lean((28, 28, 1), 10, **settings)
    pooled_after = cnn.build_lean((28, 28, 1), 10, **dict(settings, pool_first=False))
    pooled_first(images)
    pooled_after(images)
    for source, target in zip(pooled_first.trainable_variables, pooled_after.trainable_variables):
        target.assign(source)
    np.testing.assert_allclose(pooled_first(images), pooled_after(images), rtol=1e-5, atol=1e-5)
    block = cnn.ConvBlock(4, settings=cnn.BlockSettings(), pool=True)
    assert block(np.ones((1, 6, 6, 2), np.float32)).shape == (1, 3, 3, 4) and block.norm.moving_mean.shape == (4,)


def test_the_smallest_image_side_counts_the_pixels_valid_convolutions_take():
    assert [cnn.smallest_image_side(depth) for depth in (1, 2, 4)] == [2, 4, 16]
    # 1 <- 2 + 2 (a 3x3 conv) = 4 <- 8 + 4 (a 5x5) = 12: a 12-pixel image keeps one pixel through both stages.
    assert cnn.smallest_lean_image_side(2, kernel_sizes=(5, 3), conv_padding="valid") == 12
    assert cnn.smallest_image_side(1, kernel_sizes=(3,), conv_padding="valid") == 2 + 2 * 2
    model = cnn.build_lean((12, 12, 1), 10, **SPEED_RECIPE)
    assert model(tf.zeros((1, 12, 12, 1))).shape == (1, 10)


def test_the_speed_recipe_flagfile_builds_that_model(tmp_path):
    config = parse_config([f"--flagfile={REPO / 'configs' / 'mnist_speedrun.flags'}", f"--run_dir={tmp_path}"])
    model = run_inputs.build_model(config, catalog.MNIST)
    assert size.parameter_count(model) == 215_194
    assert (config.adam_beta1, config.adam_beta2, config.batch_size, config.epochs) == (0.7, 0.9, 256, 1)
