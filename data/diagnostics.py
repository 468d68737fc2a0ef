"""Pre-flight report on a run's data, on the host, before the first step.

Problems that would make every step wrong (NaN pixels, pixels outside the
stated range, labels outside the classes, images that do not fit the model)
raise a TapeloopError; likely mistakes that still train (class imbalance left
unweighted, evaluation images that are also training images) become
TapeloopWarnings in the report.
"""

import dataclasses
import math

import numpy as np

from data.catalog import DatasetSpec
from data.pipeline import PreparedData
from data.streaming import SAMPLE_EXAMPLES, StreamedImages
from settings.config import TrainConfig
from settings.errors import TapeloopError, TapeloopWarning

IMBALANCE_WARNING_RATIO = 10.0
# One validation example moving the selection accuracy by more than this (0.5 points: a split under
# 200 examples) is coarser than the gains between late checkpoints.
SELECTION_RESOLUTION = 0.005
RANGE_TOLERANCE = 1e-3


@dataclasses.dataclass
class Report:
    """What the pre-flight check found: report lines, and the warnings among them."""

    lines: list[str]
    warnings: list[TapeloopWarning]

    def text(self) -> str:
        return "\n".join(self.lines + [warning.paragraph() for warning in self.warnings])


def preflight(data: PreparedData, config: TrainConfig) -> Report:
    """Checks every split of `data`; raises TapeloopError on data no model could learn from."""
    spec = data.spec
    splits = {"train": data.train, "validation": data.validation, "test": data.test}
    splits = {name: arrays for name, arrays in splits.items() if arrays is not None}
    pixels = {name: _checked_pixels(images) for name, (images, _) in splits.items()}
    for name, (_, labels) in splits.items():
        _check_images(name, pixels[name], spec, config.input_range)
        _check_labels(name, labels, spec)
    sizes = ", ".join(f"{name} {len(labels)}" for name, (_, labels) in splits.items())
    images = pixels["train"]
    lines = [f"{spec.name}: {sizes} examples; images {images.dtype} {list(images.shape[1:])}, "
             f"values {images.min()} to {images.max()}; model input {list(spec.image_shape)}"]
    streamed = isinstance(data.train[0], StreamedImages)
    if streamed:
        lines.append(f"streamed from disk: pixels checked on a sample of up to {SAMPLE_EXAMPLES} examples per split "
                     "(the first records of every shard, or evenly spaced files); labels checked in full; duplicates "
                     "not sought")
    counts = np.bincount(data.train[1], minlength=spec.num_classes)
    lines.append("training examples per class: " + ", ".join(
        f"{name} {count}" for name, count in zip(spec.class_names, counts)))
    _refuse_single_class(counts, spec)
    warnings = [warning for warning in (_imbalance(counts, spec, config), *_classes_missing(splits, spec),
                                        *([] if streamed else _duplicates(data.train[0], splits)),
                                        validation_too_coarse(data.validation, config)) if warning]
    return Report(lines=lines, warnings=warnings)


def _checked_pixels(images) -> np.ndarray:
    """The pixels the checks read: the array, or a streamed split's sample, decoded."""
    return images.sample().decoded() if isinstance(images, StreamedImages) else images


