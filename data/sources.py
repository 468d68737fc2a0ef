"""Readers (IDX, CIFAR's pickled batches, Keras-style npz, synthetic) and the search for a
catalog dataset's files.

Files are looked for in order: `--data_dir`, `$TAPELOOP_DATA_DIR/<name>`, Keras'
cache, `/usr/share/datasets/<folder>` (Debian's dataset packages), tapeloop's
download cache; then, if allowed, downloaded with checksum verification.
Image folders have their own module, data/image_folder.py.
"""

import gzip
import hashlib
import math
import os
import pickle
import struct
import tarfile
import tempfile
import urllib.error
import urllib.request
import zipfile
import zlib
from pathlib import Path

import numpy as np

from data import image_folder, streaming
from data.files import read_at_most, refuse_oversized, unreadable_reason
from data.catalog import DatasetSpec, get_spec, user_spec
from data.pixels import unit_scaled
from settings.choices import USER_DATASETS
from settings.config import TrainConfig
from settings import errors
from settings.errors import TapeloopError

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


def _open_maybe_gzip(raw):
    """`raw` itself, or a gunzipping reader over it when it starts with the gzip magic bytes."""
    magic = raw.read(2)
    raw.seek(0)
    return gzip.GzipFile(fileobj=raw) if magic == b"\x1f\x8b" else raw


def _read_idx_header(stream, path: Path) -> tuple[tuple[int, ...], np.dtype]:
    """The shape and dtype an IDX header promises."""
    header = read_at_most(stream, 4)
    if len(header) < 4 or header[0] != 0 or header[1] != 0 or header[2] not in IDX_DTYPES:
        raise _bad_file(path, "wrong magic number", "0x0000 then a type code in "
                        f"{sorted(hex(code) for code in IDX_DTYPES)} and a rank",
                        f"header bytes {header.hex() or 'none (empty file)'}")
    rank = header[3]
    dimensions = read_at_most(stream, 4 * rank)
    if len(dimensions) < 4 * rank:
        raise _bad_file(path, "the header is truncated", f"{4 + 4 * rank} header bytes",
                        f"{len(header) + len(dimensions)} bytes in the whole file")
    return struct.unpack(f">{rank}I", dimensions), np.dtype(IDX_DTYPES[header[2]])


def read_idx(path: str | os.PathLike) -> np.ndarray:
    """Reads an IDX file (gzip-compressed or plain) into a native-endian array.

    Reads no further than the header promises, so a gzip bomb stops there, and refuses
    a promise larger than files.allocation_limit_bytes before allocating it.
    """
    path = Path(path)
    try:
        with path.open("rb") as raw:
            stream = _open_maybe_gzip(raw)
            shape, dtype = _read_idx_header(stream, path)
            expected_size = math.prod(shape) * dtype.itemsize
            refuse_oversized(path, expected_size, f"shape {list(shape)}")
            data = read_at_most(stream, expected_size + 1)
    except (OSError, EOFError, zlib.error) as error:
        raise _bad_file(path, "the gzip stream is corrupt or truncated",
                        "a complete gzip stream", errors.described(error)) from None
    if len(data) != expected_size:
        problem = "the data is truncated" if len(data) < expected_size else "it has trailing bytes"
        found = f"{len(data)} bytes" if len(data) < expected_size else "more bytes than that"
        raise _bad_file(path, problem, f"{expected_size} data bytes for shape {shape}", found)
    return np.frombuffer(data, dtype).reshape(shape).astype(dtype.newbyteorder("="))


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
    if len(images) == 0:
        raise TapeloopError(
            stage="data", problem=f"the {split} split in {where} is empty", expected="at least one image",
            found=f"images of shape {list(images.shape)}", fix="check that the files are complete copies")
    if labels.ndim != 1 or len(labels) != len(images):
        raise TapeloopError(
            stage="data", problem=f"the {split} labels in {where} do not match the images",
            expected=f"one label per image: shape [{len(images)}]",
            found=f"labels of shape {list(labels.shape)}",
            fix="the image and label files come from different datasets or one is damaged: "
            "replace them with a matching pair")
    return images, labels


class _BatchUnpickler(pickle.Unpickler):
    """Unpickles only what a CIFAR batch holds: builtin containers, bytes, numbers and NumPy
    arrays. Any other global (os.system, eval, a class with side effects) is refused, so a
    crafted file cannot run code."""

    ALLOWED = {("numpy", "ndarray"), ("numpy", "dtype"), ("numpy.core.multiarray", "_reconstruct"),
               ("numpy._core.multiarray", "_reconstruct"),
               ("_codecs", "encode")}  # How Python 3's protocol 2 stores bytes: str -> bytes, nothing more.

    def find_class(self, module, name):
        if (module, name) in self.ALLOWED:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"refused to load {module}.{name}: a CIFAR batch holds only arrays")


