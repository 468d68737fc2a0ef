"""What a run is built from: models from flags, optimizers, the weight average."""

import dataclasses

import pytest

from data import catalog
from tests.helpers import make_config
from trainer import setup
from trainer.errors import TapeloopError


def test_model_flags_become_the_models_keyword_settings(tmp_path):
    config = make_config(tmp_path, "--model_width=12", "--model_depth=3", "--dropout=0.25")
    assert setup.model_settings(config) == {"width": 12, "depth": 3, "dropout": 0.25}
    model = setup.build_model(dataclasses.replace(config, model="mlp"), catalog.MNIST)
    assert [v.shape for v in model.trainable_variables if len(v.shape) == 2][0] == (784, 12)


def test_unknown_model_names_the_registered_ones(tmp_path):
    with pytest.raises(TapeloopError, match="one of cnn, efficientnet_b0, lean_cnn, mlp, mobilenet_v2, resnet, resnet50"):
        setup.build_model(dataclasses.replace(make_config(tmp_path), model="vit"), catalog.MNIST)


def test_images_smaller_than_the_cnn_stages_are_refused_before_building(tmp_path):
    tiny = dataclasses.replace(catalog.MNIST, image_shape=(6, 6, 1))
    with pytest.raises(TapeloopError, match="at least 8x8 pixels .* found images of 6x6") as error:
        setup.build_model(make_config(tmp_path, "--model=cnn", "--model_depth=3"), tiny)
    assert "lower --model_depth to 2" in str(error.value)


def test_the_weight_average_exists_only_with_ema_decay(tmp_path):
    model = setup.build_model(make_config(tmp_path, "--model=mlp"), catalog.MNIST)
    assert setup.make_weight_average(make_config(tmp_path), model) is None
    assert setup.make_weight_average(make_config(tmp_path, "--ema_decay=0.9"), model).decay == 0.9
