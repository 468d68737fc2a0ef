import re

import numpy as np
import pytest

from data import catalog
from settings.errors import TapeloopError


@pytest.mark.parametrize("spec", [catalog.MNIST, catalog.FASHION_MNIST])
def test_file_datasets_have_checksums_and_mirrors_for_every_file(spec):
    filenames = [name for pair in spec.files.values() for name in pair]
    assert sorted(spec.sha256) == sorted(filenames)
    assert all(re.fullmatch("[0-9a-f]{64}", digest) for digest in spec.sha256.values())
    assert spec.mirrors and all(mirror.endswith("/") for mirror in spec.mirrors)
    assert spec.num_classes == len(spec.class_names) == 10


def test_cifar10_is_one_verified_archive_of_pickled_rgb_batches():
    spec = catalog.CIFAR10
    assert list(spec.sha256) == [spec.archive] and len(spec.sha256[spec.archive]) == 64
    assert spec.image_shape == (32, 32, 3) and spec.stored_shape == (32, 32, 3) and spec.flip_invariant
    assert len(spec.files["train"]) == 5 and spec.files["test"] == ("test_batch",)


def test_user_datasets_take_shape_and_statistics_from_their_images():
    images = np.linspace(0.0, 1.0, 2 * 4 * 6 * 3).reshape(2, 4, 6, 3)
    spec = catalog.user_spec("npz", images, ("a", "b"))
    assert spec.image_shape == (4, 6, 3) and spec.num_classes == 2
    assert spec.mean == pytest.approx(0.5) and spec.std == pytest.approx(images.std())
    assert catalog.user_spec("npz", images[..., 0], ("a", "b")).stored_shape == (4, 6)


def test_grayscale_datasets_are_stored_without_a_channel_axis():
    assert catalog.MNIST.image_shape == (28, 28, 1)
    assert catalog.MNIST.stored_shape == (28, 28)


def test_unknown_dataset_lists_the_known_names():
    with pytest.raises(TapeloopError) as raised:
        catalog.get_spec("cifar")
    message = " ".join(str(raised.value).split())
    assert "[data] unknown dataset 'cifar'" in message
    assert "fashion_mnist, mnist, synthetic" in message