def _unpickle_batch(path: Path) -> dict:
    """One of CIFAR's pickled batches, through the restricted unpickler; checked to hold its arrays."""
    def refuse(found: str) -> TapeloopError:
        return TapeloopError(
            stage="data", problem=f"{path} is not a readable CIFAR batch", expected="a Python pickle of "
            "a dict with b'data' (N x 3072 uint8) and b'labels', and nothing else that needs code to load",
            found=found, fix=f"replace {path} with an intact copy (delete it to let tapeloop download the "
            "dataset); never load a pickle from a source you do not trust")

    try:
        with path.open("rb") as stream:
            batch = _BatchUnpickler(stream, encoding="bytes").load()
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError, IndexError) as error:
        raise refuse(errors.described(error)) from None
    if not _is_cifar_batch(batch):
        raise refuse(f"a {type(batch).__name__} with keys {list(batch)[:6] if isinstance(batch, dict) else []}, "
                     "not uint8 b'data' rows of 3072 pixels and one integer label per row")
    return batch


def _is_cifar_batch(batch) -> bool:
    """Whether an unpickled object has CIFAR's layout: uint8 rows of 3072 pixels, one integer label each."""
    if not isinstance(batch, dict):
        return False
    data, labels = batch.get(b"data"), batch.get(b"labels")
    return (isinstance(data, np.ndarray) and data.dtype == np.uint8 and data.ndim == 2 and data.shape[1] == 3072
            and isinstance(labels, (list, np.ndarray)) and len(labels) == len(data)
            and np.asarray(labels).dtype.kind in "iu")


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
        arrays = read_npz(location, required=NPZ_KEYS)
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

    reason = unreadable_reason(path)
    if reason:
        raise refuse(reason)
    try:
        weights = np.load(path, allow_pickle=False)
    except (OSError, ValueError) as error:
        raise refuse(errors.described(error)) from None
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
    if config.dataset in USER_DATASETS:
        if not data_dir:
            raise TapeloopError(
                stage="data", problem=f"--dataset={config.dataset} reads your own files",
                expected="--data_dir naming the folder that holds them", found="no --data_dir",
                fix="pass --data_dir=FOLDER (docs/data.md, Your own data)")
        if config.dataset == "image_folder":
            root = Path(data_dir).expanduser()
            if streaming.folder_exceeds_memory(root, config):
                return streaming.load_image_folder(root, config, user_cache_dir() / "image_folder")
            return image_folder.load(root, config, user_cache_dir() / "image_folder")
        if config.dataset == "tfrecord":
            return streaming.load(Path(data_dir).expanduser(), config, user_cache_dir() / "shards")
        return load_npz(Path(data_dir).expanduser(), config)
    spec = get_spec(config.dataset)
    return spec, load_dataset(spec, data_dir, config.download)


def dataset_spec(config: TrainConfig) -> DatasetSpec:
    """The --dataset's spec: a catalog dataset's without reading its files, a user's from its files."""
    return load(config)[0] if config.dataset in USER_DATASETS else get_spec(config.dataset)


def stored_paths(config: TrainConfig, data_dir: str | None = None) -> dict[str, list[str]] | None:
    """For an image folder, the file of each stored example per split (load()'s order); None for
    datasets that are arrays (catalog datasets, npz files), whose indices are the reference."""
    if config.dataset != "image_folder":
        return None
    root, cache_dir = Path(data_dir or config.data_dir).expanduser(), user_cache_dir() / "image_folder"
    if streaming.folder_exceeds_memory(root, config):
        return {split: images.paths[images.positions].tolist()
                for split, (images, _) in streaming.folder_splits(root, config, cache_dir)[1].items()}
    return image_folder.stored_paths(root, config, cache_dir)


NPZ_KEYS = ("x_train", "y_train", "x_test", "y_test")
MAX_CLASSES_WITHOUT_NAMES = 10_000


def load_npz(folder: Path, config: TrainConfig) -> tuple[DatasetSpec, dict[str, Arrays]]:
    """Keras-style arrays (x_train, y_train, x_test, y_test, optional class_names) from the one
    .npz file in `folder`. Labels are class ids, or one-hot rows under --label_format=one_hot."""
    path = _the_npz_file(folder)
    stored = read_npz(path, required=NPZ_KEYS)
    splits = {split: (stored[f"x_{split}"], _npz_labels(stored[f"y_{split}"], split, path, config.label_format))
              for split in ("train", "test")}
    class_names = _npz_class_names(stored, splits, path)
    images = splits["train"][0]
    if images.ndim not in (3, 4) or splits["test"][0].shape[1:] != images.shape[1:] or min(
            len(split_images) for split_images, _ in splits.values()) == 0:
        raise TapeloopError(
            stage="data", problem=f"the images in {path} have unusable shapes",
            expected="x_train and x_test of one shape [N, H, W] or [N, H, W, C], neither empty",
            found=f"x_train {list(images.shape)}, x_test {list(splits['test'][0].shape)}",
            fix="reshape flattened rows to [N, H, W], resize both splits to one size, and keep images in both")
    spec = user_spec("npz", unit_scaled(images, config.input_range), class_names)
    return spec, {split: _check_pair(spec, split, *arrays, path) for split, arrays in splits.items()}


