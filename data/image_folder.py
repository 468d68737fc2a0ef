"""Image folders (--dataset=image_folder): one sub-folder per class, or train/ and test/ each
with class sub-folders; JPEG, PNG, BMP and GIF (first frame), decoded with tf.io.

Every image is decoded once, converted to --channels and resized to --image_size
(keeping its aspect ratio by padding or by cropping, --image_resize). The decoded
arrays are cached on disk, keyed by the folder and those flags and by the files' names,
sizes and modification times, so reruns, resumes and evaluate.py do not decode again;
decoding a changed folder replaces its stale entry, so the cache holds one entry per
folder and settings.
"""

import contextlib
import glob
import hashlib
import os
import zipfile
from pathlib import Path

import numpy as np
import tensorflow as tf
from absl import logging

from data.catalog import DatasetSpec, user_spec
from data.files import unreadable_reason
from data.pixels import unit_scaled
from settings.config import TrainConfig
from settings.errors import TapeloopError, TapeloopWarning

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".gif")
SPLIT_SEED = 0  # Fixed, so the held-out test split of a folder without train/ and test/ never changes.
BAD_FILES_LISTED = 10


class UnresizableImage(ValueError):
    """An image that decodes but cannot be brought to the size asked for."""


def read_image(path: str | os.PathLike, size: tuple[int, int], channels: int, resize: str) -> np.ndarray:
    """One image file -> uint8 [H, W, channels] at `size` (decoded_image, then resized_image).
    Raises tf.errors.OpError for a file it cannot read or decode, UnresizableImage for one too
    thin to pad to `size`."""
    # Bytes, not str: a file name that is not valid UTF-8 still opens.
    image = decoded_image(tf.io.read_file(os.fsencode(path)), channels)
    problem = resize_problem(image.shape[0], image.shape[1], size, resize)
    if problem:
        raise UnresizableImage(problem)
    return resized_image(image, size, resize).numpy()


def probe_image(path: str | os.PathLike) -> tuple[tf.Tensor | None, tuple[int, ...] | None, str | None]:
    """(encoded bytes, decoded shape [h, w, c], None) of a file that decodes, else (None, None, why not)."""
    reason = unreadable_reason(path)
    if reason:
        return None, None, reason
    try:
        encoded = tf.io.read_file(os.fsencode(path))
        return encoded, tuple(tf.io.decode_image(encoded, channels=0, expand_animations=False).shape), None
    except tf.errors.OpError as error:
        return None, None, decode_failure(error)


def decode_failure(error: tf.errors.OpError) -> str:
    """Why TensorFlow could not read or decode a file, without the op and device prefix."""
    return error.message.split("}} ")[-1].splitlines()[0][:120]


def decoded_image(encoded: tf.Tensor, channels: int) -> tf.Tensor:
    """Encoded JPEG, PNG, BMP or GIF (first frame) -> uint8 [h, w, channels]: the alpha channel
    dropped, grayscale and RGB converted as needed. Runs eagerly or inside tf.data."""
    image = tf.io.decode_image(encoded, channels=0, expand_animations=False)
    present = tf.shape(image)[-1]
    image = image[..., :present - (1 - present % 2)]  # 2 or 4 channels: drop the alpha.
    if channels == 3:
        image = tf.cond(tf.shape(image)[-1] == 1, lambda: tf.tile(image, [1, 1, 3]), lambda: image)
    else:
        image = tf.cond(tf.shape(image)[-1] == 3, lambda: tf.image.rgb_to_grayscale(image), lambda: image)
    return tf.ensure_shape(image, [None, None, channels])


def too_thin(heights, widths, size: tuple[int, int], resize: str) -> np.ndarray:
    """Where images of these heights and widths cannot be brought to `size`: padded, a side would be
    under one pixel (the one rule, for a file in memory and for every example of a shard index)."""
    heights, widths = np.asarray(heights, np.float64), np.asarray(widths, np.float64)
    if resize != "pad":
        return np.zeros(heights.shape, bool)
    scale = np.minimum(size[0] / heights, size[1] / widths)
    return np.minimum(np.round(heights * scale), np.round(widths * scale)) < 1


