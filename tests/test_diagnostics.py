import numpy as np
import pytest

from data import catalog, diagnostics
from data.pipeline import PreparedData
from tests.helpers import make_config
from settings.errors import TapeloopError


def prepared(train_images, train_labels, test_images=None, test_labels=None):
    rng = np.random.default_rng(0)
    if test_images is None:
        test_images = rng.integers(0, 256, (20, 28, 28), dtype=np.uint8)
        test_labels = np.arange(20) % 10
    return PreparedData(spec=catalog.MNIST, train=(train_images, train_labels), validation=None,
                        test=(test_images, test_labels))


def balanced_train(count=100):
    images = np.random.default_rng(1).integers(0, 256, (count, 28, 28), dtype=np.uint8)
    return images, (np.arange(count) % 10).astype(np.uint8)


def test_the_report_states_sizes_pixels_and_classes(tmp_path):
    report = diagnostics.preflight(prepared(*balanced_train()), make_config(tmp_path))
    assert report.lines[0].startswith("mnist: train 100, test 20 examples; images uint8 [28, 28], values 0 to 255")
    assert report.lines[1] == "training examples per class: " + ", ".join(f"{digit} 10" for digit in range(10))
    assert report.warnings == [] and report.text() == "\n".join(report.lines)


def test_test_images_that_are_training_images_are_counted(tmp_path):
    images, labels = balanced_train()
    fresh = np.random.default_rng(2).integers(0, 256, (3, 28, 28), dtype=np.uint8)  # Classes 7-9, so every class is in test.
    test_images, test_labels = np.concatenate([images[:7], fresh]), np.concatenate([labels[:7], [7, 8, 9]])
    report = diagnostics.preflight(prepared(images, labels, test_images, test_labels), make_config(tmp_path))
    assert len(report.warnings) == 1
    assert "7 test images also appear in the training split" in report.warnings[0].paragraph()
    assert "test accuracy is optimistic" in report.warnings[0].paragraph()


@pytest.mark.parametrize("ratio, warned", [(9, False), (10, True)])
def test_imbalance_is_warned_about_from_ten_to_one_unless_weighted(tmp_path, ratio, warned):
    images, _ = balanced_train(10 * ratio + 10)
    labels = np.zeros(len(images), np.uint8)
    labels[-10:] = 1
    test_images = np.random.default_rng(2).integers(0, 256, (20, 28, 28), dtype=np.uint8)
    data = prepared(images, labels, test_images, np.arange(20) % 2)  # Test classes as in training.
    assert bool(diagnostics.preflight(data, make_config(tmp_path)).warnings) == warned
    assert not diagnostics.preflight(data, make_config(tmp_path, "--class_weights=balanced")).warnings


@pytest.mark.parametrize("images, labels, phrase", [
    (np.full((10, 28, 28), 300, np.int32), np.arange(10), "are not 8-bit pixels"),
    (np.zeros((10, 28, 28), np.uint8), np.arange(10, dtype=np.float32), "labels are not class ids"),
    (np.zeros((10, 28, 28), np.uint8), np.eye(10, dtype=np.int64), "labels are not class ids"),
    (np.zeros((10, 28, 28), np.float32) - 0.5, np.arange(10), "outside --input_range=0,1"),
    (np.zeros((10, 32, 32), np.uint8), np.arange(10), "do not fit the model"),
])
def test_data_no_model_can_learn_from_is_refused(tmp_path, images, labels, phrase):
    with pytest.raises(TapeloopError, match=phrase) as raised:
        diagnostics.preflight(prepared(images, labels), make_config(tmp_path))
    assert raised.value.stage == "raw data"


@pytest.mark.parametrize("validation_size, flags, suggestion", [
    (90, (), "--validation_split=0.12"),  # 1.1 points an example; 0.05 of the data held out.
    (10, (), "the dataset is too small for a split that fine"),
    (400, ("--early_stopping_metric=balanced_accuracy", ), None),  # 40 per class: 0.25 points.
    (100, ("--early_stopping_metric=balanced_accuracy", ), "--validation_split=0.1"),
    (90, ("--early_stopping_metric=loss", ), None),
    (200, (), None),
])
def test_a_validation_split_too_coarse_to_rank_checkpoints_is_warned_about(tmp_path, validation_size, flags,
                                                                           suggestion):
    images, labels = balanced_train(200)
    validation = balanced_train(validation_size)
    data = PreparedData(spec=catalog.MNIST, train=(images, labels), validation=validation,
                        test=(images[:20], labels[:20]))
    warnings = diagnostics.preflight(data, make_config(tmp_path, "--validation_split=0.05", *flags)).warnings
    coarse = [warning.paragraph() for warning in warnings if "too small to pick the best checkpoint" in
              warning.paragraph()]
    assert len(coarse) == (suggestion is not None)
    if suggestion:
        assert suggestion in coarse[0] and "--early_stopping_metric=loss" in coarse[0]
        assert f"found {validation_size} validation examples" in coarse[0]
