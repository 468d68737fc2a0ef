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
from trainer.config import TrainConfig
from trainer import errors
from trainer.errors import TapeloopError

# --max_memory_gb=0: an image folder whose decoded images exceed this share of the memory is streamed. The
# in-memory path holds about five copies of them at its peak (64x64 RGB MNIST: 0.74 GB of images, peak RSS
# 3.7 GB above the same run streamed), so a sixteenth keeps that peak near a third of the memory.
MEMORY_SHARE = 1 / 16
SAMPLE_EXAMPLES = 1024  # Decoded per split for the spec's mean and std and the pre-flight checks.
READ_CYCLE = 4  # Shards read at once in training.
SHUFFLE_BUFFER_BYTES = 128 * 2**20  # --shuffle_buffer=0: as many records as this many encoded bytes hold...
SHUFFLE_BUFFER_RECORDS = 10_000  # ... and at most this many.
SHARD_ORDER_STREAM = 3  # Folded into an epoch's seed for its shard order and shuffle.


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


def load(root: Path, config: TrainConfig) -> tuple[DatasetSpec, dict]:
    """The shard folder's spec and its {"train", "test"} splits as (StreamedImages, labels)."""
    description = read_description(root)
    size = image_folder.image_size(config)
    splits = {name: _split(root, name, split, size, config) for name, split in description["splits"].items()}
    sample = splits["train"][0].sample().decoded()
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
    sample = splits["train"][0].sample().decoded()
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
        thin = (reasons == "") & _too_thin(np.maximum(heights, 1), np.maximum(widths, 1), size, config.image_resize)
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
    """shards.json of a shard folder, or the paragraph saying why there is none usable."""
    path = root / shards.DESCRIPTION
    try:
        description = json.loads(path.read_text())
        if description.get("format") != shards.FORMAT or set(description["splits"]) != {"train", "test"}:
            raise ValueError(f"format {description.get('format')!r}, splits {sorted(description['splits'])}")
        return description
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as error:
        raise TapeloopError(
            stage="data", problem=f"{root} is not a finished shard folder",
            expected=f"{shards.DESCRIPTION} ({shards.FORMAT}) beside train-*.tfrecord and test-*.tfrecord, as "
                     "scripts/make_shards.py writes them", found=f"{type(error).__name__}: {error}",
            fix=f"run (or rerun, it resumes) scripts/make_shards.py --data_dir=IMAGE_FOLDER --output={root}") from None


def _split(root: Path, name: str, split: dict, size: tuple[int, int], config: TrainConfig):
    """(StreamedImages, labels) of one split; damaged shards and images that cannot be brought to
    `size` fail the run, or with --skip_bad_images are left out with a warning."""
    with np.load(root / f"index-{name}.npz", allow_pickle=False) as index:
        labels, heights, widths, paths = (index[key] for key in ("labels", "heights", "widths", "paths"))
    listed = tuple(Shard(str(root / shard["file"]), shard["first"], shard["examples"], shard["bytes"])
                   for shard in split["shards"])
    damaged = [shard for shard in listed if _damage(shard)]
    keep = np.ones(len(labels), bool)
    for shard in damaged:
        keep[shard.first:shard.first + shard.examples] = False
    thin = np.flatnonzero(keep & _too_thin(heights, widths, size, config.image_resize))
    keep[thin] = False
    bad = ([f"{shard.path} ({_damage(shard)})" for shard in damaged]
           + [f"{paths[position]} ({image_folder.resize_problem(int(heights[position]), int(widths[position]), size, config.image_resize)})"
              for position in thin])
    image_folder.report_unreadable(bad, len(listed) + len(labels), config.skip_bad_images)
    positions = np.flatnonzero(keep)
    images = ShardedImages(positions, size, config.channels, config.image_resize, shards=listed)
    return images, labels[positions]


def _too_thin(heights: np.ndarray, widths: np.ndarray, size: tuple[int, int], resize: str) -> np.ndarray:
    """image_folder.resize_problem's rule for every example at once: True where it finds a problem."""
    if resize != "pad":
        return np.zeros(len(heights), bool)
    scale = np.minimum(size[0] / heights, size[1] / widths)
    return np.minimum(np.round(heights * scale), np.round(widths * scale)) < 1


def _damage(shard: Shard) -> str | None:
    """What is wrong with a shard file that its size shows (missing, cut short, grown), or None."""
    reason = unreadable_reason(shard.path)
    if reason:
        return reason
    found = os.path.getsize(shard.path)
    return None if found == shard.bytes else f"{found} bytes where make_shards wrote {shard.bytes}: cut short or changed"


@contextlib.contextmanager
def damaged_records_named(*splits):
    """Turns a record that fails its checksum mid-run (a shard damaged after the run started, where
    its size does not show it) into the paragraph naming the shard, found by reading each one."""
    try:
        yield
    except tf.errors.DataLossError as error:
        streamed = [split[0] for split in splits if split is not None and isinstance(split[0], ShardedImages)]
        if not streamed:
            raise
        culprit = next((shard.path for images in streamed for shard, _ in images.shards_read()
                        if _unreadable_records(shard.path)), "(none found damaged when read again)")
        raise TapeloopError(
            stage="data", problem=f"a record of the shard {culprit} is damaged",
            expected="TFRecord shards as make_shards.py wrote them (each record has a checksum)",
            found=f"{type(error).__name__}: {errors.first_line(error, 200)}",
            fix="delete that shard and rerun make_shards.py with the same flags (it rewrites only what is missing), "
                "then rerun the training command: it resumes from the last checkpoint") from None


def _unreadable_records(path: str) -> bool:
    try:
        for _ in tf.data.TFRecordDataset(path):
            pass
    except tf.errors.OpError:
        return True
    return False

