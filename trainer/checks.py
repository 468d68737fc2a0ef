"""Guards on the stages of training; each failure is a TapeloopError that says how to fix it.

`StageChecks` puts tf.debugging assertions between the stages of a compiled
step (`--checks=off|standard|full`): shapes and dtypes are checked once, when
the step is traced; values on every step. A failed assertion comes back as
TensorFlow's InvalidArgumentError, which `StageChecks.explain` turns into the
paragraph for that check, with what the batch held. `DivergenceGuard` and
`TrainingWarnings` watch the logged numbers from the outer loop.
"""

import dataclasses
import math
import re

import numpy as np
import tensorflow as tf
from absl import logging

from data.streaming import StreamedImages
from settings.errors import TapeloopError, TapeloopWarning

CHECK_PREFIX = "tapeloop-check:"
# The finite-value checks: the tag each assertion carries -> (stage, what is checked). Adding one is
# an entry here and a call of StageChecks._assert_finite where the tensor is.
FINITE_CHECKS = {"logits": ("model output", "the model's logits"), "loss": ("loss", "the loss"),
                 "gradients": ("gradients", "the gradients"), "variables": ("update", "the variables after the update")}
SOFT_TARGET_TOLERANCE = 1e-5  # A row's sum may miss 1 by float32 rounding of lam + (1 - lam).
LABEL_LAYOUTS = {"sparse": "[batch] integer class ids", "one_hot": "[batch, {classes}] one-hot rows"}
LABEL_VALUES = {"sparse": "class ids in [0, {classes})",
                "one_hot": "one-hot rows of {classes} zeros and ones summing to 1"}
NAN_FIX = ("lower --learning_rate or add --warmup_steps or --clip_grad_norm=1.0; if it happens at the "
           "first step, look for NaN in the inputs; --checks=full checks every gradient and variable")


class DivergenceGuard:
    """Stops a run whose training loss turned NaN or Inf, or blew up.

    "Blew up" means above `factor` times the lowest loss seen so far and above
    where training starts: the first step's loss, or the `chance_loss` (a model
    that predicts every class alike) when that is higher. Healthy runs fluctuate
    near their minimum, but do not climb back past where they started. The
    chance loss matters when this process starts from trained weights (a resume,
    a warm start): a first loss of 0.002 would make 0.03 a blow-up.
    `factor=0` checks finiteness only.
    """

    def __init__(self, factor: float, chance_loss: float = 0.0):
        self.factor = factor
        self.chance_loss = chance_loss
        self.first_loss = None
        self.lowest_loss = math.inf

    def check(self, step: int, loss: float, learning_rate: float) -> None:
        """Raises if `loss` (the training loss logged at `step`) shows divergence."""
        if not math.isfinite(loss):
            raise self._diverged(step, loss, learning_rate, f"the loss became {loss}")
        if self.first_loss is None:
            self.first_loss = loss
        start = max(self.first_loss, self.chance_loss)
        blew_up = self.factor and loss > self.factor * self.lowest_loss and loss > start
        if blew_up:
            where = "its first" if start == self.first_loss else "the loss at chance"
            raise self._diverged(step, loss, learning_rate,
                                 f"the loss grew to {loss:.4g}, over {self.factor:g}x its lowest value "
                                 f"({self.lowest_loss:.4g}) and above {where} ({start:.4g})")
        self.lowest_loss = min(self.lowest_loss, loss)

    @staticmethod
    def _diverged(step: int, loss: float, learning_rate: float, what: str) -> TapeloopError:
        return TapeloopError(
            stage="loss", problem=f"training diverged by step {step}: {what}",
            expected="a finite training loss that stays near its running minimum",
            found=f"loss {loss:.4g} at step {step}, with learning rate {learning_rate:.4g}",
            fix=f"lower --learning_rate (try {learning_rate / 10:.2g}), add --warmup_steps (e.g. one "
                "epoch of steps) or --clip_grad_norm=1.0; the run directory keeps its last good "
                "checkpoint, so use a new --run_dir or rerun with the fixed flags")