def resize_problem(height: int, width: int, size: tuple[int, int], resize: str) -> str | None:
    """Why an image of height x width cannot be brought to `size` (a side padded to under one pixel), or None."""
    if too_thin([height], [width], size, resize)[0]:
        return (f"decodes as {height}x{width}: padded to {size[0]}x{size[1]}, a side would be under one pixel; "
                "--image_resize=crop keeps its middle")
    return None


def resized_image(image: tf.Tensor, size: tuple[int, int], resize: str) -> tf.Tensor:
    """uint8 [h, w, C] -> uint8 [H, W, C] at `size`, keeping the aspect ratio: padded with black
    (`pad`) or centre-cropped (`crop`); an image already at `size` is returned as it is."""
    height, width = size
    shape = tf.cast(tf.shape(image)[:2], tf.float32)

    def resampled():
        if resize == "pad":
            return tf.image.resize_with_pad(image, height, width, antialias=True)
        scale = tf.maximum(height / shape[0], width / shape[1])
        covering = tf.maximum([height, width], tf.cast(tf.round(shape * scale), tf.int32))
        return tf.image.resize_with_crop_or_pad(tf.image.resize(image, covering, antialias=True), height, width)

    same = tf.reduce_all(tf.equal(tf.shape(image)[:2], [height, width]))
    result = tf.cond(same, lambda: image, lambda: tf.cast(tf.clip_by_value(tf.round(resampled()), 0, 255), tf.uint8))
    return tf.ensure_shape(result, [height, width, image.shape[-1]])


def load(root: Path, config: TrainConfig, cache_dir: Path) -> tuple[DatasetSpec, dict[str, tuple[np.ndarray, np.ndarray]]]:
    """The folder's spec (classes from sub-folder names) and its train and test splits as uint8
    arrays ([N, H, W] for one channel); decoded arrays are cached in `cache_dir`."""
    class_names, splits = _read_or_decode(root, config, cache_dir)
    stored = {split: (images[..., 0] if config.channels == 1 else images, labels)
              for split, (images, labels, _) in splits.items()}
    spec = user_spec("image_folder", unit_scaled(splits["train"][0]), class_names)
    return spec, stored


def stored_paths(root: Path, config: TrainConfig, cache_dir: Path) -> dict[str, list[str]]:
    """The file each stored example was decoded from, per split, in the order load() returns them:
    read from the cache entry's path arrays alone (not its images) when it is there."""
    _, files, _, cache = listing(root, config, cache_dir)
    cached = _read_cache(cache, files, kinds=("p",))
    if cached is None:  # No usable entry: decoded (and cached) as load() does.
        return {split: paths.tolist() for split, (_, _, paths) in _read_or_decode(root, config, cache_dir)[1].items()}
    return {split: paths.tolist() for split, (paths,) in cached.items()}


def listing(root: Path, config: TrainConfig, cache_dir: Path):
    """(class names, {split: [(path, class id)]}, the key of the decoding settings, and the cache
    entry of these files at these settings)."""
    class_names, files = split_files(root, config.test_split)
    settings_key = _settings_key(root, image_size(config), config)
    return class_names, files, settings_key, cache_dir / f"{settings_key}-{_files_key(files)}.npz"


def split_files(root: Path, test_split: float) -> tuple[tuple[str, ...], dict[str, list[tuple[Path, int]]]]:
    """(class names, {"train", "test": [(path, class id)]}) of an image folder: its train/ and test/,
    or its class folders with `test_split` of the files held out (fixed by SPLIT_SEED)."""
    if (root / "train").is_dir() and (root / "test").is_dir():
        class_names = _class_names(root / "train", root / "test")  # A class in only one split is still a class.
        return class_names, {split: _list_files(root / split, class_names) for split in ("train", "test")}
    class_names = _class_names(root)
    return class_names, _hold_out_test(_list_files(root, class_names), test_split)


