import dataclasses
import gzip
import hashlib
from pathlib import Path

import numpy as np
import pytest

from data import catalog, sources
from tests.helpers import idx_bytes, write_idx, write_idx_dataset
from settings.errors import TapeloopError


def flat(error) -> str:
    return " ".join(str(error).split())


@pytest.fixture
def isolated_search(tmp_path, monkeypatch):
    """No dataset anywhere: every searched place points into an empty temporary folder."""
    monkeypatch.delenv("TAPELOOP_DATA_DIR", raising=False)
    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "keras"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.setattr(sources, "SYSTEM_DATASETS_ROOT", tmp_path / "system")
    return tmp_path


@pytest.mark.parametrize("compress", [True, False])
@pytest.mark.parametrize("dtype", ["u1", ">i4", ">f4"])
def test_read_idx_round_trips_gzip_and_plain_files(tmp_path, compress, dtype):
    array = (np.arange(2 * 3 * 4) * 7).reshape(2, 3, 4).astype(dtype)
    path = write_idx(tmp_path / "array.idx", array, compress=compress)
    read = sources.read_idx(path)
    np.testing.assert_array_equal(read, array)
    assert read.dtype.isnative


def test_read_idx_rejects_a_wrong_magic_number(tmp_path):
    path = tmp_path / "labels.idx"
    path.write_bytes(b"\x00\x00\x07\x01" + b"\x00" * 8)
    with pytest.raises(TapeloopError) as raised:
        sources.read_idx(path)
    assert raised.value.stage == "data"
    assert f"{path} is not a valid IDX file: wrong magic number" in flat(raised.value)
    assert "header bytes 00000701" in flat(raised.value)


def test_read_idx_reports_truncated_data_with_sizes(tmp_path):
    data = idx_bytes(np.zeros((10, 28, 28), np.uint8))
    path = tmp_path / "images.gz"
    path.write_bytes(gzip.compress(data[:-100]))
    with pytest.raises(TapeloopError) as raised:
        sources.read_idx(path)
    message = flat(raised.value)
    assert "the data is truncated" in message
    assert "Expected 7840 data bytes for shape (10, 28, 28); found 7740 bytes" in message
    assert "Fix: delete or replace" in message