def _check_images(split: str, images: np.ndarray, spec: DatasetSpec, input_range) -> None:
    if images.shape[1:] not in (spec.stored_shape, spec.image_shape):
        raise TapeloopError(
            stage="raw data", problem=f"the {split} images do not fit the model",
            expected=f"images of shape {list(spec.stored_shape)} or {list(spec.image_shape)}",
            found=f"an array of shape {list(images.shape)}",
            fix=f"resize every image to {spec.image_shape[0]}x{spec.image_shape[1]} (tf.image.resize) and "
                "reshape flattened rows to [N, H, W] before training")
    if np.issubdtype(images.dtype, np.floating):
        bad = np.count_nonzero(~np.isfinite(images))
        if bad:
            raise TapeloopError(
                stage="raw data", problem=f"the {split} images contain NaN or Inf",
                expected="finite pixel values", found=f"{bad} NaN or Inf values",
                fix="repair or drop those images (np.isfinite finds them) before training")
        low, high = input_range
        tolerance = RANGE_TOLERANCE * (high - low)
        smallest, largest = images.min(), images.max()
        if smallest < low - tolerance or largest > high + tolerance:
            stated = "0,255" if largest > 1.5 else f"{smallest:g},{largest:g}"
            raise TapeloopError(
                stage="raw data", problem=f"the {split} images are outside --input_range={low:g},{high:g}",
                expected=f"float pixel values in [{low:g}, {high:g}], which the pipeline maps to [0, 1]",
                found=f"values from {smallest:g} to {largest:g}",
                fix=f"pass --input_range={stated} to state how the pixels are stored (0-255 floats are "
                    "the classic unnormalized-input mistake), or store them as uint8")
    elif not np.issubdtype(images.dtype, np.integer) or images.min() < 0 or images.max() > 255:
        raise TapeloopError(
            stage="raw data", problem=f"the {split} images are not 8-bit pixels",
            expected="uint8 pixels (or integers in [0, 255]), or floats with --input_range",
            found=f"dtype {images.dtype}, values from {images.min()} to {images.max()}",
            fix="store the images as uint8, or as float32 with --input_range=LOW,HIGH")


def _check_labels(split: str, labels: np.ndarray, spec: DatasetSpec) -> None:
    if labels.ndim != 1 or not np.issubdtype(labels.dtype, np.integer):
        raise TapeloopError(
            stage="raw data", problem=f"the {split} labels are not class ids",
            expected="a 1-D array of integer class ids, as datasets store them",
            found=f"dtype {labels.dtype}, shape {list(labels.shape)}",
            fix="store class ids (np.argmax turns one-hot rows into ids); --label_format=one_hot makes "
                "the pipeline hand the loss one-hot rows")
    outside = (labels < 0) | (labels >= spec.num_classes)
    if np.any(outside):
        raise TapeloopError(
            stage="raw data", problem=f"{np.count_nonzero(outside)} {split} labels are outside the classes",
            expected=f"class ids in [0, {spec.num_classes}) for the {spec.num_classes} classes of {spec.name}",
            found=f"labels from {labels.min()} to {labels.max()}",
            fix="check the dataset's number of classes; 1-based labels need 1 subtracting, and a "
                "dataset with more classes needs its own catalog entry")


def _refuse_single_class(counts: np.ndarray, spec: DatasetSpec) -> None:
    """Training data of one class "learns" to 100% by always answering it: no model to speak of."""
    present = [name for name, count in zip(spec.class_names, counts) if count]
    if len(present) < 2:
        raise TapeloopError(
            stage="raw data", problem="the training split holds examples of fewer than two classes",
            expected="examples of at least two classes (a classifier needs something to tell apart)",
            found=f"only class {', '.join(present) or 'none'} among {spec.num_classes} ({sum(counts)} examples)",
            fix="check the labels (all zeros is a common reading mistake) or the class folders")


def _classes_missing(splits: dict, spec: DatasetSpec) -> list[TapeloopWarning]:
    """Classes with examples in one split and none in another: never learnt, or never measured."""
    present = {name: set(np.unique(labels).tolist()) for name, (_, labels) in splits.items()}
    warnings = []
    for split, classes in present.items():
        lacking = sorted(set().union(*present.values()) - classes) if split != "validation" else []
        if not lacking:
            continue
        names = ", ".join(spec.class_names[class_id] for class_id in lacking[:10])
        consequence = ("the model can never learn them, so their evaluation examples all count as errors"
                       if split == "train" else "their recall cannot be measured on it")
        warnings.append(TapeloopWarning(
            stage="raw data", problem=f"{len(lacking)} classes have examples in another split but none in {split}",
            expected="every class in every split", found=f"no {split} examples of {names}",
            fix=f"{consequence}: move some examples over, or remove the class (an empty class folder is "
                "still a class)"))
    unused = [spec.class_names[class_id] for class_id in range(spec.num_classes)
              if not any(class_id in classes for classes in present.values())]
    if unused and spec.format == "user":  # A catalog fixes its classes; a user's folders or names may not.
        warnings.append(TapeloopWarning(
            stage="raw data", problem=f"{len(unused)} classes have no examples in any split",
            expected="examples of every class", found=f"no examples of {', '.join(unused[:10])}",
            fix="remove the empty class folders (or class names) so the model does not reserve outputs for them"))
    return warnings