def _read_or_decode(root: Path, config: TrainConfig, cache_dir: Path):
    """(class names, {split: (images [N, H, W, C], labels, file paths)}) from the cache, else decoded and cached."""
    size = image_size(config)
    class_names, files, settings_key, cache = listing(root, config, cache_dir)
    splits = _read_cache(cache, files)
    if splits is None:
        decoded = {split: _decode_all(entries, size, config) for split, entries in files.items()}
        report_unreadable([path for *_, bad in decoded.values() for path in bad],
                           sum(map(len, files.values())), config.skip_bad_images)
        splits = {split: (images, labels, paths) for split, (images, labels, paths, _) in decoded.items()}
        _write_cache(cache, splits, replaces=f"{glob.escape(settings_key)}-*.npz")
    for split, (images, _, _) in splits.items():
        if len(images) == 0:
            raise TapeloopError(
                stage="data", problem=f"the image folder {root} has no readable {split} images",
                expected="image files (JPEG, PNG, BMP, GIF) in the class sub-folders",
                found=f"{len(files[split])} files, none readable", fix="check the folder and its files")
    return class_names, splits


def image_size(config: TrainConfig) -> tuple[int, int]:
    if len(config.image_size) not in (1, 2):
        raise TapeloopError(
            stage="data", problem="--dataset=image_folder needs the size to bring every image to",
            expected="--image_size=S (square) or --image_size=H,W", found=f"--image_size={config.image_size}",
            fix="pass e.g. --image_size=32 (images keep their aspect: --image_resize=pad or crop)")
    return (config.image_size[0], config.image_size[-1])


def _class_names(*folders: Path) -> tuple[str, ...]:
    """The sorted names of the sub-folders of `folders` (at least two classes)."""
    names = sorted({entry.name for folder in folders if folder.is_dir()
                    for entry in folder.iterdir() if entry.is_dir()})
    if len(names) < 2:
        folder = folders[0].parent if len(folders) > 1 else folders[0]
        raise TapeloopError(
            stage="data", problem=f"{folder} does not look like an image folder",
            expected="one sub-folder per class (at least two), or train/ and test/ each with them",
            found=f"sub-folders: {', '.join(names) or 'none'}" if folder.is_dir() else
            unreadable_reason(folder) or "a file, not a folder",
            fix="arrange the images as FOLDER/<class>/<image> and pass --data_dir=FOLDER")
    return tuple(names)


def _list_files(folder: Path, class_names: tuple[str, ...]) -> list[tuple[Path, int]]:
    """(path, class id) of every image file under folder/<class>/, in sorted order.

    Links to folders inside a class folder are not followed (a link loop would never end);
    files are listed whatever they are, and read_images reports those that are not regular files.
    """
    return [(path, class_id) for class_id, name in enumerate(class_names) if (folder / name).is_dir()
            for path in sorted(Path(parent, file) for parent, _, files in os.walk(folder / name)
                               for file in files) if path.suffix.lower() in IMAGE_SUFFIXES]


def _hold_out_test(entries: list[tuple[Path, int]], fraction: float) -> dict[str, list[tuple[Path, int]]]:
    """A folder without train/ and test/: `fraction` of its files, fixed by SPLIT_SEED, become the test split."""
    order = np.random.default_rng(SPLIT_SEED).permutation(len(entries))
    count = max(1, int(round(len(entries) * fraction)))
    return {"train": [entries[index] for index in sorted(order[count:])],
            "test": [entries[index] for index in sorted(order[:count])]}


def read_images(paths: list, size: tuple[int, int], channels: int, resize: str):
    """Decodes each file with read_image: (uint8 [N, H, W, channels] of the readable ones, their
    indices in `paths`, "path (reason)" for each file that would not decode)."""
    images, readable, bad = [], [], []
    for index, path in enumerate(paths):
        reason = unreadable_reason(path)
        if reason:
            bad.append(f"{path} ({reason})")
            continue
        try:
            images.append(read_image(path, size, channels, resize))
            readable.append(index)
        except tf.errors.OpError as error:
            reason = decode_failure(error)
            bad.append(f"{path} ({reason})")
        except UnresizableImage as error:
            bad.append(f"{path} ({error})")
    return (np.stack(images) if images else np.zeros((0, *size, channels), np.uint8)), readable, bad


