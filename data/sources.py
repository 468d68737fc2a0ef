"""Readers (IDX, CIFAR's pickled batches, Keras-style npz, synthetic) and the search for a
catalog dataset's files.

Files are looked for in order: `--data_dir`, `$TAPELOOP_DATA_DIR/<name>`, Keras'
cache, `/usr/share/datasets/<folder>` (Debian's dataset packages), tapeloop's
download cache; then, if allowed, downloaded with checksum verification.
Image folders have their own module, data/image_folder.py.
"""

import gzip
import hashlib
import os
import pickle
import struct
import tarfile
import tempfile
import urllib.error
import urllib.request
import zlib
from pathlib import Path

import numpy as np

from data import image_folder
from data.catalog import DatasetSpec, get_spec, user_spec
from data.pixels import unit_scaled
from trainer.config import TrainConfig
from trainer.errors import TapeloopError

Arrays = tuple[np.ndarray, np.ndarray]

IDX_DTYPES = {0x08: "u1", 0x09: "i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}
SYSTEM_DATASETS_ROOT = Path("/usr/share/datasets")
SYNTHETIC_SIZES = {"train": 2048, "test": 512}
DOWNLOAD_TIMEOUT_SECONDS = 60


def _bad_file(path: Path, problem: str, expected: str, found: str) -> TapeloopError:
    return TapeloopError(
        stage="data",
        problem=f"{path} is not a valid IDX file: {problem}",
        expected=expected,
        found=found,
        fix=f"delete or replace {path} with an intact copy (re-download it, or reinstall the "
        "package that provides it), or point --data_dir at a folder with intact files",
    )


def _read_bytes(path: Path) -> bytes:
    """Reads a file, gunzipping it when it starts with the gzip magic bytes."""
    raw = path.read_bytes()
    if raw[:2] != b"\x1f\x8b":
        return raw
    try:
        return gzip.decompress(raw)
    except (OSError, EOFError, zlib.error) as error:
        raise _bad_file(path, "the gzip stream is corrupt or truncated",
                        "a complete gzip stream", f"{type(error).__name__}: {error}") from None


def read_idx(path: str | os.PathLike) -> np.ndarray:
    """Reads an IDX file (gzip-compressed or plain) into a native-endian array."""
    path = Path(path)
    raw = _read_bytes(path)
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] not in IDX_DTYPES:
        raise _bad_file(path, "wrong magic number", "0x0000 then a type code in "
                        f"{sorted(hex(code) for code in IDX_DTYPES)} and a rank",
                        f"header bytes {raw[:4].hex() or 'none (empty file)'}")
    rank = raw[3]
    header_size = 4 + 4 * rank
    if len(raw) < header_size:
        raise _bad_file(path, "the header is truncated", f"{header_size} header bytes",
                        f"{len(raw)} bytes in the whole file")
    shape = struct.unpack(f">{rank}I", raw[4:header_size])
    dtype = np.dtype(IDX_DTYPES[raw[2]])
    expected_size = int(np.prod(shape)) * dtype.itemsize
    found_size = len(raw) - header_size
    if found_size != expected_size:
        problem = "the data is truncated" if found_size < expected_size else "it has trailing bytes"
        raise _bad_file(path, problem, f"{expected_size} data bytes for shape {shape}",
                        f"{found_size} bytes")
    return np.frombuffer(raw, dtype, offset=header_size).reshape(shape).astype(dtype.newbyteorder("="))


def _find_idx_file(folder: Path, filename: str) -> Path | None:
    """Finds `filename` in `folder`, compressed (`.gz`) or not."""
    for candidate in (folder / filename, folder / filename.removesuffix(".gz")):
        if candidate.is_file():
            return candidate
    return None


def _missing_files(spec: DatasetSpec, location: Path) -> list[str]:
    if location.suffix == ".npz":
        return [] if location.is_file() else [location.name]
    return [name for pair in spec.files.values() for name in pair
            if _find_idx_file(location, name) is None]


