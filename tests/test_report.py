"""Diagnosing a finished run: its curves read back from event files, and the whole report on a run."""

import dataclasses
import json
import shutil
import types

import numpy as np
import pytest
import tensorflow as tf

from data import catalog, sources
from tests.documented_outputs import assert_documented
from tests.helpers import assert_one_paragraph_error, copy_run, make_config, read_tensors, run_script
from diagnosis import findings, label_issues, report
from trainer import loop
from trainer.flags import parse_config


def write_scalar_events(folder, tag, records):
    writer = tf.summary.create_file_writer(str(folder))
    with writer.as_default():
        for step, value in records:
            tf.summary.scalar(tag, value, step=step)
    writer.close()


def test_scalars_are_read_in_step_order_keeping_a_resumed_runs_later_value(tmp_path):
    write_scalar_events(tmp_path / "train", "loss/total", [(10, 2.0), (20, 1.5), (30, 1.2), (20, 1.4)])
    steps, values = report.read_scalars(str(tmp_path / "train"))["loss/total"]
    assert steps.tolist() == [10, 20, 30] and values.tolist() == pytest.approx([2.0, 1.4, 1.2])
    assert report.read_scalars(str(tmp_path / "absent")) == {}


def write_training_curves(folder):
    for tag, records in (("loss/total", [(50, 2.0), (100, 1.0)]), ("accuracy", [(50, 0.5), (100, 0.7)]),
                         ("learning_rate", [(50, 1e-3), (100, 1e-3)])):
        write_scalar_events(folder, tag, records)


@pytest.mark.parametrize("damage, state", [
    ("deleted", "missing"), ("emptied", "missing"), ("cut short", "damaged or cut short"),
    ("garbage", "damaged or cut short")])
def test_damaged_training_curves_are_named_instead_of_read(tmp_path, damage, state):
    train = tmp_path / "train"
    write_training_curves(train)
    files = sorted(train.iterdir())
    if damage == "deleted":
        shutil.rmtree(train)
    for path in files if damage in ("emptied", "cut short", "garbage") else ():
        if damage == "emptied":
            path.unlink()
        elif damage == "cut short":
            path.write_bytes(path.read_bytes()[:30])  # Inside the first record.
        else:
            path.write_bytes(bytes(range(256)) * 4)
    curves, problem = report.read_curves(str(tmp_path), steps_per_epoch=100, num_classes=10)
    assert curves is None
    assert problem == f"{train} holds no readable loss/total, accuracy, learning_rate (its event files are {state})"


def test_curves_put_validation_results_at_their_epochs(tmp_path):
    for tag, records in (("loss/total", [(50, 2.0), (100, 1.0)]), ("accuracy", [(50, 0.5), (100, 0.7)]),
                         ("learning_rate", [(50, 1e-3), (100, 1e-3)])):
        write_scalar_events(tmp_path / "train", tag, records)
    write_scalar_events(tmp_path / "eval", "loss/total", [(100, 0.9), (200, 0.8)])
    write_scalar_events(tmp_path / "eval", "accuracy", [(100, 0.72), (200, 0.75)])
    curves, problem = report.read_curves(str(tmp_path), steps_per_epoch=100, num_classes=10)
    assert problem is None
    assert curves.eval_epochs.tolist() == [1, 2] and curves.eval_accuracy.tolist() == pytest.approx([0.72, 0.75])
    assert curves.train_loss.tolist() == [2.0, 1.0] and curves.chance_loss == pytest.approx(np.log(10))


@pytest.mark.slow
def test_a_finished_run_is_diagnosed_in_text_json_and_tensorboard(tmp_path, synthetic_run):
    run_dir = copy_run(synthetic_run, tmp_path)
    result = run_script("diagnose", f"--run_dir={run_dir}", f"--output={tmp_path / 'diagnosis.json'}")
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("Diagnosis on the validation split")
    written = json.loads((tmp_path / "diagnosis.json").read_text())
    assert_documented("diagnosis.json", written)
    assert written["split"] == "validation" and written["findings"]
    for finding in written["findings"]:
        assert finding["kind"] in findings.KINDS and finding["severity"] in ("major", "moderate", "minor", "info")
        assert finding["evidence"] in result.stdout
    costs = [finding["cost"] for finding in written["findings"] if finding["cost"] is not None]
    assert costs == sorted(costs, reverse=True)
    assert {"ece", "temperature", "ece_after_temperature"} <= set(written["calibration"])
    assert [finding["kind"] for finding in written["findings"]][-1] == "calibration"
    logged = read_tensors(run_dir / "diagnosis")
    assert logged["diagnosis/report"][0][1].item().decode().startswith("Diagnosis on the validation split")
    assert logged["diagnosis/reliability"][0][1].shape == (3,)  # Width, height, one PNG.
    review = written["label_review"]["test"]  # Every test example ranked by label quality: the lowest 100.
    assert len(review) == 100 and [entry["score"] for entry in review] == sorted(entry["score"] for entry in review)
    assert "Label review (test split): the 100 of" in result.stdout
    assert (run_dir / "diagnosis" / "label_review_test.png").is_file()


