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
from data.sources import Arrays, load_dataset, load_sample_weights
from trainer.config import TrainConfig


PREFETCH_BATCHES = 2
LONG_TAIL_SEED = 0  # Fixed, so every run of a long-tail recipe sees the same subset.


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
    """The three splits of a run; `validation` is None when --validation_split=0.

    `train_sample_weights` is None unless --sample_weights gave one weight per training example.
    """

    spec: DatasetSpec
    train: Arrays
    validation: Arrays | None
    test: Arrays
    train_sample_weights: np.ndarray | None = None


def split_validation(num_examples: int, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray | None]:
    """Holds out `fraction` of the examples, chosen by `seed`; returns sorted (train, validation) indices."""
    count = int(round(num_examples * fraction))
    if count == 0:
        return np.arange(num_examples), None
    order = np.random.default_rng(seed).permutation(num_examples)
    return np.sort(order[count:]), np.sort(order[:count])


def long_tail_subset(labels: np.ndarray, num_classes: int, ratio: float) -> np.ndarray:
    """Sorted indices keeping ratio^(-c/(k-1)) of class c: class 0 whole, the last 1/ratio (at least 1)."""
    rng = np.random.default_rng(LONG_TAIL_SEED)
    kept = []
    for class_id in range(num_classes):
        members = np.flatnonzero(labels == class_id)
        keep = max(1, int(round(len(members) * ratio ** (-class_id / (num_classes - 1)))))
        kept.append(rng.permutation(members)[:keep])
    return np.sort(np.concatenate(kept))


def prepare_data(config: TrainConfig, spec: DatasetSpec) -> PreparedData:
    """Loads the dataset (and --sample_weights), applies --class_imbalance, splits off validation."""
    splits = load_dataset(spec, config.data_dir, config.download)
    images, labels = splits["train"]
    sample_weights = (load_sample_weights(config.sample_weights, len(labels))
                      if config.sample_weights else None)
    kept = (long_tail_subset(labels, spec.num_classes, config.class_imbalance)
            if config.class_imbalance > 1 else np.arange(len(labels)))
    train, validation = split_validation(len(kept), config.validation_split, config.seed)
    train, validation = kept[train], (kept[validation] if validation is not None else None)
    return PreparedData(
        spec=spec, train=(images[train], labels[train]),
        validation=(images[validation], labels[validation]) if validation is not None else None,
        test=splits["test"],
        train_sample_weights=sample_weights[train] if sample_weights is not None else None)


def to_model_input(images: tf.Tensor, spec: DatasetSpec, standardize: bool,
                   input_range: tuple[float, float] = (0.0, 1.0)) -> tf.Tensor:
    """Raw images -> float32 [B, H, W, C] in [0, 1] (standardized if asked).

    uint8 pixels are divided by 255; float pixels are mapped from `input_range`.
    """
    images = tf.convert_to_tensor(images)
    low, high = (0.0, 255.0) if images.dtype.is_integer else input_range
    images = (tf.cast(images, tf.float32) - low) / (high - low)
    if images.shape.rank == 3:
        images = images[..., tf.newaxis]
    if standardize:
        images = (images - spec.mean) / spec.std
    return images


def to_display(images, spec: DatasetSpec, standardize: bool) -> np.ndarray:
    """Model inputs back to [0, 1] pixels for looking at (undoes the standardization)."""
    images = np.asarray(images, dtype=np.float32)
    return np.clip(images * spec.std + spec.mean if standardize else images, 0.0, 1.0)


def model_input_range(spec: DatasetSpec, standardize: bool) -> tuple[float, float]:
    """The interval every model input value lies in: [0, 1], standardized if asked."""
    if standardize:
        return (0.0 - spec.mean) / spec.std, (1.0 - spec.mean) / spec.std
    return 0.0, 1.0


def steps_per_epoch(num_examples: int, batch_size: int) -> int:
    """Full batches per epoch (the last partial batch is dropped during training)."""
    return num_examples // batch_size


def format_labels(labels: tf.Tensor, num_classes: int, label_format: str) -> tf.Tensor:
    """Class ids -> what the loss reads: int32 ids (sparse) or float32 one-hot rows."""
    labels = tf.cast(labels, tf.int32)
    return labels if label_format == "sparse" else tf.one_hot(labels, num_classes, dtype=tf.float32)


def train_batches(train: Arrays, example_weights: np.ndarray, spec: DatasetSpec, config: TrainConfig,
                  epoch: int, skip_batches: int = 0) -> tf.data.Dataset:
    """The epoch's shuffled full batches of (images, labels, example weights), after `skip_batches`."""
    images, labels, weights = tf.constant(train[0]), tf.constant(train[1]), tf.constant(example_weights)
    steps = steps_per_epoch(len(train[1]), config.batch_size)
    order = np.random.default_rng([config.seed, epoch]).permutation(len(train[1]))
    batch_indices = order[: steps * config.batch_size].reshape(steps, config.batch_size)

    def gather(indices):
        return (to_model_input(tf.gather(images, indices), spec, config.standardize, config.input_range),
                format_labels(tf.gather(labels, indices), spec.num_classes, config.label_format),
                tf.gather(weights, indices))

    return (tf.data.Dataset.from_tensor_slices(batch_indices[skip_batches:])
            .map(gather)
            .prefetch(PREFETCH_BATCHES)
            .with_options(without_autotuning()))


def eval_batches(split: Arrays, spec: DatasetSpec, config: TrainConfig) -> tf.data.Dataset:
    """Every example once, in order, never augmented or weighted; cached after the first pass."""
    images, labels = split

    def preprocess(batch_images, batch_labels):
        return (to_model_input(batch_images, spec, config.standardize, config.input_range),
                format_labels(batch_labels, spec.num_classes, config.label_format))

    return (tf.data.Dataset.from_tensor_slices((images, labels))
            .batch(config.eval_batch_size)
            .map(preprocess)
            .cache()
            .prefetch(PREFETCH_BATCHES)
            .with_options(without_autotuning()))