@dataclasses.dataclass(frozen=True)
class StageChecks:
    """The checks between the stages of a step, for one dataset and --checks level."""

    level: str
    image_shape: tuple[int, int, int]
    value_range: tuple[float, float]
    num_classes: int
    label_format: str = "sparse"  # Or one_hot, or soft: MixUp/CutMix's training targets.
    loss_scaling: bool = False  # float16: overflowing gradients are expected; the optimizer skips them.

    def inputs(self, images: tf.Tensor, labels: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        """Batch after preprocessing: float [B, H, W, C] within the model's value range; valid labels.

        Returns the batch gated on the checks, so that nothing computed from it runs if one fails.
        """
        if self.level == "off":
            return images, labels
        if not images.dtype.is_floating:
            raise self._batch_error(f"images of dtype {images.dtype.name}",
                                    "convert them with data.pipeline.to_model_input (or tf.cast(images, "
                                    "tf.float32) / 255): integer pixels make the convolutions see 0-255")
        if images.shape.rank != 4 or tuple(images.shape[1:]) != self.image_shape:
            raise self._batch_error(f"images of shape {images.shape}",
                                    "reshape flat rows to [B, H, W] and add the channel axis "
                                    "(images[..., tf.newaxis]); data.pipeline.to_model_input does both")
        self._check_label_format(labels)
        low, high = self.value_range
        tolerance = 1e-3 * (high - low)
        pixels = tf.stack([tf.reduce_min(images), tf.reduce_max(images)])
        pixels_fit = (pixels[0] >= low - tolerance) & (pixels[1] <= high + tolerance)
        label_values, labels_fit = self._label_values(labels)
        # The minimum and maximum ride along in the error message, for explain() to report.
        assertions = [tf.debugging.Assert(pixels_fit, [CHECK_PREFIX + "images", pixels]),
                      tf.debugging.Assert(labels_fit, [CHECK_PREFIX + "labels", label_values], summarize=4)]
        with tf.control_dependencies(assertions):
            return tf.identity(images), tf.identity(labels)

    def _label_values(self, labels: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        """(the labels' minimum and maximum, and for target rows the smallest and largest row sum;
        whether the labels are valid for the declared format)."""
        values = [tf.reduce_min(labels), tf.reduce_max(labels)]
        if self.label_format == "sparse":
            values = tf.cast(tf.stack(values), tf.float32)
            return values, (values[0] >= 0) & (values[1] < self.num_classes)
        row_sums = tf.reduce_sum(labels, axis=-1)
        values = tf.cast(tf.stack(values + [tf.reduce_min(row_sums), tf.reduce_max(row_sums)]), tf.float32)
        if self.label_format == "soft":
            return values, (values[0] >= 0) & (tf.reduce_max(tf.abs(row_sums - 1.0)) <= SOFT_TARGET_TOLERANCE)
        return values, tf.reduce_all((labels == 0.0) | (labels == 1.0)) & tf.reduce_all(row_sums == 1.0)

    def _check_label_format(self, labels: tf.Tensor) -> None:
        rank = labels.shape.rank
        expected_rank = 1 if self.label_format == "sparse" else 2
        shape_fits = rank == expected_rank and (rank == 1 or labels.shape[-1] in (None, self.num_classes))
        if shape_fits and (self.label_format == "sparse") == labels.dtype.is_integer:
            return
        found = f"labels of shape {labels.shape} and dtype {labels.dtype.name}"
        if self.label_format == "soft":
            raise TapeloopError(
                stage="labels", problem="the training labels are not the soft targets MixUp/CutMix make",
                expected=f"[batch, {self.num_classes}] float rows of non-negative shares summing to 1",
                found=found, fix="let data.pipeline.train_batches mix the batches (--mixup_alpha, "
                                 "--cutmix_alpha), or mix one-hot rows of the same width yourself")
        other = "one_hot" if self.label_format == "sparse" else "sparse"
        raise TapeloopError(
            stage="labels", problem=f"the labels do not match --label_format={self.label_format}",
            expected=LABEL_LAYOUTS[self.label_format].format(classes=self.num_classes), found=found,
            fix=f"pass --label_format={other} if that is how the labels are stored, or convert them "
                "(tf.argmax for one-hot rows, tf.one_hot for class ids)")

    def outputs(self, logits: tf.Tensor) -> None:
        """Model output: [B, num_classes] finite logits."""
        if self.level == "off":
            return
        if logits.shape.rank != 2 or logits.shape[-1] != self.num_classes:
            raise TapeloopError(
                stage="model output", problem="the model's output does not match the classes",
                expected=f"logits of shape [batch, {self.num_classes}]", found=f"shape {logits.shape}",
                fix=f"end the model with keras.layers.Dense({self.num_classes}) and no activation")
        self._assert_finite(logits, "logits")

    def update(self, total: tf.Tensor, global_norm: tf.Tensor, gradients, variables) -> None:
        """Loss and gradients finite (standard); every gradient and updated variable finite (full)."""
        if self.level == "off":
            return
        self._assert_finite(total, "loss")
        if not self.loss_scaling:
            self._assert_finite(global_norm, "gradients")
        if self.level == "full":
            for gradient in gradients:
                if gradient is not None and not self.loss_scaling:
                    self._assert_finite(gradient, "gradients")
            for variable in variables:
                self._assert_finite(variable, "variables")

    @staticmethod
    def _assert_finite(tensor, check: str) -> None:
        """A finite-value assertion tagged with one of FINITE_CHECKS, which explain() reads back."""
        assert check in FINITE_CHECKS, f"add {check!r} to FINITE_CHECKS"
        tf.debugging.assert_all_finite(tensor, CHECK_PREFIX + check)

    def explain(self, error: tf.errors.InvalidArgumentError) -> TapeloopError | None:
        """The paragraph for a failed check of this class, or None if `error` is not one."""
        match = re.search(re.escape(CHECK_PREFIX) + r"(\w+)\]? *(?:\[\[?([^\]]*)\]?\])?", error.message)
        if not match:
            return None
        check, values = match.group(1), (match.group(2) or "").split()
        smallest, largest = (f"{float(value):.4g}" for value in (values + ["nan", "nan"])[:2])
        if check == "images":
            return self._batch_error(
                f"pixel values from {smallest} to {largest}",
                "scale the pixels as the pipeline does (data.pipeline.to_model_input): values left at "
                "0-255, or standardized twice, are the classic cause of a model stuck at low accuracy")
        if check == "labels":
            return self._labels_error(smallest, largest, values)
        stage, what = FINITE_CHECKS[check]
        return TapeloopError(stage=stage, problem=f"{what} are not finite", expected="finite values",
                             found="NaN or Inf", fix=NAN_FIX)

    def _labels_error(self, smallest: str, largest: str, values: list[str]) -> TapeloopError:
        found = f"label values from {smallest} to {largest}"
        if self.label_format != "sparse" and len(values) == 4:
            found += f", rows summing to {float(values[2]):.6g} to {float(values[3]):.6g}"
        if self.label_format == "soft":
            return TapeloopError(
                stage="labels", problem="the batch's soft targets are not valid for the loss",
                expected=f"rows of {self.num_classes} non-negative shares summing to 1 (within "
                         f"{SOFT_TARGET_TOLERANCE:g})", found=found,
                fix="mix one-hot rows with weights lam and 1 - lam in [0, 1], as data.mixing.mix does")
        return TapeloopError(
            stage="labels", problem="the batch's labels are not valid for the loss",
            expected=LABEL_VALUES[self.label_format].format(classes=self.num_classes), found=found,
            fix="check the number of classes (1-based labels need 1 subtracting) and --label_format")

    def _batch_error(self, found: str, fix: str) -> TapeloopError:
        low, high = self.value_range
        return TapeloopError(
            stage="batch", problem="the batch is not what the model expects",
            expected=f"float32 images of shape [batch, {', '.join(map(str, self.image_shape))}] with "
                     f"values in [{low:.3g}, {high:.3g}]",
            found=found, fix=fix)


WIDE_ACCURACY_GAP = 0.1  # Validation this far below training is worth a warning.
GAP_WARNINGS = frozenset({"batch-norm statistics", "weight average lags", "overfitting"})


class TrainingWarnings:
    """Likely mistakes seen in the logged numbers; each is logged once, as a `tapeloop: warning:`."""

    def __init__(self, num_classes: int):
        self.num_classes = num_classes
        self.issued: list[TapeloopWarning] = []
        self._kinds = set()

    def _warn(self, kind: str, warning: TapeloopWarning) -> None:
        if kind not in self._kinds:
            self._kinds.add(kind)
            self.issued.append(warning)
            logging.warning(warning.paragraph())

    def first_outputs(self, logits: np.ndarray) -> None:
        """Warns if the model's outputs look like probabilities rather than logits."""
        logits = np.asarray(logits, dtype=np.float32)
        if logits.min() >= 0 and logits.max() <= 1 and np.allclose(logits.sum(axis=1), 1, atol=1e-3):
            self._warn("probabilities", TapeloopWarning(
                stage="model output", problem="the model's outputs look like probabilities, not logits",
                expected="unnormalized logits (tapeloop's losses apply the softmax themselves)",
                found=f"every row in [0, 1] and summing to 1 (first row sums to {logits[0].sum():.4f})",
                fix="remove the softmax (activation='softmax') from the model's last layer: a softmax "
                    "before a from-logits loss squashes the gradients and stalls training"))

    def end_of_first_epoch(self, first_loss: float, loss: float) -> None:
        """Warns if the training loss has hardly fallen from the first step by the end of epoch 1."""
        if loss > 0.9 * first_loss:
            self._warn("loss not falling", TapeloopWarning(
                stage="training", problem="the training loss is not falling after the first epoch",
                expected=f"well below the first step's loss {first_loss:.4f}",
                found=f"{loss:.4f} at the end of epoch 1 (chance level for cross-entropy is "
                      f"log({self.num_classes}) = {math.log(self.num_classes):.4f})",
                fix="if it sits near chance level, the labels no longer match the images (shuffle "
                    "images and labels together, as one dataset); otherwise raise --learning_rate or "
                    "check the loss and model"))

    @staticmethod
    def accuracy_gap_is_wide(train_accuracy: float, eval_accuracy: float) -> bool:
        """Whether validation accuracy trails training accuracy by over WIDE_ACCURACY_GAP."""
        return train_accuracy - eval_accuracy > WIDE_ACCURACY_GAP

    def gap_to_explain(self, train_accuracy: float, eval_accuracy: float) -> bool:
        """A wide gap, and no warning about one yet (working out its cause costs an evaluation)."""
        return self.accuracy_gap_is_wide(train_accuracy, eval_accuracy) and not self._kinds & GAP_WARNINGS

    def accuracy_gap(self, train_accuracy: float, eval_accuracy: float, precise_bn_batches: int,
                     precise_bn_accuracy: float | None = None, raw_weights_accuracy: float | None = None) -> None:
        """Warns about a wide train/validation gap, naming its cause: batch-norm statistics that lag
        the weights if re-estimating them closes half the gap or more, else a lagging weight average
        if the raw weights score close to training, else overfitting."""
        found = f"training {train_accuracy:.4f}, validation {eval_accuracy:.4f}"
        half_gap = (train_accuracy - eval_accuracy) / 2
        if precise_bn_accuracy is not None and precise_bn_accuracy - eval_accuracy >= half_gap:
            self._warn("batch-norm statistics", TapeloopWarning(
                stage="eval", problem="evaluation is hurt by batch-norm statistics that lag the weights (this "
                "is not overfitting)", expected="validation accuracy close to training accuracy",
                found=f"{found} with the moving averages, {precise_bn_accuracy:.4f} with statistics "
                      f"re-estimated on {precise_bn_batches} training batches",
                fix=f"pass --precise_bn_batches={precise_bn_batches} (re-estimates them before every evaluation "
                    "and the export), or train for more epochs"))
        elif raw_weights_accuracy is not None and not self.accuracy_gap_is_wide(train_accuracy, raw_weights_accuracy):
            self._warn("weight average lags", TapeloopWarning(
                stage="eval", problem="the --ema_decay weight average lags the weights (this is not overfitting)",
                expected="validation accuracy close to training accuracy",
                found=f"{found} with the averaged weights, {raw_weights_accuracy:.4f} with the raw weights",
                fix="lower --ema_decay (the average spans about 1 / (1 - decay) steps) or train for more steps"))
        else:
            ruled_out = "; re-estimated batch-norm statistics do not close it" if precise_bn_accuracy else ""
            self._warn("overfitting", TapeloopWarning(
                stage="eval", problem="the model is overfitting",
                expected="validation accuracy close to training accuracy", found=found + ruled_out,
                fix="add --dropout, augmentation (--augment_*, --randaugment_layers, --cutmix_alpha, "
                    "--mixup_alpha) or --weight_decay (with adamw), or stop earlier with --early_stopping_patience"))


def check_unaugmented(batches, stored_images: np.ndarray, preprocess) -> None:
    """Eval stage: the first evaluation batch must be its stored images, preprocessed and nothing more."""
    images = next(iter(batches))[0].numpy()
    first = stored_images[: len(images)]
    expected = np.asarray(preprocess(first.decoded() if isinstance(first, StreamedImages) else first))
    difference = float(np.max(np.abs(images - expected)))
    if difference > 1e-4:
        raise TapeloopError(
            stage="eval", problem="the evaluation batches are not the stored images",
            expected="evaluation images that are only normalized, never augmented, so that scores are "
                     "comparable from run to run",
            found=f"the first batch differs from its stored images by up to {difference:.4g}",
            fix="apply augmentation and other random transforms in data.pipeline.train_batches only; "
                "data.pipeline.eval_batches must stay deterministic")