@pytest.mark.slow
def test_diagnosing_a_folder_that_is_not_a_run_is_the_paragraph(tmp_path):
    assert_one_paragraph_error(run_script("diagnose", f"--run_dir={tmp_path}"), 1, "is not a tapeloop run directory")


@pytest.mark.slow
def test_stale_batch_norm_statistics_are_warned_about_and_ranked_first_on_real_digits(tmp_path, mnist_dir, caplog):
    """The case that was once called overfitting: 2,700 MNIST digits, 3 epochs of the cnn."""
    splits = sources.load_dataset(catalog.MNIST, mnist_dir)
    (images, labels), (test_images, test_labels) = splits["train"], splits["test"]
    folder = tmp_path / "digits"
    folder.mkdir()
    np.savez(folder / "digits.npz", x_train=images[:3000], y_train=labels[:3000].astype(np.int64),
             x_test=test_images[:2000], y_test=test_labels[:2000].astype(np.int64))
    # Keras' momentum, which lags here: the default spans an epoch (21 steps) and does not.
    config = parse_config(["--dataset=npz", f"--data_dir={folder}", "--model_width=16", "--epochs=3",
                           "--batchnorm_momentum=0.99", "--log_every_steps=5", "--progress=log",
                           f"--run_dir={tmp_path / 'run'}"])
    caplog.set_level("WARNING", logger="absl")
    loop.train(config)
    logged = " ".join(caplog.text.split())
    assert "batch-norm statistics that lag the weights" in logged and "the model is overfitting" not in logged
    diagnosis = report.diagnose_run(str(tmp_path / "run"), label_issue_mode="off")
    first = diagnosis.findings[0]
    assert first.kind == "batchnorm_statistics" and first.severity == "major"
    assert "--precise_bn_batches=50" in first.suggestion


def test_training_accuracy_capped_by_wrong_labels_is_not_called_underfitting(tmp_path):
    logs = [(step, 2.3 - 1.7 * min(step, 100) / 100) for step in range(10, 410, 10)]
    for tag, records in (("loss/total", logs), ("accuracy", [(step, 0.88) for step, _ in logs]),
                         ("learning_rate", [(step, 1e-3) for step, _ in logs])):
        write_scalar_events(tmp_path / "run" / "train", tag, records)
    config = make_config(tmp_path / "run", "--batch_size=100")
    data = types.SimpleNamespace(train=(None, np.zeros(10000)), spec=catalog.MNIST)
    noted = []
    kinds = [finding.kind for finding in report.curve_findings(str(tmp_path / "run"), config, data, False,
                                                                      0.0, noted)]
    assert "underfitting" in kinds and noted == []
    kinds = [finding.kind for finding in report.curve_findings(str(tmp_path / "run"), config, data, False,
                                                                      0.10, noted)]
    assert "underfitting" not in kinds and "capacity" not in kinds
    assert "near the 0.9000 that the 10.0% of training labels that look wrong leave" in noted[0]


@pytest.mark.slow
def test_a_run_whose_training_events_are_damaged_is_diagnosed_from_its_final_model(tmp_path, synthetic_run):
    run_dir = copy_run(synthetic_run, tmp_path)
    for path in (run_dir / "train").iterdir():
        path.write_bytes(bytes(range(256)) * 4)
    result = run_script("diagnose", f"--run_dir={run_dir}", "--label_issues=off")
    assert result.returncode == 0, result.stderr
    flat = " ".join(result.stdout.split())
    assert (f"the curve findings are left out: {run_dir / 'train'} holds no readable loss/total, accuracy, "
            "learning_rate (its event files are damaged or cut short)") in flat
    assert "calibration" in flat  # Measured on the final model.


def test_an_image_folders_report_names_the_files_of_its_label_issues_and_duplicates():
    def judged(split, indices):
        return label_issues.LabelIssues(split=split, examined=10, indices=np.array(indices), labels=np.zeros(2, int),
                                        suggested=np.ones(2, int), images=np.zeros((0, 2, 2)), model_accuracy=0.95)

    paths = {"train": [f"/images/train/{index}.png" for index in range(10)],
             "test": [f"/images/test/{index}.png" for index in range(10)]}
    diagnosis = report.RunDiagnosis(
        findings=[], split="test", calibration={}, notes=[], reliability=(None, None, None), grids={},
        label_issues=[judged("train", [7, 2]), judged("test", [4, 0])], duplicates=[(3, 9, 0.999)], paths=paths)
    written = diagnosis.as_json()
    assert written["label_issues"] == {"train": [7, 2], "test": [4, 0]}
    assert written["paths"] == {
        "label_issues": {"train": ["/images/train/7.png", "/images/train/2.png"],
                         "test": ["/images/test/4.png", "/images/test/0.png"]},
        "duplicates": [["/images/train/3.png", "/images/test/9.png"]]}
    assert "paths" not in dataclasses.replace(diagnosis, paths=None).as_json()
