import pytest

from data import catalog
from trainer.errors import TapeloopError


@pytest.mark.parametrize("spec", [catalog.MNIST, catalog.FASHION_MNIST])
def test_file_datasets_have_checksums_and_mirrors_for_every_file(spec):
    filenames = [name for pair in spec.files.values() for name in pair]
    assert sorted(spec.sha256) == sorted(filenames)
    assert all(len(digest) == 64 and int(digest, 16) >= 0 for digest in spec.sha256.values())
    assert spec.mirrors and all(mirror.endswith("/") for mirror in spec.mirrors)
    assert spec.num_classes == len(spec.class_names) == 10


def test_grayscale_datasets_are_stored_without_a_channel_axis():
    assert catalog.MNIST.image_shape == (28, 28, 1)
    assert catalog.MNIST.stored_shape == (28, 28)


def test_unknown_dataset_lists_the_known_names():
    with pytest.raises(TapeloopError) as raised:
        catalog.get_spec("cifar")
    message = " ".join(str(raised.value).split())
    assert "[data] unknown dataset 'cifar'" in message
    assert "fashion_mnist, mnist, synthetic" in message
