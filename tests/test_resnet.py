"""The pre-activation ResNet (models/resnet.py) against NumPy and closed forms, and what a model
costs (models/size.py)."""

import keras
import numpy as np
import pytest

from data import catalog
from models import registry, resnet, size
from tests.helpers import make_config, numpy_conv_same, random_weights
from trainer import run_inputs
from trainer.checkpoints import assert_checkpoint_covers
from settings.errors import TapeloopError


def set_norm(norm, rng):
    """Random gamma, beta and moving statistics; returns the inference-mode function they define."""
    channels = norm.gamma.shape[0]
    values = (rng.uniform(0.5, 2.0, channels), rng.normal(size=channels), rng.normal(size=channels),
              rng.uniform(0.5, 2.0, channels))
    for variable, value in zip((norm.gamma, norm.beta, norm.moving_mean, norm.moving_variance), values):
        variable.assign(value.astype(np.float32))
    gamma, beta, mean, variance = values
    return lambda x: gamma * (x - mean) / np.sqrt(variance + 1e-3) + beta


def batch_normalized(norm, x):
    """Batch norm in training mode: the batch's own mean and variance."""
    mean, variance = x.mean(axis=(0, 1, 2)), x.var(axis=(0, 1, 2))
    return norm.gamma.numpy() * (x - mean) / np.sqrt(variance + 1e-3) + norm.beta.numpy()


def test_an_identity_block_adds_bn_relu_conv_twice_to_its_input_in_both_batch_norm_modes():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(3, 5, 6, 4)).astype(np.float32)
    block = resnet.PreActivationBlock(4, stride=1, projects=False)
    block(x)
    inference1, inference2 = set_norm(block.norm1, rng), set_norm(block.norm2, rng)
    kernel1, kernel2 = rng.normal(size=(2, 3, 3, 4, 4)).astype(np.float32)
    block.conv1.kernel.assign(kernel1)
    block.conv2.kernel.assign(kernel2)
    relu = lambda values: np.maximum(values, 0)  # noqa: E731
    first = numpy_conv_same(relu(inference1(x)), kernel1)
    expected = numpy_conv_same(relu(inference2(first)), kernel2) + x
    np.testing.assert_allclose(block(x, training=False), expected, rtol=1e-4, atol=1e-3)
    first = numpy_conv_same(relu(batch_normalized(block.norm1, x)), kernel1)
    expected = numpy_conv_same(relu(batch_normalized(block.norm2, first)), kernel2) + x
    np.testing.assert_allclose(block(x, training=True), expected, rtol=1e-4, atol=1e-3)


def test_a_block_that_halves_the_resolution_projects_its_pre_activated_input_with_a_strided_1x1():
    rng = np.random.default_rng(1)
    x = rng.normal(size=(2, 6, 6, 3)).astype(np.float32)
    block = random_weights(resnet.PreActivationBlock(5, stride=2, projects=True), x, seed=2)
    inference1, inference2 = set_norm(block.norm1, rng), set_norm(block.norm2, rng)
    activated = np.maximum(inference1(x), 0)
    residual = numpy_conv_same(np.maximum(inference2(numpy_conv_same(activated, block.conv1.kernel.numpy(), 2)), 0),
                               block.conv2.kernel.numpy())
    shortcut = activated[:, ::2, ::2] @ block.projection.kernel.numpy()[0, 0]
    output = block(x, training=False)
    assert output.shape == (2, 3, 3, 5)
    np.testing.assert_allclose(output, residual + shortcut, rtol=1e-4, atol=1e-3)


def test_the_forward_pass_is_stem_blocks_then_bn_relu_average_pool_and_head():
    images = np.random.default_rng(3).uniform(size=(2, 4, 4, 1)).astype(np.float32)
    model = random_weights(resnet.build((4, 4, 1), 3, width=2, depth=8, dropout=0.0), images, seed=4)
    x = numpy_conv_same(images, model.stem.kernel.numpy())
    for block in model.blocks.layers:
        x = block(x, training=False).numpy()  # Each block is checked against NumPy above.
    norm = model.norm
    x = np.maximum(norm.gamma.numpy() * (x - norm.moving_mean.numpy()) / np.sqrt(norm.moving_variance.numpy()
                                                                                  + 1e-3) + norm.beta.numpy(), 0)
    expected = x.mean(axis=(1, 2)) @ model.head.kernel.numpy() + model.head.bias.numpy()
    np.testing.assert_allclose(model(images, training=False), expected, rtol=1e-4, atol=1e-4)


def closed_form_parameters(width: int, depth: int, channels: int, classes: int) -> int:
    """He et al.'s CIFAR ResNet counted by hand: 3x3 convolutions without biases, batch norm's
    gamma and beta, a 1x1 projection where a stage doubles the filters, the head."""
    blocks, total, previous = (depth - 2) // 6, 9 * channels * width, width
    for stage in range(3):
        filters = width * 2**stage
        for block in range(blocks):
            total += 2 * previous + 9 * previous * filters + 2 * filters + 9 * filters * filters
            total += previous * filters if stage and not block else 0
            previous = filters
    return total + 2 * previous + previous * classes + classes


@pytest.mark.parametrize("depth, paper_millions", [(20, 0.27), (32, 0.46), (56, 0.85)])
def test_parameters_match_the_closed_form_and_the_papers_figures(depth, paper_millions):
    model = registry.build_model("resnet", (32, 32, 3), 10, width=16, depth=depth, dropout=0.0)
    assert size.parameter_count(model) == closed_form_parameters(16, depth, 3, 10)
    assert size.parameter_count(model) / 1e6 == pytest.approx(paper_millions, abs=0.01)
    assert_checkpoint_covers(model)  # Every block's variables reach the checkpoint.


def test_flops_are_the_closed_form_of_a_convolution_and_a_matrix_product():
    model = keras.Sequential([keras.layers.Conv2D(4, 3, padding="same", use_bias=False), keras.layers.Flatten(),
                              keras.layers.Dense(3, use_bias=False)])
    model(np.zeros((1, 8, 8, 2), np.float32))
    assert size.forward_flops(model, (8, 8, 2)) == 2 * (9 * 2 * 4 * 8 * 8) + 2 * (8 * 8 * 4 * 3)
    assert size.parameter_count(model) == 9 * 2 * 4 + 8 * 8 * 4 * 3


def test_images_of_64_pixels_or_more_get_a_stride_2_stem():
    def flops(side):
        model = registry.build_model("resnet", (side, side, 3), 10, width=4, depth=8, dropout=0.0)
        return size.forward_flops(model, (side, side, 3)), model.stem.strides

    (at_32, stride_32), (at_63, stride_63), (at_64, stride_64) = flops(32), flops(63), flops(64)
    assert (stride_32, stride_63, stride_64) == ((1, 1), (1, 1), (2, 2))
    assert at_64 == at_32 and at_63 > 3 * at_32


def test_a_depth_that_is_not_6n_plus_2_is_the_paragraph(tmp_path):
    config = make_config(tmp_path / "run", "--model=resnet", "--model_depth=18")
    with pytest.raises(TapeloopError) as error:
        run_inputs.build_model(config, catalog.SYNTHETIC)
    message = error.value.paragraph()
    assert "--model=resnet cannot be built with --model_depth=18" in message and "8, 14, 20, 32" in message
