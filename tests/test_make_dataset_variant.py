"""make_dataset_variant.py: on real MNIST, a class subset with so many training images per class,
faults on top, and the truth file about them, each checked against the original arrays; and the
requests it refuses (class ids the dataset lacks, flips with one class, overwriting a data.npz)."""

import json

import numpy as np
import pytest

from data import catalog, sources
from tests.helpers import assert_one_paragraph_error, run_script

pytestmark = pytest.mark.slow  # Runs a script end to end.


def test_a_class_subset_with_so_many_training_images_per_class_and_its_faults(tmp_path, mnist_dir):
    result = run_script("make_dataset_variant", "--dataset=mnist", f"--data_dir={mnist_dir}", "--classes=7,3,9",
                        "--train_per_class=40", "--flip_labels=0.1", "--copy_test_to_train=4", "--seed=3",
                        f"--output_dir={tmp_path}")
    assert result.returncode == 0, result.stderr
    original = sources.load_dataset(catalog.MNIST, mnist_dir)
    with np.load(tmp_path / "data.npz") as stored:
        variant = {name: stored[name] for name in stored.files}
    truth = json.loads((tmp_path / "truth.json").read_text())
    assert variant["class_names"].tolist() == ["7", "3", "9"]  # In the order asked for, renumbered 0, 1, 2.

    test_images, test_labels = original["test"]
    kept = np.isin(test_labels, [7, 3, 9])
    np.testing.assert_array_equal(variant["x_test"], test_images[kept])
    np.testing.assert_array_equal(variant["y_test"], [{7: 0, 3: 1, 9: 2}[label] for label in test_labels[kept]])

    copies = {train: test for train, test in truth["copies"]}
    flipped = {index: (stored_label, true) for index, stored_label, true in truth["flipped"]}
    assert len(copies) == 4 and len(variant["y_train"]) == 3 * 40 + 4
    true_labels = variant["y_train"].copy()
    for index, (stored_label, true) in flipped.items():
        assert variant["y_train"][index] == stored_label != true
        true_labels[index] = true
    assert len(flipped) == round(0.1 * 3 * 40)
    for train, test in copies.items():
        np.testing.assert_array_equal(variant["x_train"][train], variant["x_test"][test])
    originals = [index for index in range(len(true_labels)) if index not in copies]
    assert np.bincount(true_labels[originals], minlength=3).tolist() == [40, 40, 40]
    train_images, train_labels = original["train"]
    by_image = {image.tobytes(): label for image, label in zip(train_images, train_labels)}
    assert all([7, 3, 9][true_labels[index]] == by_image[variant["x_train"][index].tobytes()] for index in originals)


@pytest.mark.parametrize("arguments, message", [
    (("--classes=3,99",), "--classes names a class id the --dataset does not have"),
    (("--classes=4", "--flip_labels=0.1"), "--flip_labels needs two classes or more"),
])
def test_classes_the_dataset_lacks_and_flips_without_another_class_are_flag_errors(tmp_path, arguments, message):
    result = run_script("make_dataset_variant", "--dataset=mnist", *arguments, f"--output_dir={tmp_path / 'out'}")
    assert_one_paragraph_error(result, 2, "[flags]", message)
    assert not (tmp_path / "out").exists()


def test_an_existing_data_npz_is_never_overwritten(tmp_path):
    (tmp_path / "data.npz").write_bytes(b"a user's own dataset")
    result = run_script("make_dataset_variant", "--dataset=mnist", f"--output_dir={tmp_path}")
    assert_one_paragraph_error(result, 1, f"[output] {tmp_path / 'data.npz'} exists already")
    assert (tmp_path / "data.npz").read_bytes() == b"a user's own dataset"