def _decode_all(entries: list[tuple[Path, int]], size: tuple[int, int], config: TrainConfig):
    """Decodes every file: (images, labels, paths of the decoded files, "path (reason)" of each
    file that would not decode)."""
    images, readable, bad = read_images([path for path, _ in entries], size, config.channels, config.image_resize)
    return (images, np.asarray([entries[index][1] for index in readable], np.int32),
            np.array([os.fsdecode(entries[index][0]) for index in readable], dtype=str), bad)


def report_unreadable(bad: list[str], total: int, skip: bool) -> None:
    """Fails the run naming the unreadable files, or (--skip_bad_images) lists them in a warning."""
    if not bad:
        return
    listed = "; ".join(bad[:BAD_FILES_LISTED]) + (f"; and {len(bad) - BAD_FILES_LISTED} more"
                                                  if len(bad) > BAD_FILES_LISTED else "")
    if not skip:
        raise TapeloopError(
            stage="data", problem=f"{len(bad)} of {total} image files cannot be read or brought to the size",
            expected="JPEG, PNG, BMP or GIF files that decode", found=listed,
            fix="repair or remove those files, or pass --skip_bad_images to train without them")
    logging.warning(TapeloopWarning(
        stage="data", problem=f"skipping {len(bad)} of {total} image files that cannot be read or brought to the size",
        expected="JPEG, PNG, BMP or GIF files that decode", found=listed,
        fix="repair or remove those files (--skip_bad_images is on)").paragraph())


def _settings_key(root: Path, size: tuple[int, int], config: TrainConfig) -> str:
    """Names one folder decoded at these settings: the part of a cache entry's name its stale versions share."""
    settings = (str(root.resolve()), size, config.channels, config.image_resize, config.skip_bad_images)
    return f"{root.name}-{hashlib.sha256(repr(settings).encode()).hexdigest()[:12]}"


def _files_key(files: dict) -> str:
    """Names exactly these files (paths, splits, classes, sizes, modification times)."""
    key = hashlib.sha256()
    for split, entries in files.items():
        for path, class_id in entries:
            status = path.lstat() if unreadable_reason(path) else path.stat()
            key.update(os.fsencode(f"{split}\0{os.path.abspath(path)}\0{class_id}\0{status.st_size}\0"
                                   f"{status.st_mtime_ns}\n"))
    return key.hexdigest()[:24]


def _read_cache(path: Path, files: dict, kinds: tuple[str, ...] = ("x", "y", "p")):
    """The cached splits as (images, labels, paths), or the arrays of `kinds` alone (an npz file reads
    only the arrays asked for); None when there is no usable entry (a damaged one is decoded again)."""
    if unreadable_reason(path):
        return None
    try:
        with np.load(path, allow_pickle=False) as cached:
            return {split: tuple(cached[f"{kind}_{split}"] for kind in kinds) for split in files}
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as error:
        logging.warning("Decoding the images again: the cache entry %s is unreadable or from an older tapeloop "
                        "(%s).", path, error)
        return None


def _write_cache(path: Path, splits: dict, replaces: str) -> None:
    """Writes the entry atomically, then deletes the other entries matching `replaces`: older
    versions of the same folder at the same settings. A cache that cannot be written is a warning."""
    partial = path.with_name(f".{path.name}.partial.npz")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        np.savez(partial, **{f"{kind}_{split}": array for split, (images, labels, paths) in splits.items()
                             for kind, array in (("x", images), ("y", labels), ("p", paths))})
        os.replace(partial, path)
        for stale in path.parent.glob(replaces):
            if stale != path:
                stale.unlink(missing_ok=True)
    except OSError as error:
        with contextlib.suppress(OSError):
            partial.unlink(missing_ok=True)
        logging.warning(TapeloopWarning(
            stage="data", problem=f"the decoded images cannot be cached in {path.parent}",
            expected="a writable cache folder", found=f"{type(error).__name__}: {error.strerror or error}",
            fix="nothing for this run (it trains from the decoded images); to decode only once, make "
                "$XDG_CACHE_HOME/tapeloop writable or point XDG_CACHE_HOME elsewhere").paragraph())
