"""The user-facing failures, through the real entry points: one paragraph, non-zero exit, no traceback."""

import gzip
import json
import logging
from pathlib import Path

import pytest

from tests.helpers import REPO, assert_one_paragraph_error, run_script, write_idx_dataset
from trainer import cli

pytestmark = pytest.mark.slow  # Every test here runs a script or trains a model.


def test_an_invalid_flag_value_fails_before_any_work_with_the_allowed_values(tmp_path):
    result = run_script("train", "--optimizer=rmsprop", f"--run_dir={tmp_path / 'run'}")
    assert_one_paragraph_error(result, 2, "[flags]", "<adam|adamw|sgd>", "--helpfull")
    assert not (tmp_path / "run").exists()


def test_an_unknown_loss_term_fails_at_start_up_naming_the_term(tmp_path):
    result = run_script("train", "--dataset=synthetic", "--loss_weights=cross_entropy=1,hinge=0.5",
                        f"--run_dir={tmp_path / 'run'}")
    assert_one_paragraph_error(result, 2, "[flags]", "--loss_weights", "unknown loss term 'hinge'",
                               "terms: cross_entropy, binary_cross_entropy, focal, l2")
    assert not (tmp_path / "run").exists()


def test_a_diverging_learning_rate_stops_with_the_paragraph_and_saves_no_checkpoint(tmp_path):
    result = run_script("train", "--dataset=synthetic", "--model_width=8", "--learning_rate=10",
                        f"--run_dir={tmp_path / 'run'}", "--progress=log")
    assert_one_paragraph_error(result, 1, "[loss] training diverged by step", "with learning rate 10",
                               "lower --learning_rate (try 1)", "--warmup_steps")
    assert not (tmp_path / "run" / "checkpoints").exists()


def test_a_step_schedule_without_values_fails_naming_the_flags(tmp_path):
    result = run_script("train", "--dataset=synthetic", "--lr_schedule=step", "--lr_boundaries=100",
                        f"--run_dir={tmp_path / 'run'}")
    assert_one_paragraph_error(result, 2, "[flags]", "--lr_schedule=step needs", "--lr_values")


@pytest.mark.parametrize("script, flag", [("lr_range_test", "--range_test_max_rate=inf"),
                                          ("lr_range_test", "--range_test_max_rate=nan"),  # Not "min below max".
                                          ("make_dataset_variant", "--flip_labels=nan"),
                                          ("benchmark", "--target_accuracy=inf")])
def test_every_scripts_own_float_flags_must_be_finite(tmp_path, script, flag):
    result = run_script(script, flag, f"--run_dir={tmp_path / 'run'}" if script == "lr_range_test" else
                        f"--output_dir={tmp_path}" if script == "make_dataset_variant" else "--dataset=synthetic")
    assert_one_paragraph_error(result, 2, "[flags]", f"--{flag[2:].split('=')[0]} must be a finite number")
    assert list(tmp_path.iterdir()) == []


def test_a_missing_run_dir_flag_is_a_usage_error():
    assert_one_paragraph_error(run_script("train", "--dataset=synthetic"), 2, "--run_dir must have a value")


@pytest.mark.skipif(Path("/usr/share/datasets/mnist").exists(), reason="this machine has MNIST installed")
def test_a_missing_dataset_offline_lists_every_place_tried(tmp_path):
    env = {"HOME": str(tmp_path), "KERAS_HOME": str(tmp_path / "keras"), "XDG_CACHE_HOME": str(tmp_path / "cache"),
           "TAPELOOP_DATA_DIR": ""}
    result = run_script("train", "--dataset=mnist", "--nodownload", f"--run_dir={tmp_path / 'run'}", env=env)
    assert_one_paragraph_error(result, 1, "[data]", "--data_dir (not set)", "$TAPELOOP_DATA_DIR (not set)",
                               "Keras cache", "/usr/share/datasets/mnist (missing)", "Fix:")
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("damage, phrase", [
    (lambda raw: b"\x00\x00\x99\x03" + raw[4:], "wrong magic number"),
    (lambda raw: raw[: len(raw) - 500], "the data is truncated"),
])
def test_a_corrupt_idx_file_is_named_with_the_fix(tmp_path, damage, phrase):
    folder = write_idx_dataset(tmp_path / "data")
    target = folder / "train-images-idx3-ubyte.gz"
    target.write_bytes(gzip.compress(damage(gzip.decompress(target.read_bytes()))))
    result = run_script("train", "--dataset=mnist", f"--data_dir={folder}", f"--run_dir={tmp_path / 'run'}")
    assert_one_paragraph_error(result, 1, f"{target} is not a valid IDX file: {phrase}", "Fix:")
    assert not (tmp_path / "run").exists()


def test_a_wrong_data_dir_is_an_error_not_a_silent_fallback(tmp_path):
    result = run_script("train", "--dataset=fashion_mnist", f"--data_dir={tmp_path / 'typo'}",
                        f"--run_dir={tmp_path / 'run'}")
    assert_one_paragraph_error(result, 1, f"--data_dir={tmp_path / 'typo'} does not hold the fashion_mnist files",
                               "does not exist")


def test_verbosity_one_adds_the_traceback(tmp_path):
    result = run_script("train", "--dataset=mnist", f"--data_dir={tmp_path}", f"--run_dir={tmp_path / 'run'}",
                        "--verbosity=1")
    assert result.returncode == 1 and "Traceback" in result.stderr and "tapeloop: error:" in result.stderr


def test_evaluate_refuses_a_folder_that_is_not_a_run(tmp_path):
    assert_one_paragraph_error(run_script("evaluate", f"--run_dir={tmp_path}"), 1,
                               "[run directory]", "is not a tapeloop run directory")


def test_evaluate_reports_test_time_augmentation_beside_the_plain_accuracy(synthetic_run):
    results = json.loads((synthetic_run / "results.json").read_text())
    evaluated = json.loads(run_script("evaluate", f"--run_dir={synthetic_run}", "--tta=shift", "--output=-").stdout)
    assert evaluated["accuracy"] == pytest.approx(results["test"]["accuracy"])  # The headline is untouched.
    assert evaluated["tta"]["views"] == "shift" and 0.99 <= evaluated["tta"]["accuracy"] <= 1.0
    assert_one_paragraph_error(run_script("evaluate", f"--run_dir={synthetic_run}", "--tta=flip"), 1,
                               "[eval]", "mirror", "--tta=shift")
    refused = run_script("evaluate", f"--run_dir={synthetic_run}", "--tta=flip", "--weights=saved_model")
    assert refused.returncode == 2 and "--tta scores checkpoint weights" in refused.stderr


@pytest.mark.parametrize("package", ["settings", "data", "models", "scripts", "trainer", "diagnosis", "tuning"])
def test_info_lines_of_every_tapeloop_package_are_shown_and_tensorflows_are_not(package):
    def record(path, level=logging.INFO):
        return logging.LogRecord("absl", level, path, 1, "message", None, None)

    assert cli._is_shown(record(str(REPO / package / "module.py")))
    assert not cli._is_shown(record("/site-packages/tensorflow/python/ops/math_ops.py"))
    assert cli._is_shown(record("/site-packages/tensorflow/python/ops/math_ops.py", logging.WARNING))