def _the_npz_file(folder: Path) -> Path:
    """The one .npz file in `folder`, which must be a regular file."""
    candidates = sorted(folder.glob("*.npz")) if folder.is_dir() else []
    if len(candidates) != 1:
        raise TapeloopError(
            stage="data", problem=f"--data_dir={folder} does not hold exactly one .npz file",
            expected="one .npz file with the arrays x_train, y_train, x_test, y_test",
            found=", ".join(path.name for path in candidates) or
            ("no .npz file" if folder.is_dir() else "no such folder"),
            fix="point --data_dir at a folder with one .npz file (numpy.savez(path, x_train=..., ...))")
    return candidates[0]


def read_npz(path: Path, required: tuple[str, ...]) -> dict[str, np.ndarray]:
    """The arrays of an .npz file, each member's header checked before its data is read: no object
    arrays (loading them would unpickle), no array larger than files.allocation_limit_bytes."""
    def refuse(problem: str, found: str, fix: str) -> TapeloopError:
        return TapeloopError(stage="data", problem=f"{path} {problem}", expected="an .npz file (numpy.savez) of "
                             f"numeric or string arrays named {', '.join(required)}", found=found, fix=fix)

    reason = unreadable_reason(path)
    if reason:
        raise refuse("cannot be read", reason, "point --data_dir at a folder holding the .npz file itself")
    try:
        headers = _npz_headers(path)
        for name, (shape, dtype) in headers.items():
            if dtype.hasobject:
                raise refuse(f"holds an object array ({name})", f"dtype {dtype}", "save plain numeric arrays "
                             "(np.asarray(x, np.uint8)) and strings as a fixed-width str array, never objects")
            refuse_oversized(path, math.prod(shape) * dtype.itemsize, f"{name} of shape {list(shape)}")
        absent = [key for key in required if key not in headers]
        if absent:
            raise refuse(f"lacks {', '.join(absent)}", f"arrays {', '.join(headers) or 'none'}",
                         "save all of them under these names")
        with np.load(path, allow_pickle=False) as arrays:
            return {name: arrays[name] for name in headers}
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as error:
        raise refuse("is not a readable .npz file", errors.described(error),
                     "write it again with numpy.savez or numpy.savez_compressed") from None


def _npz_headers(path: Path) -> dict[str, tuple[tuple[int, ...], np.dtype]]:
    """Array name -> (shape, dtype) from the .npy header of each member, without reading the data."""
    headers = {}
    with zipfile.ZipFile(path) as archive:
        for member in archive.namelist():
            with archive.open(member) as stream:
                version = np.lib.format.read_magic(stream)
                read_header = (np.lib.format.read_array_header_1_0 if version == (1, 0)
                               else np.lib.format.read_array_header_2_0)
                shape, _, dtype = read_header(stream)
            headers[member.removesuffix(".npy")] = (shape, dtype)
    return headers


def _npz_class_names(stored: dict[str, np.ndarray], splits: dict[str, Arrays], path: Path) -> tuple[str, ...]:
    """The stored class_names, or "0".."k-1" for the largest label; a label beyond either is refused."""
    largest = max(int(labels.max(initial=0)) for _, labels in splits.values())
    if stored["y_train"].ndim == 2:
        largest = stored["y_train"].shape[1] - 1
    if "class_names" in stored:
        names = tuple(str(name) for name in np.ravel(stored["class_names"]))
        limit, source = len(names), f"the {len(names)} entries of class_names"
    else:
        names = tuple(str(index) for index in range(min(largest + 1, MAX_CLASSES_WITHOUT_NAMES)))
        limit, source = MAX_CLASSES_WITHOUT_NAMES, f"at most {MAX_CLASSES_WITHOUT_NAMES} classes without class_names"
    if largest >= limit:
        raise TapeloopError(
            stage="data", problem=f"a label in {path} is beyond the classes",
            expected=f"class ids below {limit} ({source})", found=f"the label {largest}",
            fix="store class ids 0..k-1 (a stray value is usually a damaged or mis-encoded label); "
                "for more classes, save their names as class_names")
    return names


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
        values = (f", values from {labels.min(initial=0)} to {labels.max(initial=0)}"
                  if np.issubdtype(labels.dtype, np.number) else f", e.g. {labels.ravel()[:3].tolist()}")
        raise TapeloopError(
            stage="data", problem=f"y_{split} in {path} is not class ids", expected="integers >= 0",
            found=f"dtype {labels.dtype}{values}",
            fix="store the labels as integer class ids 0..k-1 (map names to ids and save the names as class_names)")
    return labels.astype(np.int32)
