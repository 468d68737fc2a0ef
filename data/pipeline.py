"""From stored arrays to model-ready batches: split, normalize, augment, shuffle, batch, prefetch.

The (small) datasets stay in memory as uint8 tensors and batches are gathered
by index, which is faster here than per-example `map` pipelines. The training
batches of each epoch, augmentation included, are a pure function of (seed,
epoch), so a resumed run continues mid-epoch with exactly the batches it would
have seen. Evaluation batches are never augmented.
"""

import dataclasses
import math
import os
from functools import partial

import numpy as np
import tensorflow as tf

from data.catalog import CATALOG, DatasetSpec
from data import sources, streaming
from data.mixing import MixSettings, mix
from data.pixels import stored_range
from data.randaugment import randaugment
from data.sources import Arrays, load_sample_weights
from data.streaming import FileImages, ShardedImages, StreamedImages, without_autotuning
from settings.config import TrainConfig
from settings.errors import TapeloopError


PREFETCH_BATCHES = 2
LONG_TAIL_SEED = 0  # Fixed, so every run of a long-tail recipe sees the same subset.
ERASED_AREA = (0.02, 0.25)  # Random erasing: the rectangle's share of the image (Zhong et al., 2017)...
ERASED_ASPECT = (0.3, 3.3)  # ... and its height / width.
TTA_SHIFTS = ((1, 0), (-1, 0), (0, 1), (0, -1))  # --tta=shift: one pixel each way.
# Random streams folded into a batch's seed, apart from the --augment_* draws (which use the seed as
# it is, as before these existed, so runs without them draw what they always drew).
RANDAUGMENT_STREAM, MIXING_STREAM = 1, 2


