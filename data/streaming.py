"""Streamed datasets: images read from disk as training goes, never all in memory: from TFRecord
shards (--dataset=tfrecord, data/shards.py), or from an image folder's own files when decoded it
would exceed --max_memory_gb.

A split is `StreamedImages` (where its images are and the stored indices of its examples,
indexable like an array) beside its labels, which are small and stay in memory, so the validation
split, class weights and steps per epoch are computed as for arrays. A sharded epoch reads the
shards in an order drawn from (seed, epoch), interleaved, through a shuffle buffer seeded the same
way, then decodes and resizes each example in parallel (deterministically ordered) and prepares
each batch exactly as the in-memory pipeline does, with the same seeds: a resumed run skips the
records of the batches already trained (undecoded) and sees exactly the batches an uninterrupted
run would. Files are gathered by index as arrays are (data.pipeline.train_batches).
"""

import abc
import concurrent.futures
import contextlib
import dataclasses
import hashlib
import json
import math
import os
import zipfile
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import tensorflow as tf
from absl import logging

from data import image_folder, shards
from data.catalog import DatasetSpec, user_spec
from data.files import memory_bytes, unreadable_reason
from data.pixels import unit_scaled
from settings.config import TrainConfig
from settings import errors
from settings.errors import TapeloopError

# --max_memory_gb=0: an image folder whose decoded images exceed this share of the memory is streamed. The
# in-memory path holds about five copies of them at its peak (64x64 RGB MNIST: 0.74 GB of images, peak RSS
# 3.7 GB above the same run streamed), so a sixteenth keeps that peak near a third of the memory.
MEMORY_SHARE = 1 / 16
SAMPLE_EXAMPLES = 1024  # Decoded per split for the spec's mean and std and the pre-flight checks.
READ_CYCLE = 4  # Shards read at once in training.
SHUFFLE_BUFFER_BYTES = 128 * 2**20  # --shuffle_buffer=0: as many records as this many encoded bytes hold...
SHUFFLE_BUFFER_RECORDS = 10_000  # ... and at most this many.
SHARD_ORDER_STREAM = 3  # Folded into an epoch's seed for its shard order and shuffle.
SHUFFLE_MEMORY_SHARE = 1 / 4  # Of the memory: the most --shuffle_buffer's records may take.
RECORD_OVERHEAD_BYTES = 256  # Held per buffered record beside its bytes (tensor and string headers).


def without_autotuning() -> tf.data.Options:
    """Pipeline options that keep tf.data's autotuner (and its thread) out of every iterator.

    Destroying an iterator joins the autotuner's thread, which sleeps up to a
    minute between tunings: with a fresh iterator per epoch, training sat idle
    for 37-47 s at some epoch ends (seen with py-spy in TF 2.21). Gathering a
    batch takes microseconds, so a fixed prefetch depth loses nothing.
    """
    options = tf.data.Options()
    options.autotune.enabled = False
    return options


@dataclasses.dataclass(frozen=True)
class Shard:
    path: str
    first: int  # Stored index of its first record.
    examples: int
    bytes: int


