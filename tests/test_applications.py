"""keras.applications backbones: each one's preprocessing inside the model against its closed
form, pixels outside [0, 1] and standardized inputs refused, --pretrained weights read from a
file the test writes (no download), and every backbone trained, exported and scored."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from data import catalog, pipeline
from models import applications, registry
from tests.helpers import make_config
from trainer import loop, run_inputs
from trainer.checkpoints import evaluate_saved_model, export_saved_model, saved_model_probabilities
from settings.errors import TapeloopError
from trainer.flags import parse_config

IMAGENET_MEAN_BGR = np.array([103.939, 116.779, 123.68], np.float32)  # keras.applications' caffe mode.
CLOSED_FORM_PREPROCESSING = {
    "mobilenet_v2": lambda rgb: rgb * 2.0 - 1.0,
    "efficientnet_b0": lambda rgb: rgb * 255.0,  # Its own layers normalize.
    "resnet50": lambda rgb: rgb[..., ::-1] * 255.0 - IMAGENET_MEAN_BGR,
}


def gray_images(count=2, side=28, seed=0):
    return np.random.default_rng(seed).uniform(size=(count, side, side, 1)).astype(np.float32)


@pytest.mark.parametrize("name", sorted(applications.BACKBONES))
def test_each_backbone_gets_its_own_preprocessing_of_3_channel_images_of_32_pixels_or_more(name):
    images = gray_images()
    rgb = tf.image.resize(np.repeat(images, 3, axis=-1), (32, 32)).numpy()
    np.testing.assert_allclose(applications.backbone_inputs(name, tf.constant(images)).numpy(),
                               CLOSED_FORM_PREPROCESSING[name](rgb), rtol=1e-5, atol=1e-4)
    large = np.random.default_rng(1).uniform(size=(2, 40, 48, 3)).astype(np.float32)  # Not resized.
    np.testing.assert_allclose(applications.backbone_inputs(name, tf.constant(large)).numpy(),
                               CLOSED_FORM_PREPROCESSING[name](large), rtol=1e-5, atol=1e-4)


def test_the_model_is_its_backbone_on_those_inputs_then_its_head():
    model = registry.build_model("mobilenet_v2", (28, 28, 1), 10, width=8, depth=2, dropout=0.0)
    images = gray_images()
    expected = model.head(model.backbone(CLOSED_FORM_PREPROCESSING["mobilenet_v2"](
        tf.image.resize(np.repeat(images, 3, axis=-1), (32, 32)).numpy()), training=False))
    np.testing.assert_allclose(model(images, training=False).numpy(), expected.numpy(), rtol=1e-4, atol=1e-4)
    assert model.backbone.input_shape == (None, 32, 32, 3)
    assert model.head.kernel.shape == (model.backbone.output_shape[-1], 10)
    for wrong in (images * 255.0, images * 2.0 - 1.0):  # 0-255; preprocessed already.
        with pytest.raises(tf.errors.InvalidArgumentError, match=r"mobilenet_v2 takes pixels in \[0, 1\].*"
                                                                 r"trained on pixels scaled to \[-1, 1\]"):
            model(wrong, training=False)


def test_backbones_default_to_unstandardized_pixels_and_refuse_standardize(tmp_path):
    assert parse_config(["--model=mobilenet_v2"]).standardize is False
    assert parse_config(["--model=cnn"]).standardize is True
    assert parse_config(["--model=cnn", "--nostandardize"]).standardize is False
    config = make_config(tmp_path, "--model=resnet50", "--standardize")
    with pytest.raises(TapeloopError, match="--standardize would hand --model=resnet50 standardized images") as error:
        run_inputs.build_model(config, catalog.SYNTHETIC)
    assert "BGR pixels minus the ImageNet mean" in str(error.value) and "drop --standardize" in str(error.value)


@pytest.mark.parametrize("flags, message", [
    (("--model=cnn", "--pretrained=imagenet"), "--model=cnn has no pretrained weights"),
    (("--model=mobilenet_v2", "--pretrained=backbone.keras"), "is not a weights file"),
    (("--model=mobilenet_v2", "--pretrained=/nowhere/backbone.weights.h5"),
     r"--pretrained=/nowhere/backbone.weights.h5 cannot be read. .* found No such file or directory"),
])
def test_pretrained_weights_that_cannot_be_used_are_refused(tmp_path, flags, message):
    with pytest.raises(TapeloopError, match=message):
        run_inputs.build_model(make_config(tmp_path, *flags), catalog.SYNTHETIC)


def test_imagenet_weights_that_cannot_be_downloaded_are_a_paragraph(tmp_path, monkeypatch):
    def offline(*args, **kwargs):
        raise Exception("URL fetch failure on https://storage.googleapis.com/...: None -- [Errno -2] Name or "
                        "service not known")

    monkeypatch.setattr(keras.src.applications.mobilenet_v2.file_utils, "get_file", offline)
    with pytest.raises(TapeloopError, match=r"could not be loaded. Expected Keras' download of the ImageNet "
                                            r"weights .* found Exception: URL fetch failure") as error:
        run_inputs.build_model(make_config(tmp_path, "--model=mobilenet_v2", "--pretrained=imagenet"), catalog.SYNTHETIC)
    assert "~/.keras/models" in str(error.value)


def test_pretrained_weights_load_from_a_weights_file_and_a_wrong_file_is_refused(tmp_path):
    source = registry.build_model("mobilenet_v2", (28, 28, 1), 10, width=8, depth=2, dropout=0.0)
    for weight in source.backbone.weights:  # Values no initialization draws.
        weight.assign(weight + 0.5)
    path = tmp_path / "backbone.weights.h5"
    source.backbone.save_weights(str(path))
    model = run_inputs.build_model(make_config(tmp_path, "--model=mobilenet_v2", f"--pretrained={path}"),
                              catalog.SYNTHETIC)
    for loaded, saved in zip(model.backbone.weights, source.backbone.weights):
        np.testing.assert_array_equal(loaded.numpy(), saved.numpy())
    other = tmp_path / "other.weights.h5"
    keras.Sequential([keras.Input((4,)), keras.layers.Dense(3)]).save_weights(str(other))
    with pytest.raises(TapeloopError, match="the --pretrained weights of mobilenet_v2 could not be loaded"):
        run_inputs.build_model(make_config(tmp_path, "--model=mobilenet_v2", f"--pretrained={other}"), catalog.SYNTHETIC)


@pytest.mark.slow
def test_a_backbone_trains_through_the_loop_exports_and_its_saved_model_scores_as_the_run_did(tmp_path):
    config = make_config(tmp_path / "run", "--model=mobilenet_v2", "--batch_size=32", "--max_steps=3",
                         "--validation_split=0", "--optimizer=sgd", "--learning_rate=0.01")
    results = loop.train(config)
    built = registry.build_model("mobilenet_v2", (28, 28, 1), 10, width=8, depth=2, dropout=0.0)
    assert results["steps"] == 3 and results["parameters"] == sum(
        int(np.prod(variable.shape)) for variable in built.trainable_variables)
    images, labels = pipeline.prepare_data(config).test
    scores = evaluate_saved_model(str(tmp_path / "run" / "saved_model"), catalog.SYNTHETIC, images, labels, 128)
    assert scores["accuracy"] == pytest.approx(results["test"]["accuracy"], abs=1.5 / len(labels))


@pytest.mark.slow
@pytest.mark.parametrize("name", ["efficientnet_b0", "resnet50"])
def test_the_other_backbones_export_and_predict_as_the_model_does(tmp_path, name):
    # Their training path is mobilenet_v2's above (the same TransferModel); tracing their gradients
    # costs 20 s each, so here only what differs: their graphs through the export.
    model = run_inputs.build_model(make_config(tmp_path, f"--model={name}"), catalog.SYNTHETIC)
    stored = np.random.default_rng(0).integers(0, 256, (8, 28, 28)).astype(np.uint8)  # As the dataset stores them.
    export_saved_model(model, catalog.SYNTHETIC, False, str(tmp_path / "saved_model"))
    np.testing.assert_allclose(saved_model_probabilities(str(tmp_path / "saved_model"), stored, 8),
                               tf.nn.softmax(model(stored[..., None] / 255.0, training=False)).numpy(),
                               rtol=1e-4, atol=1e-5)