@dataclasses.dataclass(frozen=True)
class PreparedData:
    """The three splits of a run; `validation` is None when --validation_split=0.

    `train_sample_weights` is None unless --sample_weights gave one weight per training example.
    `train_index` and `validation_index` are each example's index in the stored training split.
    """

    spec: DatasetSpec
    train: Arrays
    validation: Arrays | None
    test: Arrays
    train_sample_weights: np.ndarray | None = None
    train_index: np.ndarray | None = None
    validation_index: np.ndarray | None = None

    def training_examples(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Images, labels and stored indices of the training split with its validation part put back."""
        parts = [(self.train, self.train_index)]
        if self.validation is not None:
            parts.append((self.validation, self.validation_index))
        return (np.concatenate([images for (images, _), _ in parts]),
                np.concatenate([labels for (_, labels), _ in parts]).astype(np.int64),
                np.concatenate([index for _, index in parts]))


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


@dataclasses.dataclass(frozen=True)
class AugmentSettings:
    """What `augment` does to each training image: the bounds of its random draws (0: off)."""

    shift: float = 0.0  # Fraction of the image size, each way.
    rotation: float = 0.0  # Degrees, each way.
    scale: float = 0.0  # Zoom by a factor in [1 - scale, 1 + scale].
    flip: bool = False  # Mirror left-right half the time.
    erase: float = 0.0  # Probability of one random-erasing rectangle.

    @classmethod
    def from_config(cls, config: TrainConfig) -> "AugmentSettings":
        return cls(shift=config.augment_shift, rotation=config.augment_rotation, scale=config.augment_scale,
                   flip=config.augment_flip, erase=config.augment_erase)

    @property
    def active(self) -> bool:
        return bool(self.shift or self.rotation or self.scale or self.flip or self.erase)


def prepare_data(config: TrainConfig) -> PreparedData:
    """Loads the dataset (and --sample_weights), applies --class_imbalance, splits off validation."""
    if config.augment_flip and config.dataset in CATALOG:  # Before any loading.
        refuse_flips(CATALOG[config.dataset], "--augment_flip")
    MixSettings.from_config(config)  # Refuses settings that do not fit together, before any loading.
    spec, splits = sources.load(config)
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
        train_sample_weights=sample_weights[train] if sample_weights is not None else None,
        train_index=train, validation_index=validation)


FLIP_FIXES = {"--augment_flip": "drop --augment_flip; use --augment_shift, --augment_rotation or "
                                 "--augment_scale instead", "--tta=flip": "use --tta=shift"}


def refuse_flips(spec: DatasetSpec, flag: str) -> None:
    """Refuses `flag` (--augment_flip or --tta=flip) for a dataset whose classes a mirror changes (digits)."""
    if not spec.flip_invariant:
        raise TapeloopError(
            stage="data" if flag == "--augment_flip" else "eval",
            problem=f"{flag} would mirror {spec.name} images, and a mirror changes their class",
            expected="flips only for datasets whose classes survive a mirror (the catalog's flip_invariant, "
                     "e.g. fashion_mnist)", found=f"--dataset={spec.name} {flag}", fix=FLIP_FIXES[flag])


def to_model_input(images: tf.Tensor, spec: DatasetSpec, standardize: bool,
                   input_range: tuple[float, float] = (0.0, 1.0)) -> tf.Tensor:
    """Raw images -> float32 [B, H, W, C] in [0, 1] (standardized if asked)."""
    pixels = to_unit_pixels(images, input_range)
    return standardized(pixels, spec) if standardize else pixels


def to_unit_pixels(images: tf.Tensor, input_range: tuple[float, float] = (0.0, 1.0)) -> tf.Tensor:
    """Raw images -> float32 [B, H, W, C] in [0, 1]: uint8 pixels divided by 255, float pixels
    mapped from `input_range`."""
    images = tf.convert_to_tensor(images)
    low, high = stored_range(images.dtype.is_integer, input_range)
    images = (tf.cast(images, tf.float32) - low) / (high - low)
    return images[..., tf.newaxis] if images.shape.rank == 3 else images


def standardized(pixels: tf.Tensor, spec: DatasetSpec) -> tf.Tensor:
    """[0, 1] pixels -> (pixels - dataset mean) / dataset std."""
    return (pixels - spec.mean) / spec.std


def to_display(images, spec: DatasetSpec, standardize: bool) -> np.ndarray:
    """Model inputs back to [0, 1] pixels for looking at (undoes the standardization)."""
    images = np.asarray(images, dtype=np.float32)
    return np.clip(images * spec.std + spec.mean if standardize else images, 0.0, 1.0)


def model_input_range(spec: DatasetSpec, standardize: bool) -> tuple[float, float]:
    """The interval every model input value lies in: [0, 1], standardized if asked."""
    if standardize:
        return (0.0 - spec.mean) / spec.std, (1.0 - spec.mean) / spec.std
    return 0.0, 1.0


def update_batch_size(config: TrainConfig) -> int:
    """The examples of one update: --batch_size times --accumulate_steps micro-batches."""
    return config.batch_size * config.accumulate_steps


def steps_per_epoch(num_examples: int, batch_size: int) -> int:
    """Full batches per epoch (the last partial batch is dropped during training)."""
    return num_examples // batch_size


def format_labels(labels: tf.Tensor, num_classes: int, label_format: str) -> tf.Tensor:
    """Class ids -> what the loss reads: int32 ids (sparse) or float32 one-hot rows."""
    labels = tf.cast(labels, tf.int32)
    return labels if label_format == "sparse" else tf.one_hot(labels, num_classes, dtype=tf.float32)


def augment(images: tf.Tensor, settings: AugmentSettings, seed: tf.Tensor, background: float,
            mean_pixel: float) -> tf.Tensor:
    """Randomly transforms a batch of model inputs [B, H, W, C], each image its own way.

    One affine resampling (rotation and zoom about the centre, then translation;
    uncovered pixels become `background`), then mirroring, then random erasing
    with `mean_pixel`. Draws come from stateless ops keyed by `seed` ([2]
    integers), so the same seed gives the same batch.
    """
    size = tf.shape(images)[0]
    height, width = images.shape[1], images.shape[2]
    seeds = tf.random.experimental.stateless_split(seed, 4)
    if settings.shift or settings.rotation or settings.scale:
        images = _affine(images, seeds[0], settings, background)
    if settings.flip:
        mirrored = tf.random.stateless_uniform([size, 1, 1, 1], seeds[1]) < 0.5
        images = tf.where(mirrored, tf.reverse(images, axis=[2]), images)
    if settings.erase:
        erased = _erasing_mask(size, height, width, settings.erase, seeds[2])
        images = tf.where(erased, tf.cast(mean_pixel, images.dtype), images)
    return images


def _affine(images: tf.Tensor, seed: tf.Tensor, settings: AugmentSettings, background: float) -> tf.Tensor:
    """Random rotation, zoom and shift within the settings' bounds, one draw per image."""
    size = tf.shape(images)[0]
    height, width = images.shape[1], images.shape[2]
    draws = tf.random.stateless_uniform([4, size], seed, minval=-1.0, maxval=1.0)
    return transform_images(images, angle=draws[0] * settings.rotation * math.pi / 180.0,
                            scale=1.0 + draws[1] * settings.scale,
                            shift_x=draws[2] * settings.shift * width,
                            shift_y=draws[3] * settings.shift * height, background=background)


def transform_images(images: tf.Tensor, angle, scale, shift_x, shift_y, background: float) -> tf.Tensor:
    """Rotates each image by `angle` (radians, counter-clockwise on screen) and zooms it by `scale`
    about its centre, then shifts it by (`shift_x`, `shift_y`) pixels (right, down): one bilinear
    resampling. Each parameter is a scalar or one value per image; uncovered pixels get `background`."""
    size = tf.shape(images)[0]
    height, width = images.shape[1], images.shape[2]
    angle, scale, shift_x, shift_y = (tf.broadcast_to(tf.cast(value, tf.float32), [size])
                                      for value in (angle, scale, shift_x, shift_y))
    centre_x, centre_y = (width - 1) / 2.0, (height - 1) / 2.0
    # The op reads output pixel (x, y) from input point (a0 x + a1 y + a2, b0 x + b1 y + b2).
    a0, a1 = tf.cos(angle) / scale, -tf.sin(angle) / scale
    b0, b1 = -a1, a0
    a2 = centre_x - a0 * (centre_x + shift_x) - a1 * (centre_y + shift_y)
    b2 = centre_y - b0 * (centre_x + shift_x) - b1 * (centre_y + shift_y)
    zeros = tf.zeros_like(a0)
    return tf.raw_ops.ImageProjectiveTransformV3(
        images=images, transforms=tf.stack([a0, a1, a2, b0, b1, b2, zeros, zeros], axis=1),
        output_shape=[height, width], fill_value=background, interpolation="BILINEAR", fill_mode="CONSTANT")


def _erasing_mask(size: tf.Tensor, height: int, width: int, probability: float, seed: tf.Tensor) -> tf.Tensor:
    """[B, H, W, 1] booleans: with `probability`, a random rectangle of ERASED_AREA and ERASED_ASPECT."""
    draws = tf.random.stateless_uniform([5, size], seed)
    area = (ERASED_AREA[0] + draws[0] * (ERASED_AREA[1] - ERASED_AREA[0])) * height * width
    log_low, log_high = math.log(ERASED_ASPECT[0]), math.log(ERASED_ASPECT[1])
    aspect = tf.exp(log_low + draws[1] * (log_high - log_low))
    box_height = tf.minimum(tf.round(tf.sqrt(area * aspect)), height)
    box_width = tf.minimum(tf.round(tf.sqrt(area / aspect)), width)
    top = tf.floor(draws[2] * (height - box_height + 1))
    left = tf.floor(draws[3] * (width - box_width + 1))
    rows = tf.range(height, dtype=tf.float32)[tf.newaxis, :, tf.newaxis]
    columns = tf.range(width, dtype=tf.float32)[tf.newaxis, tf.newaxis, :]
    inside = ((rows >= top[:, None, None]) & (rows < (top + box_height)[:, None, None])
              & (columns >= left[:, None, None]) & (columns < (left + box_width)[:, None, None]))
    return (inside & (draws[4] < probability)[:, None, None])[..., tf.newaxis]


def test_time_views(images: tf.Tensor, spec: DatasetSpec, standardize: bool, kind: str) -> list[tf.Tensor]:
    """The views of a batch of model inputs that test-time augmentation averages over: the images
    and their mirror images (`flip`), or the images and their one-pixel shifts (`shift`)."""
    if kind == "flip":
        refuse_flips(spec, "--tta=flip")
        return [images, tf.reverse(images, axis=[2])]
    background = model_input_range(spec, standardize)[0]
    return [images] + [transform_images(images, 0.0, 1.0, shift_x, shift_y, background)
                       for shift_x, shift_y in TTA_SHIFTS]


def train_batches(train: Arrays, example_weights: np.ndarray, spec: DatasetSpec, config: TrainConfig,
                  epoch: int, skip_batches: int = 0, replica_shard: tuple[int, int, int] = (0, 1, 1)
                  ) -> tf.data.Dataset:
    """The epoch's shuffled full batches of (images, labels, example weights), after `skip_batches`,
    each prepared by `batch_preparation` (augmentation and mixing, as the flags ask). A batch is one update's examples: with
    --accumulate_steps N, N micro-batches of --batch_size (the train step splits it).

    Under tf.distribute, `replica_shard` is (first replica, replicas fed, replicas in all): every
    global batch is cut into one equal slice per replica, and this pipeline yields its replicas'
    slices, batch after batch, so that the replicas together train on exactly the global batch.
    """
    first_replica, replicas_fed, replicas = replica_shard
    batch_size = update_batch_size(config)
    prepare = batch_preparation(spec, config)
    if isinstance(train[0], ShardedImages):
        return (streaming.train_batches(train, example_weights, config, epoch, skip_batches, replica_shard, batch_size,
                                        prepare)
                .prefetch(PREFETCH_BATCHES).with_options(without_autotuning()))
    gather_images = train[0].gather if isinstance(train[0], FileImages) else partial(tf.gather, tf.constant(train[0]))
    labels, weights = tf.constant(train[1]), tf.constant(example_weights)
    steps = steps_per_epoch(len(train[1]), batch_size)
    order = np.random.default_rng([config.seed, epoch]).permutation(len(train[1]))
    slices = order[: steps * batch_size].reshape(steps, replicas, batch_size // replicas)
    slices = slices[skip_batches:, first_replica:first_replica + replicas_fed]
    # Each slice's augmentation seed: its global step and replica, so reruns draw the same.
    global_steps = np.arange(epoch * steps + skip_batches, (epoch + 1) * steps)
    slice_seeds = global_steps[:, None] * replicas + np.arange(first_replica, first_replica + replicas_fed)
    # Files are decoded in parallel (in order); gathering from memory takes microseconds.
    parallel = {"num_parallel_calls": os.cpu_count() or 1, "deterministic": True} if isinstance(
        train[0], FileImages) else {}
    batches = (tf.data.Dataset.from_tensor_slices((slice_seeds.reshape(-1), slices.reshape(-1, slices.shape[-1])))
               .map(lambda slice_seed, indices: prepare(
                   tf.stack([tf.constant(config.seed, tf.int64), slice_seed]), gather_images(indices),
                   tf.gather(labels, indices), tf.gather(weights, indices)), **parallel))
    if config.data_service:  # Each batch is one split: built whole on a worker, exactly as here.
        batches = batches.apply(tf.data.experimental.service.distribute(
            processing_mode=tf.data.experimental.service.ShardingPolicy.DYNAMIC, service=config.data_service))
    return batches.prefetch(PREFETCH_BATCHES).with_options(without_autotuning())


def batch_preparation(spec: DatasetSpec, config: TrainConfig):
    """prepare(seed, stored images, class ids, example weights) -> one training batch as the step
    reads it: [0, 1] pixels, RandAugment, standardization, the --augment_* transforms, then MixUp
    or CutMix (whose labels are soft targets [B, K]); every draw keyed by `seed` ([2] integers)."""
    background = model_input_range(spec, config.standardize)[0]  # A black pixel.
    mean_pixel = 0.0 if config.standardize else spec.mean
    settings = AugmentSettings.from_config(config)
    mixing = MixSettings.from_config(config)

    def prepare(seed, stored_images, class_ids, example_weights):
        batch = to_unit_pixels(stored_images, config.input_range)
        if config.randaugment_layers:
            batch = randaugment(batch, config.randaugment_layers, config.randaugment_magnitude,
                                tf.random.experimental.stateless_fold_in(seed, RANDAUGMENT_STREAM))
        batch = standardized(batch, spec) if config.standardize else batch
        if settings.active:
            batch = augment(batch, settings, seed, background, mean_pixel)
        labels = format_labels(class_ids, spec.num_classes, config.label_format)
        if not mixing.active:
            return batch, labels, example_weights
        one_hot = labels if labels.shape.rank == 2 else tf.one_hot(labels, spec.num_classes)
        return mix(batch, one_hot, example_weights, mixing,
                   tf.random.experimental.stateless_fold_in(seed, MIXING_STREAM))

    return prepare


def eval_batches(split: Arrays, spec: DatasetSpec, config: TrainConfig, batch_size: int | None = None
                 ) -> tf.data.Dataset:
    """Every example once, in order, never augmented or weighted, in batches of `batch_size`
    (--eval_batch_size if None); cached after the first pass, unless streamed (decoded each pass)."""
    images, labels = split

    def preprocess(batch_images, batch_labels):
        return (to_model_input(batch_images, spec, config.standardize, config.input_range),
                format_labels(batch_labels, spec.num_classes, config.label_format))

    streamed = isinstance(images, StreamedImages)
    examples = streaming.eval_records(images) if streamed else tf.data.Dataset.from_tensor_slices((images, labels))
    batches = examples.batch(batch_size or config.eval_batch_size).map(preprocess)
    return (batches if streamed else batches.cache()).prefetch(PREFETCH_BATCHES).with_options(without_autotuning())