def _check_pair(spec: DatasetSpec, split: str, images: np.ndarray, labels: np.ndarray,
                where: Path) -> Arrays:
    height, width, _ = spec.image_shape
    if images.ndim not in (3, 4) or images.shape[1:3] != (height, width):
        if images.ndim == 2 and images.shape[1] == height * width:
            fix = f"the images are flattened rows: reshape them to [N, {height}, {width}] when writing the files"
        else:
            fix = (f"resize every image to {height}x{width} (e.g. tf.image.resize) so train and test "
                   f"agree, or check that {where} holds {spec.name} and pick the matching --dataset")
        raise TapeloopError(
            stage="data", problem=f"the {split} images in {where} have the wrong shape",
            expected=f"[N, {height}, {width}] or [N, {height}, {width}, C] for {spec.name}",
            found=f"shape {list(images.shape)}", fix=fix)
    if labels.ndim != 1 or len(labels) != len(images):
        raise TapeloopError(
            stage="data", problem=f"the {split} labels in {where} do not match the images",
            expected=f"one label per image: shape [{len(images)}]",
            found=f"labels of shape {list(labels.shape)}",
            fix="the image and label files come from different datasets or one is damaged: "
            "replace them with a matching pair")
    return images, labels


def _unpickle_batch(path: Path) -> dict:
    """One of CIFAR's pickled batches (the catalog's files: verified when downloaded)."""
    try:
        with path.open("rb") as stream:
            return pickle.load(stream, encoding="bytes")
    except (pickle.UnpicklingError, EOFError, ValueError) as error:
        raise TapeloopError(
            stage="data", problem=f"{path} is not a readable CIFAR batch", expected="a Python pickle of "
            "b'data' (N x 3072 uint8) and b'labels'", found=f"{type(error).__name__}: {error}",
            fix=f"replace {path} with an intact copy (delete it to let tapeloop download the dataset)") from None


def _read_cifar(spec: DatasetSpec, location: Path) -> dict[str, Arrays]:
    """CIFAR's pickled batches -> uint8 [N, 32, 32, 3] images (stored channels-first) and labels."""
    height, width, channels = spec.image_shape
    splits = {}
    for split, names in spec.files.items():
        batches = [_unpickle_batch(_find_idx_file(location, name)) for name in names]
        images = np.concatenate([np.asarray(batch[b"data"], np.uint8) for batch in batches])
        labels = np.concatenate([np.asarray(batch[b"labels"]) for batch in batches]).astype(np.uint8)
        images = images.reshape(-1, channels, height, width).transpose(0, 2, 3, 1)
        splits[split] = _check_pair(spec, split, images, labels, location)
    return splits


def _read_location(spec: DatasetSpec, location: Path) -> dict[str, Arrays]:
    if spec.format == "cifar_pickle":
        return _read_cifar(spec, location)
    if location.suffix == ".npz":
        with np.load(location) as arrays:
            return {split: _check_pair(spec, split, arrays[f"x_{split}"], arrays[f"y_{split}"], location)
                    for split in spec.files}
    return {split: _check_pair(spec, split, read_idx(_find_idx_file(location, images_name)),
                               read_idx(_find_idx_file(location, labels_name)), location)
            for split, (images_name, labels_name) in spec.files.items()}


def user_cache_dir() -> Path:
    """Where tapeloop stores verified downloads (`$XDG_CACHE_HOME/tapeloop`)."""
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "tapeloop"


