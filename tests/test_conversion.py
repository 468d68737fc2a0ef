"""export.py's formats: each converts a small trained run and predicts as its SavedModel does."""

import importlib.util
import json
import shutil

import numpy as np
import pytest
import tensorflow as tf

from data import sources
from tests.helpers import make_config, run_script
from trainer import conversion
from trainer.checkpoints import saved_model_probabilities
from settings.errors import TapeloopError

INT8_AGREEMENT = 0.95  # The bound on int8 top-1 agreement with the SavedModel (the recipes' figures: docs/deployment.md).


@pytest.fixture(scope="module")
def exported_run(synthetic_run, tmp_path_factory):
    """A copy of the shared synthetic run with every format exported, and its test images."""
    run_dir = tmp_path_factory.mktemp("exported") / "run"
    shutil.copytree(synthetic_run, run_dir)
    for kind in conversion.FORMATS:
        conversion.export(str(run_dir), kind, conversion.default_path(str(run_dir), kind), calibration_examples=100)
    _, splits = sources.load(make_config(run_dir))
    return run_dir, splits["test"]


@pytest.mark.slow
@pytest.mark.parametrize("kind, agreement", [("tflite", 1.0), ("onnx", 1.0), ("tflite_int8", INT8_AGREEMENT)])
def test_each_format_predicts_the_saved_models_classes(exported_run, kind, agreement):
    run_dir, (images, labels) = exported_run
    saved = saved_model_probabilities(str(run_dir / "saved_model"), images, 256)
    predict, _ = conversion.converted_model(conversion.default_path(str(run_dir), kind), kind)
    converted = conversion.converted_probabilities(predict, images, 256)
    assert converted.shape == saved.shape
    assert np.mean(converted.argmax(axis=1) == saved.argmax(axis=1)) >= agreement
    if agreement == 1.0:
        np.testing.assert_allclose(converted, saved, atol=1e-4)


@pytest.mark.slow
def test_the_contract_beside_the_file_is_the_saved_models(exported_run):
    run_dir, (images, _) = exported_run
    contract = json.loads((run_dir / "export" / "model_int8.tflite.json").read_text())
    assert contract["input"]["dtype"] == "uint8" and contract["input"]["shape"] == [None, *images.shape[1:]]
    assert contract["output"]["class_names"] == [f"pattern_{index}" for index in range(10)]
    assert "calibrated on 100 training images" in contract["quantization"]
    assert contract["input"]["preprocessing_inside"].startswith("pixels / 255, then (x - ")


@pytest.mark.slow
def test_evaluate_and_predict_take_a_converted_file_and_say_how_far_it_is_from_the_saved_model(exported_run,
                                                                                                tmp_path):
    run_dir, (images, labels) = exported_run
    evaluated = run_script("evaluate", f"--run_dir={run_dir}", "--weights=tflite_int8", "--output=-")
    assert evaluated.returncode == 0, evaluated.stderr
    scores = json.loads(evaluated.stdout)
    assert scores["weights"].endswith("model_int8.tflite") and scores["examples"] == len(labels)
    assert scores["saved_model_comparison"]["top1_agreement"] >= INT8_AGREEMENT
    image = tmp_path / "one.png"
    tf.io.write_file(str(image), tf.io.encode_png(images[0][..., None]))
    predicted = run_script("predict", f"--run_dir={run_dir}", "--weights=onnx", "--output=-", str(image))
    assert predicted.returncode == 0, predicted.stderr
    assert json.loads(predicted.stdout)[0]["top"][0]["class"].startswith("pattern_")


def test_onnx_without_its_packages_is_the_paragraph_naming_them(monkeypatch, tmp_path):
    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *args: None if name == "tf2onnx" else real_find_spec(name, *args))
    with pytest.raises(TapeloopError, match="cannot export ONNX: tf2onnx not installed") as raised:
        conversion.export(str(tmp_path / "run"), "onnx", str(tmp_path / "model.onnx"), 10)
    assert "pip install -e '.[onnx]'" in raised.value.fix and not (tmp_path / "model.onnx").exists()


def test_a_converter_failure_is_the_paragraph_with_the_op_it_lacks():
    error = ValueError("loc(fused[...]): error: 'tf.Erfinv' op is neither a custom op nor a flex op\n"
                       "Some ops are not supported by the native TFLite runtime")
    paragraph = conversion.conversion_error("tflite_int8", error)
    assert paragraph.stage == "export" and "could not be converted to tflite_int8" in paragraph.problem
    assert "tf.Erfinv" in paragraph.found and "another format" in paragraph.fix


def test_a_missing_converted_file_or_contract_names_the_export_command(tmp_path):
    with pytest.raises(TapeloopError, match="run scripts/export.py --run_dir=RUN --format=onnx"):
        conversion.converted_model(str(tmp_path / "model.onnx"), "onnx")
    (tmp_path / "model.tflite").write_bytes(b"x")
    with pytest.raises(TapeloopError, match="no usable input contract"):
        conversion.read_contract(str(tmp_path / "model.tflite"))
