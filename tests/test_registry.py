import keras
import pytest

from models import registry


@pytest.mark.parametrize("name", ["cnn", "lean_cnn", "mlp"])
def test_build_model_creates_variables_before_any_training(name):
    model = registry.build_model(name, (28, 28, 1), 10, width=8, depth=2, dropout=0.3)
    assert model.built and len(model.trainable_variables) > 0


def test_the_cnn_needs_images_of_two_to_the_depth_pixels_or_more_and_the_mlp_any():
    assert [registry.smallest_image_side("cnn", depth) for depth in (1, 2, 4)] == [2, 4, 16]
    assert registry.smallest_image_side("lean_cnn", 2) == 4
    assert registry.smallest_image_side("lean_cnn", 2, kernel_sizes=(5, 3), conv_padding="valid") == 12
    assert registry.smallest_image_side("mlp", 4) == 1


@pytest.mark.parametrize("name", ["cnn", "lean_cnn", "mlp", "resnet"])
def test_the_head_is_the_last_layer_that_makes_the_logits(name):
    model = registry.build_model(name, (28, 28, 1), 7, width=8, depth=20 if name == "resnet" else 2, dropout=0.0)
    head = registry.head_of(model)
    assert head is model.layers[-1] and head.kernel.shape[-1] == 7


def test_a_model_without_a_head_attribute_has_none():
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3)])
    assert registry.head_of(model) is None