def _imbalance(counts: np.ndarray, spec: DatasetSpec, config: TrainConfig) -> TapeloopWarning | None:
    present = counts[counts > 0]
    ratio = present.max() / present.min()
    if ratio < IMBALANCE_WARNING_RATIO or config.class_weights != "none":
        return None
    rarest = spec.class_names[int(np.argmin(np.where(counts > 0, counts, counts.max() + 1)))]
    return TapeloopWarning(
        stage="raw data", problem=f"the training classes are imbalanced {ratio:.0f}:1 and the loss is unweighted",
        expected=f"at most {IMBALANCE_WARNING_RATIO:.0f}:1 between the largest and smallest class, or class weights",
        found=f"{present.max()} examples of the largest class, {present.min()} of the smallest ({rarest})",
        fix="pass --class_weights=balanced (or a focal loss) so the rare classes count; judge the "
            "model by eval balanced_accuracy and per-class recall, not accuracy")


def validation_too_coarse(validation, config: TrainConfig) -> TapeloopWarning | None:
    """A validation split so small that one example moves the selection accuracy by more than
    SELECTION_RESOLUTION: it cannot rank the checkpoints of a run's last epochs."""
    if validation is None or config.early_stopping_metric == "loss":
        return None
    counts = np.bincount(validation[1])
    counts = counts[counts > 0]
    balanced = config.early_stopping_metric == "balanced_accuracy"
    one_example = 1 / (len(counts) * counts.min()) if balanced else 1 / counts.sum()
    if one_example <= SELECTION_RESOLUTION:
        return None
    smallest = f", {counts.min()} in its smallest class" if balanced else ""
    return TapeloopWarning(
        stage="eval", problem=f"the validation split is too small to pick the best checkpoint by "
                              f"{config.early_stopping_metric}",
        expected=f"one example moving it by at most {SELECTION_RESOLUTION * 100:g} points (late epochs gain less "
                 "than a point)",
        found=f"{counts.sum()} validation examples{smallest}: one example is {one_example * 100:.2f} points, so "
              "many epochs tie or swap by chance (ties go to the lower validation loss)",
        fix=_larger_split_or_loss(config.validation_split * one_example / SELECTION_RESOLUTION))


def _larger_split_or_loss(needed_split: float) -> str:
    loss = "pick the best by --early_stopping_metric=loss, which every example moves a little"
    if needed_split > 0.5:
        return f"the dataset is too small for a split that fine: {loss}"
    return f"hold out more (--validation_split={math.ceil(needed_split * 100) / 100:g}) or {loss}"


def _duplicates(train_images: np.ndarray, splits: dict) -> list[TapeloopWarning]:
    seen = {image.tobytes() for image in train_images}
    warnings = []
    for name in ("validation", "test"):
        if name not in splits:
            continue
        count = sum(image.tobytes() in seen for image in splits[name][0])
        if count:
            warnings.append(TapeloopWarning(
                stage="raw data", problem=f"{count} {name} images also appear in the training split",
                expected="evaluation images the model has not trained on",
                found=f"{count} of {len(splits[name][0])} exact duplicates",
                fix=f"drop them from one of the splits; until then the {name} accuracy is optimistic"))
    return warnings