@dataclasses.dataclass(frozen=True, eq=False)
class StreamedImages(abc.ABC):
    """A split's images on disk, selected by their stored indices (`positions`, increasing): in TFRecord
    shards (ShardedImages) or in their own files (FileImages).

    Indexed with increasing indices (or a slice) it selects a subset, as an array would; `decoded()`
    reads a small selection into memory.
    """

    positions: np.ndarray
    image_size: tuple[int, int]
    channels: int
    resize: str
    dtype = np.dtype(np.uint8)

    def __len__(self) -> int:
        return len(self.positions)

    @property
    def shape(self) -> tuple[int, ...]:
        """As the stored arrays of an image folder: [N, H, W] for one channel, else [N, H, W, C]."""
        return (len(self), *self.image_size, *(() if self.channels == 1 else (self.channels,)))

    def __getitem__(self, selection) -> "StreamedImages":
        positions = self.positions[selection]
        if positions.ndim != 1 or np.any(np.diff(positions) <= 0):
            raise ValueError("StreamedImages selects examples in stored order: increasing indices or a slice")
        return dataclasses.replace(self, positions=positions)

    def decoded(self) -> np.ndarray:
        """The selected images as uint8 arrays (meant for samples: every image is held in memory)."""
        images = [batch.numpy() for batch, _ in self.records_in_order().map(self.decode).batch(256)]
        return np.concatenate(images) if images else np.zeros(self.shape, np.uint8)

    def pixels(self, encoded: tf.Tensor) -> tf.Tensor:
        """Encoded image bytes -> uint8 image in the stored shape, as the image folder reader makes it."""
        image = image_folder.resized_image(image_folder.decoded_image(encoded, self.channels), self.image_size,
                                           self.resize)
        return image[..., 0] if self.channels == 1 else image

    @abc.abstractmethod
    def decode(self, *record) -> tuple[tf.Tensor, tf.Tensor]:
        """One record (its parts) -> (uint8 image in the stored shape, class id)."""

    @abc.abstractmethod
    def records_in_order(self) -> tf.data.Dataset:
        """The selected records, in stored order."""

    @abc.abstractmethod
    def changed_files(self) -> Iterator[str]:
        """The files of the selection that are missing or damaged now (read again to find out)."""

    @abc.abstractmethod
    def sample(self, count: int = SAMPLE_EXAMPLES) -> "StreamedImages":
        """Up to `count` of the selected examples, chosen to be cheap to read and spread over the split."""


