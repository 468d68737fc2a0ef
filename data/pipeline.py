"""From stored arrays to model-ready batches: split, normalize, shuffle, batch, prefetch.

The (small) datasets stay in memory as uint8 tensors and batches are gathered
by index, which is faster here than per-example `map` pipelines. The training
order of each epoch is a pure function of (seed, epoch), so a resumed run
continues mid-epoch with exactly the batches it would have seen.
"""

import dataclasses

import numpy as np
import tensorflow as tf

from data.catalog import DatasetSpec
from data.sources import Arrays, load_dataset
from trainer.config import TrainConfig


PREFETCH_BATCHES = 2


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
class PreparedData:
    """The three splits of a run; `validation` is None when --validation_split=0."""

    spec: DatasetSpec
    train: Arrays
    validation: Arrays | None
    test: Arrays


def split_validation(images: np.ndarray, labels: np.ndarray, fraction: float,
                     seed: int) -> tuple[Arrays, Arrays | None]:
    """Holds out `fraction` of the examples, chosen by `seed`; returns (train, validation)."""
    count = int(round(len(labels) * fraction))
    if count == 0:
        return (images, labels), None
    order = np.random.default_rng(seed).permutation(len(labels))
    held_out, kept = np.sort(order[:count]), np.sort(order[count:])
    return (images[kept], labels[kept]), (images[held_out], labels[held_out])


def prepare_data(config: TrainConfig, spec: DatasetSpec) -> PreparedData:
    """Loads the dataset and splits validation off the training split."""
    splits = load_dataset(spec, config.data_dir, config.download)
    train, validation = split_validation(*splits["train"], config.validation_split, config.seed)
    return PreparedData(spec=spec, train=train, validation=validation, test=splits["test"])


def to_model_input(images: tf.Tensor, spec: DatasetSpec, standardize: bool) -> tf.Tensor:
    """Raw images -> float32 [B, H, W, C]: uint8 scaled to [0, 1], floats kept as they are."""
    images = tf.convert_to_tensor(images)
    scale = 255.0 if images.dtype.is_integer else 1.0
    images = tf.cast(images, tf.float32) / scale
    if images.shape.rank == 3:
        images = images[..., tf.newaxis]
    if standardize:
        images = (images - spec.mean) / spec.std
    return images


def steps_per_epoch(num_examples: int, batch_size: int) -> int:
    """Full batches per epoch (the last partial batch is dropped during training)."""
    return num_examples // batch_size


def train_batches(train: Arrays, spec: DatasetSpec, config: TrainConfig, epoch: int,
                  skip_batches: int = 0) -> tf.data.Dataset:
    """The epoch's shuffled full batches, starting after `skip_batches` of them."""
    images, labels = tf.constant(train[0]), tf.constant(train[1], tf.int32)
    steps = steps_per_epoch(len(train[1]), config.batch_size)
    order = np.random.default_rng([config.seed, epoch]).permutation(len(train[1]))
    batch_indices = order[: steps * config.batch_size].reshape(steps, config.batch_size)

    def gather(indices):
        return to_model_input(tf.gather(images, indices), spec, config.standardize), tf.gather(labels, indices)

    return (tf.data.Dataset.from_tensor_slices(batch_indices[skip_batches:])
            .map(gather)
            .prefetch(PREFETCH_BATCHES)
            .with_options(without_autotuning()))


def eval_batches(split: Arrays, spec: DatasetSpec, config: TrainConfig) -> tf.data.Dataset:
    """Every example once, in order, never augmented; cached after the first pass."""
    images, labels = split

    def preprocess(batch_images, batch_labels):
        return to_model_input(batch_images, spec, config.standardize), tf.cast(batch_labels, tf.int32)

    return (tf.data.Dataset.from_tensor_slices((images, labels))
            .batch(config.eval_batch_size)
            .map(preprocess)
            .cache()
            .prefetch(PREFETCH_BATCHES)
            .with_options(without_autotuning()))