def search_locations(spec: DatasetSpec) -> list[tuple[str, Path | None]]:
    """The places looked in after `--data_dir`, in order, each with a label for messages."""
    data_root = os.environ.get("TAPELOOP_DATA_DIR")
    keras_home = Path(os.environ.get("KERAS_HOME") or Path.home() / ".keras")
    return [
        ("$TAPELOOP_DATA_DIR", Path(data_root) / spec.name if data_root else None),
        ("Keras cache", keras_home / "datasets" / spec.keras_cache_entry if spec.keras_cache_entry else None),
        ("system datasets", SYSTEM_DATASETS_ROOT / spec.system_folder if spec.system_folder else None),
        ("tapeloop download cache", user_cache_dir() / spec.name),
    ]


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as stream:
        for chunk in iter(lambda: stream.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _download_verified(url: str, target: Path, sha256: str) -> None:
    """Downloads `url` to `target` atomically; `target` appears only if the digest matches."""
    with tempfile.NamedTemporaryFile(dir=target.parent, prefix=f".{target.name}.", delete=False) as partial:
        partial_path = Path(partial.name)
        try:
            with urllib.request.urlopen(url, timeout=DOWNLOAD_TIMEOUT_SECONDS) as response:
                for chunk in iter(lambda: response.read(1 << 20), b""):
                    partial.write(chunk)
            partial.close()
            found = _sha256(partial_path)
            if found != sha256:
                raise ValueError(f"sha256 {found}, expected {sha256}")
            os.replace(partial_path, target)
        finally:
            partial_path.unlink(missing_ok=True)


def download_dataset(spec: DatasetSpec, target_dir: Path) -> None:
    """Fetches every missing file of `spec` into `target_dir`, trying each mirror in turn
    (the archive that holds them, unpacked, if the catalog names one)."""
    target_dir.mkdir(parents=True, exist_ok=True)
    missing = _missing_files(spec, target_dir)
    if spec.archive and missing:
        _download_from_mirrors(spec, spec.archive, target_dir)
        _unpack(target_dir / spec.archive, missing, target_dir)
        return
    for filename in missing:
        _download_from_mirrors(spec, filename, target_dir)


def _unpack(archive: Path, names: list[str], target_dir: Path) -> None:
    """Extracts the members called `names` (wherever they sit in the archive) into `target_dir`."""
    with tarfile.open(archive) as packed:
        for member in packed.getmembers():
            if member.isfile() and os.path.basename(member.name) in names:
                with packed.extractfile(member) as source:
                    partial = target_dir / f".{os.path.basename(member.name)}.partial"
                    partial.write_bytes(source.read())
                    os.replace(partial, target_dir / os.path.basename(member.name))
    archive.unlink()


def _download_from_mirrors(spec: DatasetSpec, filename: str, target_dir: Path) -> None:
    failures = []
    for mirror in spec.mirrors:
        url = mirror + filename
        try:
            _download_verified(url, target_dir / filename, spec.sha256[filename])
            return
        except (OSError, ValueError, urllib.error.URLError) as error:
            failures.append(f"{url} ({error})")
    raise TapeloopError(
        stage="data", problem=f"could not download {filename} for {spec.name}",
        expected=f"a file with sha256 {spec.sha256[filename]} from one of the mirrors",
        found="; ".join(failures) or "no mirrors in the catalog",
        fix=_offline_fix(spec))


def _offline_fix(spec: DatasetSpec) -> str:
    package = (f"`sudo apt-get install {spec.debian_package}` (Debian/Ubuntu), or "
               if spec.debian_package else "")
    return (f"install the files: {package}copy {_file_list(spec)} into a folder and pass "
            f"--data_dir=FOLDER, or set $TAPELOOP_DATA_DIR so that $TAPELOOP_DATA_DIR/{spec.name} "
            "holds them")


def _file_list(spec: DatasetSpec) -> str:
    return ", ".join(name for names in spec.files.values() for name in names)


def synthetic_splits(spec: DatasetSpec, seed: int = 0) -> dict[str, Arrays]:
    """A learnable stand-in for MNIST: each class is a fixed blocky pattern plus noise."""
    rng = np.random.default_rng(seed)
    height, width, channels = spec.image_shape
    blocks = rng.random((spec.num_classes, height // 4, width // 4, channels)) > 0.5
    templates = np.kron(blocks, np.ones((1, 4, 4, 1))) * 180.0
    splits = {}
    for split, size in SYNTHETIC_SIZES.items():
        labels = rng.integers(0, spec.num_classes, size).astype(np.uint8)
        noise = rng.uniform(0.0, 75.0, (size, height, width, channels))
        images = (templates[labels] + noise).astype(np.uint8).reshape(size, *spec.stored_shape)
        splits[split] = (images, labels)
    return splits


def load_dataset(spec: DatasetSpec, data_dir: str | None = None, download: bool = True) -> dict[str, Arrays]:
    """Returns {"train": (images, labels), "test": (images, labels)} as stored (uint8 images).

    An explicit `data_dir` is the only place looked in: a wrong one is an error,
    never a silent fallback to another copy.
    """
    if spec.format == "synthetic":
        return synthetic_splits(spec)
    if data_dir:
        location = Path(data_dir).expanduser()
        missing = _missing_files(spec, location)
        if missing:
            found = (f"{location} does not exist" if not location.exists() else
                     f"{location} lacks {', '.join(missing)}; it holds "
                     f"{', '.join(sorted(p.name for p in location.iterdir())[:10]) or 'nothing'}")
            raise TapeloopError(
                stage="data", problem=f"--data_dir={data_dir} does not hold the {spec.name} files",
                expected=f"the files {_file_list(spec)}" + (
                    " (gzip-compressed or not)" if spec.format == "idx" else ""), found=found,
                fix="point --data_dir at the folder that holds these files, or drop --data_dir to "
                "let tapeloop find or download them")
        return _read_location(spec, location)
    tried = []
    for label, location in search_locations(spec):
        if location is None:
            tried.append(f"{label} (not set)")
        elif _missing_files(spec, location):
            tried.append(f"{label} {location} (missing)")
        else:
            return _read_location(spec, location)
    cache = user_cache_dir() / spec.name
    if download:
        try:
            download_dataset(spec, cache)
        except TapeloopError as error:
            tried.append(f"download: {error.found}")
        else:
            return _read_location(spec, cache)
    raise TapeloopError(
        stage="data",
        problem=f"the {spec.name} files are not on this machine and "
        + ("could not be downloaded" if download else "downloads are off (--nodownload)"),
        expected=f"its files ({_file_list(spec)}) in one of the places looked in",
        found=f"--data_dir (not set), {', '.join(tried)}",
        fix=_offline_fix(spec) + ("" if download else "; or allow the download with --download"))


def load_sample_weights(path: str, num_examples: int) -> np.ndarray:
    """Reads --sample_weights: a .npy vector of one finite weight >= 0 per training example."""
    def refuse(found: str) -> TapeloopError:
        return TapeloopError(
            stage="data", problem=f"--sample_weights={path} cannot weight this training split",
            expected=f"a .npy file holding a 1-D array of {num_examples} finite numbers >= 0 "
                     "(one per example of the training split, in stored order)",
            found=found, fix="write the weights with numpy.save, in the order the dataset stores the examples")

    try:
        weights = np.load(path, allow_pickle=False)
    except (OSError, ValueError) as error:
        raise refuse(f"{type(error).__name__}: {error}") from None
    if weights.ndim != 1 or len(weights) != num_examples:
        raise refuse(f"an array of shape {weights.shape}")
    if not np.issubdtype(weights.dtype, np.number):
        raise refuse(f"an array of dtype {weights.dtype}")
    non_finite, negative = np.count_nonzero(~np.isfinite(weights)), np.count_nonzero(weights < 0)
    if non_finite or negative:
        raise refuse(f"{non_finite} NaN or infinite and {negative} negative weights")
    return weights.astype(np.float64)


def load(config: TrainConfig, data_dir: str | None = None) -> tuple[DatasetSpec, dict[str, Arrays]]:
    """The --dataset's spec and its {"train", "test"} splits as stored (`data_dir` overrides the config's).

    Catalog datasets have a fixed spec; an image folder's or npz file's comes from its contents.
    """
    data_dir = data_dir or config.data_dir
    if config.dataset in ("image_folder", "npz"):
        if not data_dir:
            raise TapeloopError(
                stage="data", problem=f"--dataset={config.dataset} reads your own files",
                expected="--data_dir naming the folder that holds them", found="no --data_dir",
                fix="pass --data_dir=FOLDER (README, Your own data)")
        if config.dataset == "image_folder":
            return image_folder.load(Path(data_dir).expanduser(), config, user_cache_dir() / "image_folder")
        return load_npz(Path(data_dir).expanduser(), config)
    spec = get_spec(config.dataset)
    return spec, load_dataset(spec, data_dir, config.download)


NPZ_KEYS = ("x_train", "y_train", "x_test", "y_test")


def load_npz(folder: Path, config: TrainConfig) -> tuple[DatasetSpec, dict[str, Arrays]]:
    """Keras-style arrays (x_train, y_train, x_test, y_test, optional class_names) from the one
    .npz file in `folder`. Labels are class ids, or one-hot rows under --label_format=one_hot."""
    candidates = sorted(folder.glob("*.npz")) if folder.is_dir() else []
    if len(candidates) != 1:
        raise TapeloopError(
            stage="data", problem=f"--data_dir={folder} does not hold exactly one .npz file",
            expected="one .npz file with the arrays x_train, y_train, x_test, y_test",
            found=", ".join(path.name for path in candidates) or
            ("no .npz file" if folder.is_dir() else "no such folder"),
            fix="point --data_dir at a folder with one .npz file (numpy.savez(path, x_train=..., ...))")
    path = candidates[0]
    with np.load(path, allow_pickle=False) as arrays:
        absent = [key for key in NPZ_KEYS if key not in arrays.files]
        if absent:
            raise TapeloopError(
                stage="data", problem=f"{path} lacks {', '.join(absent)}",
                expected=f"the arrays {', '.join(NPZ_KEYS)} (as keras.datasets return them)",
                found=f"arrays {', '.join(arrays.files) or 'none'}", fix="save all four arrays under these names")
        stored = {key: arrays[key] for key in arrays.files}
    splits = {split: (stored[f"x_{split}"], _npz_labels(stored[f"y_{split}"], split, path, config.label_format))
              for split in ("train", "test")}
    num_classes = int(max(labels.max(initial=0) for _, labels in splits.values())) + 1
    if stored["y_train"].ndim == 2:
        num_classes = stored["y_train"].shape[1]
    class_names = (tuple(str(name) for name in stored["class_names"]) if "class_names" in stored
                   else tuple(str(index) for index in range(num_classes)))
    images = splits["train"][0]
    if images.ndim not in (3, 4) or splits["test"][0].shape[1:] != images.shape[1:]:
        raise TapeloopError(
            stage="data", problem=f"the images in {path} have unusable shapes",
            expected="x_train and x_test of one shape [N, H, W] or [N, H, W, C]",
            found=f"x_train {list(images.shape)}, x_test {list(splits['test'][0].shape)}",
            fix="reshape flattened rows to [N, H, W] and resize both splits to one size")
    spec = user_spec("npz", unit_scaled(images, config.input_range), class_names)
    return spec, {split: _check_pair(spec, split, *arrays, path) for split, arrays in splits.items()}


def _npz_labels(labels: np.ndarray, split: str, path: Path, label_format: str) -> np.ndarray:
    """y_<split> -> class ids; one-hot rows are accepted only under --label_format=one_hot."""
    if labels.ndim == 2 and label_format == "sparse":
        raise TapeloopError(
            stage="data", problem=f"y_{split} in {path} holds one-hot rows, and --label_format=sparse "
            "expects class ids", expected="integer class ids of shape [N]",
            found=f"an array of shape {list(labels.shape)}",
            fix="pass --label_format=one_hot, or store the class ids (labels.argmax(axis=1))")
    if labels.ndim == 2:
        if not (np.isin(labels, (0, 1)).all() and (labels.sum(axis=1) == 1).all()):
            raise TapeloopError(
                stage="data", problem=f"y_{split} in {path} is not one-hot", expected="rows of 0s with one 1",
                found=f"values {np.unique(labels)[:10].tolist()} and row sums {np.unique(labels.sum(axis=1))[:5].tolist()}",
                fix="store one-hot rows (or class ids with --label_format=sparse)")
        return labels.argmax(axis=1).astype(np.int32)
    if not np.issubdtype(labels.dtype, np.integer) or labels.min(initial=0) < 0:
        raise TapeloopError(
            stage="data", problem=f"y_{split} in {path} is not class ids", expected="integers >= 0",
            found=f"dtype {labels.dtype}, values from {labels.min(initial=0)} to {labels.max(initial=0)}",
            fix="store the labels as integer class ids 0..k-1")
    return labels.astype(np.int32)
