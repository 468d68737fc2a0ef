"""What a run is built from: models from flags, optimizers, the weight average."""

import dataclasses

import numpy as np
import pytest
import tensorflow as tf

from data import catalog
from models.fused_batchnorm import FusedBatchNormalization
from tests.helpers import make_config
from trainer import batchnorm, run_inputs
from settings.errors import TapeloopError


def test_model_flags_become_the_models_keyword_settings(tmp_path):
    config = make_config(tmp_path, "--model_width=12", "--model_depth=3", "--dropout=0.25")
    assert run_inputs.model_settings(config) == {
        "width": 12, "depth": 3, "dropout": 0.25, "convs_per_stage": (), "filters_per_stage": (), "kernel_sizes": (),
        "conv_padding": "same", "batchnorm": True, "fused_batchnorm": False, "pool_first": False, "dense_units": 0}
    model = run_inputs.build_model(dataclasses.replace(config, model="mlp"), catalog.MNIST)
    assert [v.shape for v in model.trainable_variables if len(v.shape) == 2][0] == (784, 12)


@pytest.mark.parametrize("name, depth", [("cnn", 2), ("lean_cnn", 2), ("resnet", 8)])
def test_fused_batchnorm_swaps_every_batch_norm_layer_and_keeps_the_variables(tmp_path, name, depth):
    def batch_norms(fused):
        config = make_config(tmp_path, f"--model={name}", f"--model_depth={depth}", "--model_width=8",
                             *(["--fused_batchnorm"] if fused else []))
        model = run_inputs.build_model(config, catalog.MNIST)
        return model, batchnorm.batch_norm_layers(model)

    (keras_model, keras_layers), (fused_model, fused_layers) = batch_norms(False), batch_norms(True)
    assert keras_layers and not any(isinstance(layer, FusedBatchNormalization) for layer in keras_layers)
    assert len(fused_layers) == len(keras_layers)
    assert all(isinstance(layer, FusedBatchNormalization) for layer in fused_layers)
    assert [v.shape for v in fused_model.variables] == [v.shape for v in keras_model.variables]


@pytest.mark.parametrize("flags, found", [
    (["--model=mlp", "--fused_batchnorm"], "--fused_batchnorm does not apply to --model=mlp.* with --model of "
                                           "cnn, lean_cnn, resnet"),
    (["--model=resnet", "--model_depth=8", "--convs_per_stage=1"], "--convs_per_stage does not apply to "
                                                                   "--model=resnet.* with --model of cnn"),
    (["--model=cnn", "--model_depth=3", "--convs_per_stage=1,2"], "--convs_per_stage=1,2 does not match "
                                                                  "--model_depth=3.* found 2 numbers"),
    (["--model=lean_cnn", "--filters_per_stage=8,16,32"], "--filters_per_stage=8,16,32 does not match "
                                                          "--model_depth=2"),
    (["--model=mlp", "--nobatchnorm"], "--batchnorm does not apply to --model=mlp.* with --model of cnn, lean_cnn"),
    (["--model=resnet", "--model_depth=8", "--dense_units=64"], "--dense_units does not apply to --model=resnet"),
    (["--model=lean_cnn", "--convs_per_stage=2"], "--convs_per_stage does not apply to --model=lean_cnn"),
    (["--model=cnn", "--nobatchnorm", "--fused_batchnorm"], "--fused_batchnorm with --nobatchnorm"),
    (["--model=lean_cnn", "--model_depth=3", "--kernel_sizes=7", "--conv_padding=valid"],
     "at least 50x50 pixels .*after its valid convolutions.* found images of 28x28.*--conv_padding=same"),
    (["--model=cnn", "--model_depth=5"], "at least 32x32 pixels .*halves them\\).* lower --model_depth to 4")])
def test_model_settings_a_model_cannot_take_are_refused(tmp_path, flags, found):
    with pytest.raises(TapeloopError, match=found):
        run_inputs.build_model(make_config(tmp_path, *flags), catalog.MNIST)


@pytest.mark.parametrize("counts, expected", [("", [2, 2, 2]), ("1", [1, 1, 1]), ("1,2,3", [1, 2, 3])])
def test_convs_per_stage_sets_each_stage_of_the_cnn(tmp_path, counts, expected):
    config = make_config(tmp_path, "--model=cnn", "--model_depth=3", "--model_width=8", f"--convs_per_stage={counts}")
    model = run_inputs.build_model(config, catalog.MNIST)
    kernels = [v.shape for v in model.trainable_variables if len(v.shape) == 4]
    widths = [8 * 2**stage for stage, convs in enumerate(expected) for _ in range(convs)]
    assert [kernel[-1] for kernel in kernels] == widths
    assert [kernel[-2] for kernel in kernels] == [1, *widths[:-1]]


def test_unknown_model_names_the_registered_ones(tmp_path):
    with pytest.raises(TapeloopError, match="one of cnn, efficientnet_b0, lean_cnn, mlp, mobilenet_v2, resnet, resnet50"):
        run_inputs.build_model(dataclasses.replace(make_config(tmp_path), model="vit"), catalog.MNIST)


def test_images_smaller_than_the_cnn_stages_are_refused_before_building(tmp_path):
    tiny = dataclasses.replace(catalog.MNIST, image_shape=(6, 6, 1))
    with pytest.raises(TapeloopError, match="at least 8x8 pixels .* found images of 6x6") as error:
        run_inputs.build_model(make_config(tmp_path, "--model=cnn", "--model_depth=3"), tiny)
    assert "lower --model_depth to 2" in str(error.value)


def test_the_weight_average_exists_only_with_ema_decay(tmp_path):
    model = run_inputs.build_model(make_config(tmp_path, "--model=mlp"), catalog.MNIST)
    assert run_inputs.make_weight_average(make_config(tmp_path), model) is None
    assert run_inputs.make_weight_average(make_config(tmp_path, "--ema_decay=0.9"), model).decay == 0.9


@pytest.mark.parametrize("optimizer", ["adam", "adamw"])
def test_adam_betas_set_the_moment_decays(tmp_path, optimizer):
    config = make_config(tmp_path, f"--optimizer={optimizer}", "--adam_beta1=0.7", "--adam_beta2=0.9",
                         "--learning_rate=0.1", "--weight_decay=0")
    weight = tf.Variable([0.0])
    adam = run_inputs.make_optimizer(config)
    first, second = 1.0, -3.0
    for gradient in (first, second):
        adam.apply_gradients([(tf.constant([gradient]), weight)])
    mean = 0.3 * (0.7 * first) + 0.3 * second  # m_t = b1 m + (1 - b1) g, from m_0 = 0.
    square = 0.9 * (0.1 * first**2) + 0.1 * second**2
    first_step = 0.1 * np.sign(first)  # One step of Adam moves by the rate, whatever the betas.
    second_step = 0.1 * np.sqrt(1 - 0.9**2) / (1 - 0.7**2) * mean / (np.sqrt(square) + 1e-7)
    np.testing.assert_allclose(weight.numpy(), [-(first_step + second_step)], rtol=1e-4)