def test_read_idx_reports_a_truncated_gzip_stream(tmp_path):
    compressed = gzip.compress(idx_bytes(np.arange(1000, dtype=np.uint8)))
    path = tmp_path / "labels.gz"
    path.write_bytes(compressed[: len(compressed) // 2])
    with pytest.raises(TapeloopError, match="gzip stream is corrupt or truncated"):
        sources.read_idx(path)


def test_read_idx_rejects_trailing_bytes(tmp_path):
    path = tmp_path / "labels.idx"
    path.write_bytes(idx_bytes(np.arange(5, dtype=np.uint8)) + b"\x00")
    with pytest.raises(TapeloopError, match="it has trailing bytes"):
        sources.read_idx(path)


def test_load_dataset_reads_an_explicit_data_dir(tmp_path):
    folder = write_idx_dataset(tmp_path / "mnist", train_size=30, test_size=12)
    splits = sources.load_dataset(catalog.MNIST, str(folder))
    assert splits["train"][0].shape == (30, 28, 28) and splits["train"][0].dtype == np.uint8
    assert splits["test"][1].shape == (12,)


def test_plain_idx_files_are_found_without_the_gz_suffix(tmp_path):
    folder = write_idx_dataset(tmp_path / "mnist", train_size=30, test_size=12)
    for path in folder.iterdir():
        path.with_suffix("").write_bytes(gzip.decompress(path.read_bytes()))
        path.unlink()
    assert len(sources.load_dataset(catalog.MNIST, str(folder))["train"][1]) == 30


def test_a_missing_data_dir_is_an_error_not_a_fallback(tmp_path):
    with pytest.raises(TapeloopError) as raised:
        sources.load_dataset(catalog.MNIST, str(tmp_path / "nowhere"))
    message = flat(raised.value)
    assert f"--data_dir={tmp_path / 'nowhere'} does not hold the mnist files" in message
    assert "does not exist" in message and "Fix: point --data_dir at the folder" in message


def test_a_data_dir_without_the_files_lists_what_is_missing_and_what_is_there(tmp_path):
    (tmp_path / "notes.txt").write_text("not a dataset")
    with pytest.raises(TapeloopError) as raised:
        sources.load_dataset(catalog.MNIST, str(tmp_path))
    message = flat(raised.value)
    assert "lacks train-images-idx3-ubyte.gz" in message and "it holds notes.txt" in message


def test_images_and_labels_of_different_lengths_are_rejected(tmp_path):
    folder = write_idx_dataset(tmp_path / "mnist", train_size=30, test_size=12)
    write_idx(folder / "train-labels-idx1-ubyte.gz", np.zeros(29, np.uint8))
    with pytest.raises(TapeloopError) as raised:
        sources.load_dataset(catalog.MNIST, str(folder))
    assert "one label per image: shape [30]; found labels of shape [29]" in flat(raised.value)


def test_search_prefers_tapeloop_data_dir_over_the_keras_cache(isolated_search, monkeypatch):
    write_idx_dataset(isolated_search / "data" / "mnist", train_size=31)
    keras_datasets = isolated_search / "keras" / "datasets"
    keras_datasets.mkdir(parents=True)
    np.savez(keras_datasets / "mnist.npz", x_train=np.zeros((5, 28, 28), np.uint8), y_train=np.zeros(5, np.uint8),
             x_test=np.zeros((2, 28, 28), np.uint8), y_test=np.zeros(2, np.uint8))
    assert len(sources.load_dataset(catalog.MNIST)["train"][1]) == 5  # Keras cache alone.
    monkeypatch.setenv("TAPELOOP_DATA_DIR", str(isolated_search / "data"))
    assert len(sources.load_dataset(catalog.MNIST)["train"][1]) == 31


def test_offline_without_files_lists_every_place_tried_and_the_fix(isolated_search):
    with pytest.raises(TapeloopError) as raised:
        sources.load_dataset(catalog.FASHION_MNIST, download=False)
    message = flat(raised.value)
    assert "downloads are off (--nodownload)" in message
    for place in ("--data_dir (not set)", "$TAPELOOP_DATA_DIR (not set)",
                  f"Keras cache {isolated_search / 'keras' / 'datasets' / 'fashion-mnist'} (missing)",
                  f"system datasets {isolated_search / 'system' / 'fashion-mnist'} (missing)",
                  f"tapeloop download cache {isolated_search / 'cache' / 'tapeloop' / 'fashion_mnist'}"):
        assert place in message
    assert "sudo apt-get install dataset-fashion-mnist" in message


def mirror_spec(tmp_path: Path, sha256_override: str | None = None) -> catalog.DatasetSpec:
    """MNIST served from a local file:// mirror holding a tiny dataset."""
    mirror = write_idx_dataset(tmp_path / "mirror")
    digests = {path.name: sha256_override or hashlib.sha256(path.read_bytes()).hexdigest()
               for path in mirror.iterdir()}
    return dataclasses.replace(catalog.MNIST, sha256=digests, mirrors=(mirror.as_uri() + "/",))


def test_download_verifies_checksums_and_fills_the_cache(isolated_search):
    spec = mirror_spec(isolated_search)
    splits = sources.load_dataset(spec)
    assert len(splits["train"][1]) == 40
    cached = isolated_search / "cache" / "tapeloop" / "mnist"
    assert sorted(p.name for p in cached.iterdir()) == sorted(spec.sha256)


def test_a_download_with_the_wrong_checksum_is_discarded(isolated_search):
    spec = mirror_spec(isolated_search, sha256_override="0" * 64)
    with pytest.raises(TapeloopError) as raised:
        sources.load_dataset(spec)
    message = flat(raised.value)
    assert "could not be downloaded" in message and "expected " + "0" * 64 in message
    assert "$TAPELOOP_DATA_DIR (not set)" in message
    assert list((isolated_search / "cache" / "tapeloop" / "mnist").iterdir()) == []


def test_synthetic_splits_are_deterministic_and_shaped_like_mnist():
    first, second = sources.synthetic_splits(catalog.SYNTHETIC), sources.synthetic_splits(catalog.SYNTHETIC)
    images, labels = first["train"]
    assert images.shape == (sources.SYNTHETIC_SIZES["train"], 28, 28) and images.dtype == np.uint8
    assert set(np.unique(labels)) == set(range(10))
    np.testing.assert_array_equal(images, second["train"][0])


@pytest.mark.parametrize("weights, found", [
    (np.ones(5), "an array of shape (5,)"),
    (np.ones((4, 1)), "an array of shape (4, 1)"),
    (np.array([1.0, -1.0, 2.0, 0.0]), "0 NaN or infinite and 1 negative weights"),
    (np.array([1.0, np.nan, 2.0, 0.0]), "1 NaN or infinite and 0 negative weights"),
    (np.array(["a", "b", "c", "d"]), "an array of dtype <U1"),
])
def test_sample_weights_that_do_not_fit_the_training_split_are_refused(tmp_path, weights, found):
    np.save(tmp_path / "weights.npy", weights)
    with pytest.raises(TapeloopError) as raised:
        sources.load_sample_weights(str(tmp_path / "weights.npy"), num_examples=4)
    message = str(raised.value)
    assert "[data]" in message and "1-D array of 4 finite numbers >= 0" in message and found in message


def test_sample_weights_are_read_as_given(tmp_path):
    np.save(tmp_path / "weights.npy", np.array([0, 1, 2, 0.5], np.float32))
    np.testing.assert_array_equal(sources.load_sample_weights(str(tmp_path / "weights.npy"), 4), [0, 1, 2, 0.5])
    with pytest.raises(TapeloopError, match="No such file"):
        sources.load_sample_weights(str(tmp_path / "missing.npy"), 4)


def write_cifar_batches(folder: Path, per_batch: int = 4) -> dict[str, np.ndarray]:
    """CIFAR-10's layout: pickled dicts of channels-first rows; returns the images written, [N, 32, 32, 3]."""
    import pickle

    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(1)
    written = {}
    for split, names in catalog.CIFAR10.files.items():
        images = rng.integers(0, 256, (per_batch * len(names), 32, 32, 3), dtype=np.uint8)
        for index, name in enumerate(names):
            part = images[index * per_batch:(index + 1) * per_batch]
            batch = {b"data": part.transpose(0, 3, 1, 2).reshape(per_batch, 3072),
                     b"labels": list(range(index, index + per_batch))}
            (folder / name).write_bytes(pickle.dumps(batch))
        written[split] = images
    return written


def test_cifar10_batches_become_channels_last_rgb_images(tmp_path):
    written = write_cifar_batches(tmp_path / "cifar")
    splits = sources.load_dataset(catalog.CIFAR10, str(tmp_path / "cifar"))
    np.testing.assert_array_equal(splits["train"][0], written["train"])
    assert splits["train"][0].shape == (20, 32, 32, 3) and splits["test"][0].shape == (4, 32, 32, 3)
    np.testing.assert_array_equal(splits["train"][1][:5], [0, 1, 2, 3, 1])


def test_cifar10_downloads_its_archive_verifies_and_unpacks_it(isolated_search):
    import tarfile

    written = write_cifar_batches(isolated_search / "packed" / "cifar-10-batches-py")
    archive = isolated_search / "mirror" / "cifar-10-python.tar.gz"
    archive.parent.mkdir()
    with tarfile.open(archive, "w:gz") as packed:
        packed.add(isolated_search / "packed" / "cifar-10-batches-py", arcname="cifar-10-batches-py")
    spec = dataclasses.replace(catalog.CIFAR10, mirrors=(archive.parent.as_uri() + "/",),
                               sha256={archive.name: hashlib.sha256(archive.read_bytes()).hexdigest()})
    splits = sources.load_dataset(spec)
    np.testing.assert_array_equal(splits["test"][0], written["test"])
    cached = isolated_search / "cache" / "tapeloop" / "cifar10"
    assert sorted(path.name for path in cached.iterdir()) == sorted(
        name for names in spec.files.values() for name in names)  # The archive itself is gone.


def write_npz(folder: Path, **arrays) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    np.savez(folder / "data.npz", **arrays)
    return folder


def npz_config(tmp_path, folder, *flags):
    from tests.helpers import make_config

    return make_config(tmp_path / "run", "--dataset=npz", f"--data_dir={folder}", *flags)


def test_npz_arrays_give_the_spec_and_splits(tmp_path):
    rng = np.random.default_rng(0)
    folder = write_npz(tmp_path / "npz", x_train=rng.integers(0, 256, (30, 12, 10, 3), dtype=np.uint8),
                       y_train=np.arange(30) % 4, x_test=rng.integers(0, 256, (8, 12, 10, 3), dtype=np.uint8),
                       y_test=np.arange(8) % 4, class_names=np.array(["a", "b", "c", "d"]))
    spec, splits = sources.load(npz_config(tmp_path, folder))
    assert spec.image_shape == (12, 10, 3) and spec.class_names == ("a", "b", "c", "d")
    assert spec.mean == pytest.approx(splits["train"][0].mean() / 255, rel=1e-5)
    assert len(splits["test"][1]) == 8


def test_a_catalog_spec_comes_without_its_files_and_a_users_from_its_files(tmp_path):
    from tests.helpers import make_config

    absent = make_config(tmp_path / "run", "--dataset=fashion_mnist", f"--data_dir={tmp_path / 'absent'}")
    assert sources.dataset_spec(absent) is catalog.FASHION_MNIST  # A load would refuse the missing folder.
    folder = write_npz(tmp_path / "npz", x_train=np.zeros((6, 5, 7), np.uint8), y_train=np.arange(6) % 3,
                       x_test=np.zeros((3, 5, 7), np.uint8), y_test=np.arange(3))
    assert sources.dataset_spec(npz_config(tmp_path, folder)).image_shape == (5, 7, 1)


def test_npz_one_hot_labels_need_the_one_hot_label_format(tmp_path):
    images = np.zeros((6, 8, 8), np.float32)
    one_hot = np.eye(3, dtype=np.float32)[np.arange(6) % 3]
    folder = write_npz(tmp_path / "npz", x_train=images, y_train=one_hot, x_test=images, y_test=one_hot)
    with pytest.raises(TapeloopError) as raised:
        sources.load(npz_config(tmp_path, folder))
    assert "one-hot rows" in flat(raised.value) and "--label_format=one_hot" in flat(raised.value)
    spec, splits = sources.load(npz_config(tmp_path, folder, "--label_format=one_hot"))
    assert spec.num_classes == 3 and splits["train"][1].tolist() == [0, 1, 2, 0, 1, 2]


@pytest.mark.parametrize("arrays, phrase", [
    ({"x_train": np.zeros((2, 4, 4))}, "lacks y_train, x_test, y_test"),
    ({"x_train": np.zeros((2, 4, 4)), "y_train": np.array([0.5, 1.0]), "x_test": np.zeros((2, 4, 4)),
      "y_test": np.array([0, 1])}, "y_train"),
])
def test_unusable_npz_files_are_explained(tmp_path, arrays, phrase):
    with pytest.raises(TapeloopError, match=phrase):
        sources.load(npz_config(tmp_path, write_npz(tmp_path / "npz", **arrays)))
    with pytest.raises(TapeloopError, match="exactly one .npz"):
        sources.load(npz_config(tmp_path, tmp_path / "nowhere"))


def test_a_gzip_bomb_is_read_only_as_far_as_the_header_promises(tmp_path):
    import gzip
    import tracemalloc

    bomb = tmp_path / "labels.gz"
    bomb.write_bytes(gzip.compress(idx_bytes(np.zeros(40, np.uint8)) + bytes(100 << 20), compresslevel=1))
    tracemalloc.start()
    with pytest.raises(TapeloopError, match="it has trailing bytes"):
        sources.read_idx(bomb)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert peak < 8 << 20  # Decompressing it whole would take 100 MiB.


def test_a_cifar_batch_pickled_as_python_2_wrote_it_still_loads(tmp_path):
    import pickle

    data = np.random.default_rng(0).integers(0, 256, (3, 3072), dtype=np.uint8)
    batch = {b"batch_label": b"training batch 1 of 5", b"labels": [3, 1, 4], b"data": data,
             b"filenames": [b"a.png", b"b.png", b"c.png"]}
    (tmp_path / "data_batch_1").write_bytes(pickle.dumps(batch, protocol=2))
    loaded = sources._unpickle_batch(tmp_path / "data_batch_1")
    np.testing.assert_array_equal(loaded[b"data"], data)
    assert loaded[b"labels"] == [3, 1, 4]


@pytest.mark.parametrize("payload, phrase", [
    ({b"data": np.zeros((2, 3072), np.uint8), b"labels": ["a", "b"]}, "not uint8 b'data' rows"),
    ([1, 2, 3], "a list with keys []"),
    ({b"data": np.zeros((2, 3072), np.float32), b"labels": [0, 1]}, "not uint8 b'data' rows"),
])
def test_a_pickle_without_cifar_layout_is_refused(tmp_path, payload, phrase):
    import pickle

    (tmp_path / "data_batch_1").write_bytes(pickle.dumps(payload))
    with pytest.raises(TapeloopError, match="is not a readable CIFAR batch") as error:
        sources._unpickle_batch(tmp_path / "data_batch_1")
    assert phrase in str(error.value)