@dataclasses.dataclass(frozen=True, eq=False)
class ShardedImages(StreamedImages):
    """Images in TFRecord shards (--dataset=tfrecord); an epoch reads the shards in a drawn order,
    READ_CYCLE interleaved, through a seeded shuffle buffer."""

    shards: tuple[Shard, ...] = ()

    def decode(self, serialized: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        example = tf.io.parse_single_example(serialized, shards.FEATURES)
        return self.pixels(example["image"]), example["label"]

    def records_in_order(self) -> tf.data.Dataset:
        return self._records(self.shards_read(), cycle=1).map(lambda index, record: record)

    def epoch_records(self, config: TrainConfig, epoch: int) -> tf.data.Dataset:
        """(stored index, record) of every selected example, in the epoch's order drawn from (seed, epoch)."""
        rng = np.random.default_rng([config.seed, epoch, SHARD_ORDER_STREAM])
        read = self.shards_read()
        order = [read[index] for index in rng.permutation(len(read))]
        mean_bytes = sum(shard.bytes for shard in self.shards) / max(1, sum(shard.examples for shard in self.shards))
        buffer = config.shuffle_buffer or int(min(SHUFFLE_BUFFER_RECORDS, SHUFFLE_BUFFER_BYTES // max(1, mean_bytes)))
        return (self._records(order, cycle=min(READ_CYCLE, len(order)))
                .shuffle(max(1, buffer), seed=int(rng.integers(2**31)), reshuffle_each_iteration=False))

    def changed_files(self) -> Iterator[str]:
        return (shard.path for shard, _ in self.shards_read() if _damage(shard) or isinstance(read_record_labels(shard.path), str))

    def sample(self, count: int = SAMPLE_EXAMPLES) -> "ShardedImages":
        """The first selected examples of every shard (so reading them reads little)."""
        per_shard = math.ceil(count / len(self.shards))
        chosen = [self.positions[(self.positions >= shard.first) & (self.positions < shard.first + shard.examples)]
                  [:per_shard] for shard in self.shards]
        return dataclasses.replace(self, positions=np.concatenate(chosen)[:count])

    def shards_read(self) -> list[tuple[Shard, int]]:
        """The shards holding selected examples, each with how many of its records to read (up to
        its last selected one)."""
        read = []
        for shard in self.shards:
            inside = self.positions[(self.positions >= shard.first) & (self.positions < shard.first + shard.examples)]
            if len(inside):
                read.append((shard, int(inside[-1]) - shard.first + 1))
        return read

    def _records(self, shard_order: list[tuple[Shard, int]], cycle: int) -> tf.data.Dataset:
        """The selected records of the shards in `shard_order`, `cycle` shards interleaved a record at a time."""
        member = np.zeros(max(shard.first + shard.examples for shard in self.shards), bool)
        member[self.positions] = True
        member = tf.constant(member)
        paths = tf.constant([shard.path for shard, _ in shard_order], tf.string)
        firsts = tf.constant([shard.first for shard, _ in shard_order], tf.int64)
        reads = tf.constant([read for _, read in shard_order], tf.int64)
        return (tf.data.Dataset.from_tensor_slices((paths, firsts, reads))
                .interleave(lambda path, first, read: tf.data.TFRecordDataset(path).take(read).enumerate(first),
                            cycle_length=cycle, block_length=1, num_parallel_calls=cycle, deterministic=True)
                .filter(lambda index, record: tf.gather(member, index)))


@dataclasses.dataclass(frozen=True, eq=False)
class FileImages(StreamedImages):
    """Images in their own files (--dataset=image_folder above --max_memory_gb): batches are gathered
    by index as from arrays (data.pipeline.train_batches), each image read and decoded, so they are
    the batches of the in-memory path."""

    paths: np.ndarray = dataclasses.field(default_factory=lambda: np.array([], str))  # Per stored index.
    labels: np.ndarray = dataclasses.field(default_factory=lambda: np.array([], np.int32))

    def decode(self, path, label) -> tuple[tf.Tensor, tf.Tensor]:
        return self.pixels(tf.io.read_file(path)), label

    def records_in_order(self) -> tf.data.Dataset:
        return tf.data.Dataset.from_tensor_slices((self.paths[self.positions], self.labels[self.positions]))

    def changed_files(self) -> Iterator[str]:
        return (str(path) for path in self.paths[self.positions] if unreadable_reason(path))

    def sample(self, count: int = SAMPLE_EXAMPLES) -> "FileImages":
        """Evenly spaced selected examples (a folder's listing is sorted by class)."""
        step = max(1, len(self.positions) // count)
        return dataclasses.replace(self, positions=self.positions[::step][:count])

    def gather(self, indices: tf.Tensor) -> tf.Tensor:
        """The images of the selection's `indices` (not stored indices), read and decoded: [B, stored shape]."""
        paths = tf.gather(tf.constant(self.paths[self.positions]), indices)
        return tf.map_fn(lambda path: self.pixels(tf.io.read_file(path)), paths,
                         fn_output_signature=tf.TensorSpec(self.shape[1:], tf.uint8))


def train_batches(train, example_weights: np.ndarray, config: TrainConfig, epoch: int, skip_batches: int,
                  replica_shard: tuple[int, int, int], batch_size: int, prepare) -> tf.data.Dataset:
    """The epoch's batches of a sharded split, as data.pipeline.train_batches yields them for arrays (see there)."""
    images, labels = train
    first_replica, replicas_fed, replicas = replica_shard
    steps = len(labels) // batch_size
    weights = np.zeros(int(images.positions.max(initial=0)) + 1, np.float32)
    weights[images.positions] = example_weights
    weights = tf.constant(weights)
    per_replica = batch_size // replicas

    def decoded(index, record):
        image, label = images.decode(record)
        return image, label, tf.gather(weights, index)

    def replica_slices(step, batch):
        pick = [tf.reshape(part, [replicas, per_replica, *part.shape[1:]])[first_replica:first_replica + replicas_fed]
                for part in batch]
        slice_seeds = step * replicas + tf.range(first_replica, first_replica + replicas_fed, dtype=tf.int64)
        return tf.data.Dataset.from_tensor_slices((slice_seeds, *pick))

    batches = (images.epoch_records(config, epoch)
               .take(steps * batch_size).skip(skip_batches * batch_size)  # Skipped undecoded.
               .map(decoded, num_parallel_calls=os.cpu_count() or 1, deterministic=True)
               .batch(batch_size, drop_remainder=True))
    global_steps = tf.data.Dataset.range(epoch * steps + skip_batches, (epoch + 1) * steps)
    return (tf.data.Dataset.zip(global_steps, batches).flat_map(replica_slices)
            .map(lambda slice_seed, *batch: prepare(tf.stack([tf.constant(config.seed, tf.int64), slice_seed]),
                                                    *batch)))


def eval_records(images: StreamedImages) -> tf.data.Dataset:
    """(image, class id) of every selected example, in stored order, decoded in parallel."""
    return images.records_in_order().map(images.decode, num_parallel_calls=os.cpu_count() or 1, deterministic=True)


def stored_batches(images, batch_size: int) -> Iterator[np.ndarray]:
    """The images as stored, `batch_size` at a time: slices of an array, or decoded from shards."""
    if isinstance(images, StreamedImages):
        yield from (batch.numpy() for batch, _ in eval_records(images).batch(batch_size))
    else:
        yield from (images[start:start + batch_size] for start in range(0, len(images), batch_size))


def pixels_at(images, indices: np.ndarray) -> np.ndarray:
    """images[indices] as an array, in the order given (decoded from the shards for a streamed split)."""
    if not isinstance(images, StreamedImages):
        return images[indices]
    unique, inverse = np.unique(indices, return_inverse=True)
    return images[unique].decoded()[inverse]


def load(root: Path, config: TrainConfig, cache_dir: Path) -> tuple[DatasetSpec, dict]:
    """The shard folder's spec and its {"train", "test"} splits as (StreamedImages, labels), after
    every shard's records are checked against shards.json and the index (the result cached in
    `cache_dir` per shard file)."""
    description = read_description(root)
    size = image_folder.image_size(config)
    num_classes = len(description["class_names"])
    splits = {name: _split(root, name, split, size, config, num_classes, cache_dir)
              for name, split in description["splits"].items()}
    refuse_oversized_shuffle_buffer(config, splits["train"][0])
    sample = decoded_sample(splits["train"][0])
    spec = user_spec("tfrecord", unit_scaled(sample), tuple(description["class_names"]))
    return spec, splits


def folder_exceeds_memory(root: Path, config: TrainConfig) -> bool:
    """Whether an image folder's decoded images would take more than --max_memory_gb (0: a sixteenth
    of this machine's memory)."""
    height, width = image_folder.image_size(config)
    _, files = image_folder.split_files(root, config.test_split)
    decoded = sum(map(len, files.values())) * height * width * config.channels
    limit = config.max_memory_gb * 2**30 or memory_bytes() * MEMORY_SHARE
    return decoded > limit


def load_image_folder(root: Path, config: TrainConfig, cache_dir: Path) -> tuple[DatasetSpec, dict]:
    """An image folder streamed from its files: its spec and {"train", "test"} splits as (FileImages,
    labels). Every file is decoded once to check it (the result is cached), none is kept."""
    class_names, splits = folder_splits(root, config, cache_dir)
    logging.info("Streaming %s from its files: decoded, its %d images would take more than --max_memory_gb.", root,
                 sum(len(labels) for _, labels in splits.values()))
    sample = decoded_sample(splits["train"][0])
    return user_spec("image_folder", unit_scaled(sample), class_names), splits


def folder_splits(root: Path, config: TrainConfig, cache_dir: Path) -> tuple[tuple[str, ...], dict]:
    """(class names, {"train", "test": (FileImages, labels)}) of an image folder: files that do not
    decode or are too thin for --image_size fail the run, or are left out with --skip_bad_images."""
    class_names, files, _, cache = image_folder.listing(root, config, cache_dir)
    size = image_folder.image_size(config)
    probes = _probes(files, cache.with_name(cache.name.removesuffix(".npz") + ".probe.npz"))
    bad, splits = [], {}
    for split, entries in files.items():
        heights, widths, reasons = probes[split]
        thin = (reasons == "") & image_folder.too_thin(np.maximum(heights, 1), np.maximum(widths, 1), size,
                                                       config.image_resize)
        for index in np.flatnonzero((reasons != "") | thin):
            reason = reasons[index] or image_folder.resize_problem(int(heights[index]), int(widths[index]), size,
                                                                     config.image_resize)
            bad.append(f"{os.fsdecode(entries[index][0])} ({reason})")
        paths = np.array([os.fsdecode(path) for path, _ in entries], dtype=str)
        labels = np.array([class_id for _, class_id in entries], np.int32)
        positions = np.flatnonzero((reasons == "") & ~thin)
        splits[split] = (FileImages(positions, size, config.channels, config.image_resize, paths=paths, labels=labels),
                         labels[positions])
    image_folder.report_unreadable(bad, sum(map(len, files.values())), config.skip_bad_images)
    return class_names, splits


def _probes(files: dict, cache: Path) -> dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """Per split, each file's decoded height, width and why it does not decode ("" if it does), read
    from `cache` when it is there, else probed in parallel and cached."""
    try:
        with np.load(cache, allow_pickle=False) as cached:
            return {split: tuple(cached[f"{kind}_{split}"] for kind in ("h", "w", "r")) for split in files}
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile):
        pass
    with concurrent.futures.ThreadPoolExecutor(os.cpu_count() or 1) as pool:  # Decoding releases the GIL.
        probed = {split: list(pool.map(lambda entry: image_folder.probe_image(entry[0])[1:], entries))
                  for split, entries in files.items()}
    probes = {split: (np.array([shape[0] if shape else 0 for shape, _ in found], np.int32),
                      np.array([shape[1] if shape else 0 for shape, _ in found], np.int32),
                      np.array([reason or "" for _, reason in found], dtype=str))
              for split, found in probed.items()}
    with contextlib.suppress(OSError):  # Unwritable: probed again next time.
        cache.parent.mkdir(parents=True, exist_ok=True)
        np.savez(cache, **{f"{kind}_{split}": array for split, arrays in probes.items()
                           for kind, array in zip(("h", "w", "r"), arrays)})
    return probes


def read_description(root: Path) -> dict:
    """shards.json of a shard folder, checked for what reading the shards relies on, or the
    paragraph saying why it is not usable."""
    path = root / shards.DESCRIPTION
    try:
        description = json.loads(path.read_text())
        _check_description(description)
        return description
    except (OSError, ValueError, KeyError, TypeError, AttributeError, RecursionError) as error:
        raise TapeloopError(
            stage="data", problem=f"{root} is not a usable shard folder",
            expected=f"{shards.DESCRIPTION} ({shards.FORMAT}) beside train-*.tfrecord and test-*.tfrecord, as "
                     "scripts/make_shards.py writes them", found=errors.described(error),
            fix=f"run (or rerun, it resumes) scripts/make_shards.py --data_dir=IMAGE_FOLDER --output_dir={root}"
        ) from None


def _check_description(description: dict) -> None:
    """Raises ValueError naming the first thing in shards.json that reading the shards cannot rely on."""
    if description.get("format") != shards.FORMAT or set(description["splits"]) != {"train", "test"}:
        raise ValueError(f"format {description.get('format')!r}, splits {sorted(description['splits'])}")
    names = description["class_names"]
    if not (isinstance(names, list) and len(names) >= 2 and all(isinstance(name, str) for name in names)):
        raise ValueError(f"class_names {str(names)[:100]}: expected a list of at least two names")
    for split, entry in description["splits"].items():
        first = 0
        for shard in entry["shards"]:
            if not shards.SHARD_NAME.fullmatch(str(shard["file"])):
                raise ValueError(f"the {split} shard file {str(shard['file'])[:100]!r} is not a shard name")
            numbers = [shard[key] for key in ("first", "examples", "bytes")]
            if not all(type(number) is int and number >= 0 for number in numbers) or shard["first"] != first:
                raise ValueError(f"the {split} shard {shard['file']} lists first, examples, bytes {numbers}: "
                                 f"expected whole numbers, its first example at {first}")
            first += shard["examples"]
        if entry["examples"] != first or first == 0:
            raise ValueError(f"the {split} split lists {entry['examples']} examples and its shards {first}: "
                             "expected the same number, above 0")


def read_index(root: Path, name: str, examples: int, num_classes: int) -> dict[str, np.ndarray]:
    """index-<name>.npz: labels, heights, widths and paths of the split's `examples` records, or the paragraph."""
    path = root / f"index-{name}.npz"
    try:
        with np.load(path, allow_pickle=False) as index:
            arrays = {key: index[key] for key in ("labels", "heights", "widths", "paths")}
        lengths = {len(array) for array in arrays.values()}
        if lengths != {examples}:
            raise ValueError(f"arrays of {sorted(lengths)} entries where shards.json lists {examples} examples")
        labels = arrays["labels"]
        if labels.dtype.kind not in "iu" or labels.min() < 0 or labels.max() >= num_classes:
            raise ValueError(f"labels of {labels.dtype} from {labels.min()} to {labels.max()}, outside the "
                             f"{num_classes} classes")
        return arrays
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as error:
        raise TapeloopError(
            stage="data", problem=f"the index {path} does not fit the shards",
            expected="the index make_shards.py wrote with shards.json (labels, heights, widths and paths of every "
                     "record, no pickled objects)", found=errors.described(error),
            fix="run make_shards.py again with the same flags into a new --output_dir (it reads the image folder "
                "again), then train from there") from None


def _split(root: Path, name: str, split: dict, size: tuple[int, int], config: TrainConfig, num_classes: int,
           cache_dir: Path):
    """(StreamedImages, labels) of one split; damaged shards, shards whose records disagree with the
    index and images that cannot be brought to `size` fail the run, or with --skip_bad_images are
    left out with a warning."""
    index = read_index(root, name, split["examples"], num_classes)
    labels, heights, widths, paths = (index[key] for key in ("labels", "heights", "widths", "paths"))
    listed = tuple(Shard(str(root / shard["file"]), shard["first"], shard["examples"], shard["bytes"])
                   for shard in split["shards"])
    with concurrent.futures.ThreadPoolExecutor(os.cpu_count() or 1) as pool:  # Reading releases the GIL.
        problems = dict(zip(listed, pool.map(lambda shard: _shard_problem(shard, labels, cache_dir), listed)))
    keep = np.ones(len(labels), bool)
    for shard in listed:
        if problems[shard]:
            keep[shard.first:shard.first + shard.examples] = False
    thin = np.flatnonzero(keep & image_folder.too_thin(heights, widths, size, config.image_resize))
    keep[thin] = False
    bad = ([f"{shard.path} ({problems[shard]})" for shard in listed if problems[shard]]
           + [f"{paths[position]} ({image_folder.resize_problem(int(heights[position]), int(widths[position]), size, config.image_resize)})"
              for position in thin])
    image_folder.report_unreadable(bad, len(listed) + len(labels), config.skip_bad_images)
    positions = np.flatnonzero(keep)
    images = ShardedImages(positions, size, config.channels, config.image_resize, shards=listed)
    return images, labels[positions]


def _shard_problem(shard: Shard, index_labels: np.ndarray, cache_dir: Path) -> str | None:
    """What is wrong with a shard: its file (missing, another size than make_shards wrote), a record
    that fails its checksum or is no example, or records that disagree with the index; None if nothing."""
    reason = _damage(shard)
    if reason:
        return reason
    found = record_labels(shard.path, cache_dir)
    if isinstance(found, str):
        return found
    if len(found) != shard.examples:
        return f"{len(found)} records where shards.json lists {shard.examples}"
    differ = np.flatnonzero(found != index_labels[shard.first:shard.first + shard.examples])
    if len(differ):
        return (f"{len(differ)} record labels differ from the index (record {int(differ[0])}: label "
                f"{int(found[differ[0]])}, index {int(index_labels[shard.first + differ[0]])})")
    return None


def record_labels(path: str, cache_dir: Path) -> np.ndarray | str:
    """The label of each record of a shard file, read through its checksums, or why it cannot be read;
    kept in `cache_dir` per file (path, size, modification time), so each version is read once."""
    status = os.stat(path)
    key = hashlib.sha256(os.fsencode(f"{os.path.abspath(path)}\0{status.st_size}\0{status.st_mtime_ns}")).hexdigest()
    cached = cache_dir / f"{key}.npz"
    try:
        with np.load(cached, allow_pickle=False) as entry:
            return entry["labels"] if entry["reason"].size == 0 else str(entry["reason"][0])
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile):
        pass
    found = read_record_labels(path)
    with contextlib.suppress(OSError):  # Unwritable: read again next time.
        cache_dir.mkdir(parents=True, exist_ok=True)
        damaged = isinstance(found, str)
        shards.save_npz_whole(cached, labels=np.zeros(0, np.int64) if damaged else found,
                              reason=np.asarray([found] if damaged else [], dtype=str))
    return found


def read_record_labels(path: str) -> np.ndarray | str:
    """The label of each record of a shard file, read through its checksums, or why it cannot be read."""
    try:
        parsed = (tf.data.TFRecordDataset(path).batch(4096)
                  .map(lambda records: tf.io.parse_example(records, {"label": shards.FEATURES["label"]})["label"])
                  .with_options(without_autotuning()))
        return np.concatenate([np.zeros(0, np.int64)] + [batch.numpy() for batch in parsed])
    except tf.errors.DataLossError as error:
        return f"a damaged record: {errors.first_line(error, 120)}"
    except tf.errors.OpError as error:
        return f"records that are not labelled examples: {errors.first_line(error, 120)}"


def refuse_oversized_shuffle_buffer(config: TrainConfig, images: StreamedImages) -> None:
    """Refuses a --shuffle_buffer whose records would take more than SHUFFLE_MEMORY_SHARE of the memory."""
    if not isinstance(images, ShardedImages) or not config.shuffle_buffer:
        return
    mean_bytes = sum(shard.bytes for shard in images.shards) / max(1, sum(shard.examples for shard in images.shards))
    needed = config.shuffle_buffer * (mean_bytes + RECORD_OVERHEAD_BYTES)
    limit = memory_bytes() * SHUFFLE_MEMORY_SHARE
    if needed > limit:
        raise TapeloopError(
            stage="flags", problem=f"--shuffle_buffer={config.shuffle_buffer} would not fit in memory",
            expected=f"a buffer of at most {limit / 2**30:.1f} GiB (a quarter of this machine's memory): at "
                     f"{mean_bytes:.0f} bytes a record, at most {int(limit // (mean_bytes + RECORD_OVERHEAD_BYTES)):,} "
                     "records", found=f"{needed / 2**30:.1f} GiB",
            fix="pass a smaller --shuffle_buffer, or 0 for the default (128 MiB of records, at most 10,000)")


def decoded_sample(images: StreamedImages) -> np.ndarray:
    """A few images of the split decoded (for the spec's statistics), or the paragraph naming what
    does not decode."""
    try:
        return images.sample().decoded()
    except tf.errors.OpError as error:
        raise TapeloopError(
            stage="data", problem="a sample of the training images does not decode",
            expected="records of encoded JPEG, PNG, BMP or GIF images, as make_shards.py writes them",
            found=errors.described(error), fix="write the shards with scripts/make_shards.py from the image folder"
        ) from None


def _damage(shard: Shard) -> str | None:
    """What is wrong with a shard file that its size shows (missing, cut short, grown), or None."""
    reason = unreadable_reason(shard.path)
    if reason:
        return reason
    found = os.path.getsize(shard.path)
    return None if found == shard.bytes else f"{found} bytes where make_shards wrote {shard.bytes}: cut short or changed"


@contextlib.contextmanager
def damaged_records_named(*splits):
    """Turns a streamed file that changed under a running run (a shard or image removed, or damaged
    where its size does not show it, or no longer an image) into the paragraph naming it, found by
    reading the files again."""
    try:
        yield
    except (tf.errors.DataLossError, tf.errors.NotFoundError, tf.errors.InvalidArgumentError) as error:
        streamed = [split[0] for split in splits if split is not None and isinstance(split[0], StreamedImages)]
        undecodable = isinstance(error, tf.errors.InvalidArgumentError)
        if not streamed or (undecodable and "image file format" not in str(error)):
            raise
        culprit = next((path for images in streamed for path in images.changed_files()),
                       "a record's image (no file found changed when read again)" if undecodable else
                       "a streamed file (none found changed when read again)")
        raise TapeloopError(
            stage="data", problem=f"{culprit} was damaged or removed while the run read it",
            expected="the shards or image files the run started with, unchanged until it ends (each record has a "
                     "checksum)", found=errors.described(error, 200),
            fix="restore that file (for shards: delete it and rerun make_shards.py with the same flags, which rewrites "
                "only what is missing), then rerun the training command: it resumes from the last checkpoint") from None
