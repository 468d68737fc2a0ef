"""What a finished run's curves say about why its accuracy is what it is: one detector per cause,
each a pure function of logged numbers that returns a Finding (or None), and their ranking.

Each finding carries its evidence (the numbers, steps and epochs it rests on), the flags to try,
and `cost`: the accuracy (fraction) the cause likely costs, an estimate from the same numbers,
which orders the report. Severity follows the cost: major from 2 points, moderate from 0.5, else
minor; findings that describe the model rather than a cause of lost accuracy (its confusions,
its calibration) have no cost, severity "info", and come last.
"""

import dataclasses
import math

import numpy as np

from settings.arguments import flag_lines

KINDS = ("batchnorm_statistics", "overfitting", "underfitting", "learning_rate_high", "learning_rate_low",
         "too_few_epochs", "capacity", "checkpoint_selection", "label_issues", "leakage", "class_confusion", "class_imbalance",
         "calibration")
MAJOR_COST, MODERATE_COST = 0.02, 0.005
# Rates below these rarely train a network in a few epochs (Adam's usual range is 1e-4 to 3e-3, SGD's 0.01 to 0.5).
LOWEST_USUAL_RATE = {"adam": 1e-5, "adamw": 1e-5, "sgd": 1e-3}
USUAL_RATES = {"adam": (1e-4, 3e-3), "adamw": (1e-4, 3e-3), "sgd": (0.01, 0.5)}
CLEARLY_LOWER_LOSS = 1.25  # A kept checkpoint's validation loss this many times the last one's.
CLEAR_EXAMPLES = 3  # Validation examples (and at least 0.3 points) an accuracy gap needs to be clear.
BLOW_UP = 3.0  # A logged loss this many times chance level is a near-divergence (initial losses are below 2x).
CURVE_LOGS_NEEDED = 8  # Training logs below which most curve detectors say nothing.
STILL_FALLING = 0.1  # A loss that fell this share over the second half of a run had further to go.


@dataclasses.dataclass(frozen=True)
class Finding:
    kind: str
    cost: float | None  # Accuracy (fraction) it likely costs; orders the report. None: descriptive.
    evidence: str
    suggestion: str
    flags: dict | None = None  # The train.py flag changes that try the fix; None: no flag fixes it.

    @property
    def severity(self) -> str:
        if self.cost is None:
            return "info"
        return "major" if self.cost >= MAJOR_COST else "moderate" if self.cost >= MODERATE_COST else "minor"

    def as_json(self) -> dict:
        return {"kind": self.kind, "severity": self.severity,
                "cost": None if self.cost is None else round(self.cost, 4),
                "evidence": self.evidence, "suggestion": self.suggestion, "flags": self.flags}


def ranked(findings) -> list[Finding]:
    """The findings that were made, costliest first, the descriptive ones last."""
    return sorted((finding for finding in findings if finding),
                  key=lambda finding: 1.0 if finding.cost is None else -finding.cost)


@dataclasses.dataclass(frozen=True)
class Curves:
    """A run's logged numbers: training scalars by step, validation scalars by epoch (may be empty)."""

    steps: np.ndarray  # Steps of the training logs.
    train_loss: np.ndarray
    train_accuracy: np.ndarray
    learning_rate: np.ndarray
    steps_per_epoch: int
    eval_epochs: np.ndarray  # 1-based epochs of the validation evaluations.
    eval_loss: np.ndarray
    eval_accuracy: np.ndarray
    num_classes: int
    optimizer: str = "adam"
    settings: dict = dataclasses.field(default_factory=dict)  # The run's flags (TrainConfig's fields).

    @property
    def chance_loss(self) -> float:
        return math.log(self.num_classes)

    def final_train_accuracy(self) -> float:
        """Mean over the last tenth of the logs (at least one): one log is noisy."""
        return float(np.mean(self.train_accuracy[-max(1, len(self.train_accuracy) // 10):]))


def significant(value: float) -> float:
    """A flag value to three significant digits, as a person would write it."""
    return float(f"{value:.3g}")


def wider(settings: dict) -> dict | None:
    """Twice the run's --model_width (None when the run's flags are not known)."""
    return {"model_width": 2 * settings["model_width"]} if "model_width" in settings else None


def longer(settings: dict, epochs: int) -> dict:
    """Twice `epochs`, and twice a --max_steps cap, which would otherwise stop the longer run where this one stopped."""
    return {"epochs": 2 * epochs, **({"max_steps": 2 * settings["max_steps"]} if settings.get("max_steps") else {})}


def stronger_regularization(settings: dict) -> dict | None:
    """The next regularization the run does not use yet: shifts and rotations, then RandAugment, then
    more dropout, then decoupled weight decay (None when the run's flags are not known)."""
    if not settings:
        return None
    if not (settings["augment_shift"] or settings["augment_rotation"]):
        return {"augment_shift": 0.1, "augment_rotation": 10.0}
    if not settings["randaugment_layers"]:
        return {"randaugment_layers": 2}
    if settings["dropout"] < 0.5:
        return {"dropout": significant(min(0.5, settings["dropout"] + 0.2))}
    if settings["optimizer"] != "adamw":
        return {"optimizer": "adamw", "weight_decay": 5e-4}
    return {"weight_decay": significant(3 * max(settings["weight_decay"], 1e-4))}


def tail_fall(losses: np.ndarray, fraction: float = 0.25) -> float:
    """How much the loss fell over the last `fraction` of the logs: the mean of that window's first
    half against the mean of its second half, relative to the first."""
    window = losses[-max(2, int(len(losses) * fraction)):]
    half = len(window) // 2
    start, end = float(np.mean(window[:half])), float(np.mean(window[half:]))
    return (start - end) / max(start, 1e-8)


def overfitting(curves: Curves) -> Finding | None:
    """Training accuracy well above validation, with the validation loss rising from its minimum or
    the training set learnt by heart (training accuracy 99% or more)."""
    if len(curves.eval_loss) < 3:
        return None
    best = int(np.argmin(curves.eval_loss))
    rise = float(curves.eval_loss[-1] / curves.eval_loss[best] - 1)
    train_accuracy = curves.final_train_accuracy()
    gap = train_accuracy - float(curves.eval_accuracy[-1])
    rising = rise >= 0.1 and best < len(curves.eval_loss) - 1 and gap >= 0.01
    memorized = train_accuracy >= 0.99 and gap >= 0.02
    if not (rising or memorized):
        return None
    loss_story = (f"validation loss was lowest at epoch {curves.eval_epochs[best]} ({curves.eval_loss[best]:.4f}) and "
                  f"rose {rise:.0%} to {curves.eval_loss[-1]:.4f} by epoch {curves.eval_epochs[-1]}" if rising else
                  f"the model has learnt its training set ({train_accuracy:.4f}) by epoch {curves.eval_epochs[-1]}")
    return Finding(
        "overfitting", cost=gap,
        evidence=f"{loss_story}, and training accuracy ({train_accuracy:.4f}) is {gap * 100:.1f} points above "
                 f"validation ({curves.eval_accuracy[-1]:.4f})",
        suggestion="regularize: --augment_shift=0.1 --augment_rotation=10 (--augment_flip for classes a mirror "
                   "keeps), stronger augmentation (--randaugment_layers=2, --cutmix_alpha=1.0 or "
                   "--mixup_alpha=0.2), --dropout=0.5, --optimizer=adamw --weight_decay=5e-4; or keep the best "
                   "epoch with --early_stopping_patience=3; more training data helps most",
        flags=stronger_regularization(curves.settings))


def underfitting(curves: Curves) -> Finding | None:
    """Training accuracy itself low, with a training loss that has stopped falling."""
    accuracy = curves.final_train_accuracy()
    if accuracy >= 0.9 or len(curves.train_loss) < 4:
        return None
    flat = tail_fall(curves.train_loss) < 0.05
    high = curves.train_loss[-1] > 0.5 * curves.chance_loss
    if not (flat or high):
        return None
    return Finding(
        "underfitting", cost=min(1 - accuracy, 0.9),
        evidence=f"training accuracy is {accuracy:.4f} at step {curves.steps[-1]}; the training loss "
                 f"({curves.train_loss[-1]:.4f}, chance level {curves.chance_loss:.4f}) "
                 + ("has stopped falling" if flat else "is still high"),
        suggestion="the model does not fit its own training data: check --learning_rate first (see the learning "
                   "rate findings), then a larger model (--model=cnn, --model_width, --model_depth) and less "
                   "regularization (--dropout, --weight_decay, augmentation and mixing)",
        flags=wider(curves.settings))


def learning_rate_low(curves: Curves) -> Finding | None:
    """A rate below the optimizer's usual range with the loss still high, or a slow, steady fall still
    going at the end at an undecayed rate: either way the loss had further to go."""
    losses, rate = curves.train_loss, float(curves.learning_rate.max())
    if len(losses) < CURVE_LOGS_NEEDED or curves.learning_rate[-1] < 0.5 * rate:
        return None  # A schedule that decays the rate explains a fall at the end by itself.
    changes = np.diff(losses)
    steadiness = float(-changes.sum() / max(np.abs(changes).sum(), 1e-12))  # 1: every log below the last.
    total_fall = float((losses[0] - losses[-1]) / losses[0])
    still_falling = tail_fall(losses)
    unusual = rate < LOWEST_USUAL_RATE.get(curves.optimizer, 0.0) and losses[-1] > 0.2 * curves.chance_loss
    slow = steadiness >= 0.5 and still_falling >= 0.005 and total_fall < 0.5
    if not (unusual or slow):
        return None
    return Finding(  # Costs what the run did not reach, and a little more than underfitting, its symptom.
        "learning_rate_low", cost=min(1 - curves.final_train_accuracy(), 0.9) + 0.001,
        evidence=(f"the learning rate {rate:.3g} is below {curves.optimizer}'s usual range (from "
                  f"{LOWEST_USUAL_RATE.get(curves.optimizer, 0.0):.0e}), " if unusual else "")
        + f"the training loss fell {total_fall:.0%} from {losses[0]:.4f} to {losses[-1]:.4f} over "
          f"{curves.steps[-1]} steps ({still_falling:.1%} over the last quarter)",
        suggestion=f"raise --learning_rate about tenfold, into {curves.optimizer}'s usual range at least (to "
                   f"{raised_rate(rate, curves.optimizer):.3g}), and compare the first epoch's loss; "
                   "--lr_schedule=onecycle finds a good range by itself",
        flags={"learning_rate": raised_rate(rate, curves.optimizer)})


def raised_rate(rate: float, optimizer: str) -> float:
    """Ten times `rate`, and at least the middle (geometric) of the optimizer's usual range: from a rate
    far below it, tenfold still lands at its bottom (Adam from 1e-5: 1e-4, where 6,000 MNIST digits
    reach 94% in 10 epochs against 97% at 1e-3)."""
    low, high = USUAL_RATES.get(optimizer, (rate, rate))
    return significant(max(rate * 10, math.sqrt(low * high)))


def learning_rate_high(curves: Curves) -> Finding | None:
    """Loss spikes after the first epoch (logged losses far above the best before them), or a
    collapse: the loss pinned at chance level, the mark of a model that outputs the same for
    every image, as a too-large step leaves it (dead ReLUs, saturated logits)."""
    losses = curves.train_loss
    best_so_far = np.minimum.accumulate(losses)
    spikes = np.flatnonzero((curves.steps > curves.steps_per_epoch) & (losses > 1.5 * best_so_far)
                            & (losses - best_so_far > 0.1))
    tail = losses[-max(2, len(losses) // 4):]
    collapsed = len(losses) >= 4 and bool(np.all(np.abs(tail / curves.chance_loss - 1) < 0.01))
    blew_up = np.flatnonzero(losses > BLOW_UP * curves.chance_loss)
    if len(spikes) < 2 and not collapsed and not len(blew_up):
        return None
    if len(blew_up) and not collapsed:
        evidence = (f"the training loss reached {losses[blew_up].max():.4f} by step {curves.steps[blew_up[0]]}, "
                    f"{losses[blew_up].max() / curves.chance_loss:.0f} times chance level: a near-divergence")
    elif collapsed:
        evidence = (f"the training loss sits at chance level ({curves.chance_loss:.4f}) from step "
                    f"{curves.steps[-len(tail)]} on ({tail[-1]:.4f} at step {curves.steps[-1]}), training accuracy "
                    f"{curves.final_train_accuracy():.4f}: the model predicts the same for every image")
    else:
        worst = int(spikes[np.argmax(losses[spikes] / best_so_far[spikes])])
        evidence = (f"{len(spikes)} logged training losses after epoch 1 were over 1.5 times the best before them "
                    f"(worst: {losses[worst]:.4f} at step {curves.steps[worst]}, best until then "
                    f"{best_so_far[worst]:.4f})")
    lowering = 10 if collapsed or len(blew_up) else 3  # A collapse or a near-divergence needs more than spikes.
    return Finding(  # Costs what the run did not reach, and a little more than underfitting, its symptom.
        "learning_rate_high", cost=min(1 - curves.final_train_accuracy(), 0.9) + 0.001 * max(len(spikes), 1),
        evidence=f"{evidence}, at learning rate {curves.learning_rate.max():.3g}",
        suggestion=f"lower --learning_rate three to ten times (to {curves.learning_rate.max() / 3:.3g} or less), "
                   "or add --warmup_steps=500, --clip_grad_norm=1 or a decay (--lr_schedule=cosine)",
        flags={"learning_rate": significant(curves.learning_rate.max() / lowering)})


def too_few_epochs(curves: Curves) -> Finding | None:
    """Validation accuracy still rising at the last epoch, with no sign of overfitting; or, in a run
    with one evaluation (one epoch: no validation curve), the training loss still falling fast at its
    end at an undecayed rate."""
    if len(curves.eval_accuracy) < 2:
        return still_falling_after_one_epoch(curves)
    if np.argmax(curves.eval_accuracy) != len(curves.eval_accuracy) - 1:
        return None
    gain = float(curves.eval_accuracy[-1] - curves.eval_accuracy[-2])
    if gain < 0.001 or curves.eval_loss[-1] > curves.eval_loss.min() * 1.02:
        return None
    return Finding(
        "too_few_epochs", cost=gain,
        evidence=f"validation accuracy was still rising at the last epoch ({curves.eval_accuracy[-2]:.4f} -> "
                 f"{curves.eval_accuracy[-1]:.4f} at epoch {curves.eval_epochs[-1]}), validation loss at its lowest",
        suggestion=f"train longer: {flag_lines(longer(curves.settings, int(curves.eval_epochs[-1])))} (with a "
                   "decaying schedule, e.g. --lr_schedule=cosine, the last epochs gain most)",
        flags=longer(curves.settings, int(curves.eval_epochs[-1])))


def still_falling_after_one_epoch(curves: Curves) -> Finding | None:
    """too_few_epochs for a run too short for a validation curve: the training loss fell by a tenth or
    more over the second half of its logs, at a rate no schedule had decayed."""
    epochs = max(1, round(int(curves.steps[-1]) / curves.steps_per_epoch))
    if (len(curves.train_loss) < CURVE_LOGS_NEEDED or curves.learning_rate[-1] < 0.5 * curves.learning_rate.max()
            or tail_fall(curves.train_loss, 0.5) < STILL_FALLING):
        return None
    return Finding(
        "too_few_epochs", cost=(1 - curves.final_train_accuracy()) / 2,
        evidence=f"a run of {epochs} epoch(s) has no validation curve to judge, and its training loss was still "
                 f"falling fast at the end ({tail_fall(curves.train_loss, 0.5):.0%} over the second half of the logs, "
                 f"to {curves.train_loss[-1]:.4f}; training accuracy {curves.final_train_accuracy():.4f})",
        suggestion=f"train longer: {flag_lines(longer(curves.settings, epochs))}, and judge the validation curve",
        flags=longer(curves.settings, epochs))


def capacity(curves: Curves) -> Finding | None:
    """Training and validation accuracy equal and flat below 99%: the model cannot fit more."""
    accuracy = curves.final_train_accuracy()
    if (len(curves.eval_accuracy) < 3 or accuracy >= 0.99 or accuracy < 0.5
            or len(curves.train_loss) < CURVE_LOGS_NEEDED):
        return None
    gap = accuracy - float(curves.eval_accuracy[-1])
    recent_gain = float(curves.eval_accuracy[-1] - curves.eval_accuracy[-max(2, len(curves.eval_accuracy) // 3)])
    if abs(gap) > 0.02 or tail_fall(curves.train_loss) > 0.05 or recent_gain > 0.002:
        return None  # Still learning: too_few_epochs speaks for that.
    return Finding(
        "capacity", cost=(1 - accuracy) / 2,
        evidence=f"training accuracy has levelled off at {accuracy:.4f}, no better than validation "
                 f"({curves.eval_accuracy[-1]:.4f}): the model fits its training data no better than unseen data",
        suggestion="a larger model: --model=cnn, a higher --model_width (x2) or --model_depth (+1); then less "
                   "regularization (--dropout, --weight_decay)",
        flags=wider(curves.settings))


def checkpoint_selection(curves: Curves, metric: str, kept_epoch: int, validation_examples: int) -> Finding | None:
    """The kept checkpoint (best/, chosen by `metric`) clearly below the last one on the same split by
    the other measure: a much higher loss with the accuracy within one example, or (chosen by
    loss) a clearly lower accuracy."""
    kept = np.flatnonzero(curves.eval_epochs == kept_epoch)
    if not len(kept) or kept[0] == len(curves.eval_epochs) - 1:
        return None
    kept, last_epoch = int(kept[0]), int(curves.eval_epochs[-1])
    one_example = 1 / validation_examples
    accuracy_gap = float(curves.eval_accuracy[-1] - curves.eval_accuracy[kept])  # Positive: the last is ahead.
    scores = (f"the kept checkpoint (epoch {kept_epoch}, best validation {metric}) scores accuracy "
              f"{curves.eval_accuracy[kept]:.4f} and loss {curves.eval_loss[kept]:.4f}, the last (epoch {last_epoch}) "
              f"{curves.eval_accuracy[-1]:.4f} and {curves.eval_loss[-1]:.4f} on the {validation_examples} validation "
              "examples")
    later = "until then, evaluate.py --weights=latest scores the last weights"
    if metric == "loss":
        if accuracy_gap < max(CLEAR_EXAMPLES * one_example, 0.003):
            return None
        return Finding("checkpoint_selection", cost=accuracy_gap, evidence=scores,
                       suggestion=f"pick the best by accuracy (--early_stopping_metric=accuracy), as the loss also "
                                  f"rises when a model grows overconfident; {later}",
                       flags={"early_stopping_metric": "accuracy"})
    if curves.eval_loss[kept] < CLEARLY_LOWER_LOSS * curves.eval_loss[-1] or accuracy_gap < -1.5 * one_example:
        return None
    return Finding("checkpoint_selection", cost=one_example, evidence=f"{scores}: one example is "
                   f"{one_example * 100:.2f} points, too coarse for {metric} to rank them",
                   suggestion=f"hold out a larger --validation_split, or pick the best by --early_stopping_metric=loss; "
                              f"{later}",
                   flags={"early_stopping_metric": "loss"})


CURVE_DETECTORS = (overfitting, underfitting, learning_rate_low, learning_rate_high, too_few_epochs, capacity)
EVAL_CURVE_KINDS = ("overfitting", "too_few_epochs", "capacity", "checkpoint_selection")  # Read the validation curve.


def from_curves(curves: Curves) -> list[Finding]:
    return [finding for detector in CURVE_DETECTORS if (finding := detector(curves))]


def batchnorm_statistics(split: str, moving_accuracy: float, precise_accuracy: float, batches: int) -> Finding | None:
    """Accuracy gained by re-estimating the batch-norm statistics on training batches."""
    gain = precise_accuracy - moving_accuracy
    if gain < 0.002:
        return None
    return Finding(
        "batchnorm_statistics", cost=gain,
        evidence=f"{split} accuracy is {moving_accuracy:.4f} with the batch-norm moving averages and "
                 f"{precise_accuracy:.4f} with statistics re-estimated on {batches} training batches: the moving "
                 "averages lag the weights",
        suggestion=f"train with --precise_bn_batches={batches} (re-estimates them before every evaluation and the "
                   "export), or train for more epochs",
        flags={"precise_bn_batches": batches})


def class_confusion(split: str, confusion: np.ndarray, class_names: tuple[str, ...], pairs: int = 3
                    ) -> tuple[Finding | None, list[tuple[int, int]]]:
    """The most confused (true, predicted) pairs (descriptive: whether they can be told apart is for a
    person to judge from the images)."""
    mistakes = confusion.astype(float).copy()
    np.fill_diagonal(mistakes, 0)
    order = np.argsort(mistakes, axis=None)[::-1][:pairs]
    top = [tuple(int(index) for index in np.unravel_index(flat, mistakes.shape)) for flat in order
           if mistakes.flat[flat] > 0]
    if not top:
        return None, []
    described = ", ".join(f"{class_names[true]} as {class_names[predicted]} {int(confusion[true, predicted])} "
                          f"times ({confusion[true, predicted] / max(confusion[true].sum(), 1):.1%} of "
                          f"{class_names[true]})" for true, predicted in top)
    return Finding(
        "class_confusion", cost=None,
        evidence=f"the most frequent {split} mistakes: {described} (images in the report)",
        suggestion="look at the confused examples: if they are ambiguous or mislabeled the data is the limit; "
                   "otherwise more capacity (--model_width) or augmentation that keeps the classes apart"), top


def class_imbalance(train_counts: np.ndarray, correct: np.ndarray, examples: np.ndarray, class_names: tuple[str, ...],
                    accuracy: float, balanced_accuracy: float) -> Finding | None:
    """Rare training classes recalled worse than frequent ones: the rarer half of the classes (by
    training examples), pooled, against the other half, by more than two standard errors and 2
    points. Pooled, because a long tail leaves its rarest classes a handful of validation examples
    each (`correct` and `examples`: per class, on the split measured)."""
    present = (train_counts > 0) & (examples > 0)
    if present.sum() < 2:
        return None
    by_count = np.flatnonzero(present)[np.argsort(train_counts[present], kind="stable")]
    rare, frequent = by_count[:len(by_count) // 2], by_count[len(by_count) // 2:]
    ratio = train_counts[by_count[-1]] / train_counts[by_count[0]]
    rare_examples = int(examples[rare].sum())
    rare_recall = correct[rare].sum() / rare_examples
    frequent_examples = int(examples[frequent].sum())
    frequent_recall = correct[frequent].sum() / frequent_examples
    gap = frequent_recall - rare_recall
    standard_error = math.sqrt(rare_recall * (1 - rare_recall) / rare_examples
                               + frequent_recall * (1 - frequent_recall) / frequent_examples)
    if ratio < 3 or gap < max(0.02, 2 * standard_error):
        return None
    smallest = int(by_count[0])
    return Finding(
        "class_imbalance", cost=max(0.0, accuracy - balanced_accuracy) + gap / 10,
        evidence=f"the largest training class has {ratio:.0f} times the examples of the smallest "
                 f"({class_names[smallest]}: {train_counts[smallest]}); the rarer half of the classes "
                 f"({', '.join(class_names[index] for index in rare)}) is recalled {rare_recall:.4f} against "
                 f"{frequent_recall:.4f} for the others ({rare_examples} and {frequent_examples} examples); balanced "
                 f"accuracy {balanced_accuracy:.4f}, accuracy {accuracy:.4f}",
        suggestion="weight the classes: --class_weights=balanced (or effective_number), or --loss_weights=focal=1; "
                   "more examples of the rare classes help most",
        flags={"class_weights": "balanced"})


def calibration(split: str, ece: float, temperature: float, ece_after: float) -> Finding:
    """How far confidence is from accuracy (descriptive: it costs no accuracy), always reported."""
    direction = "over-confident" if temperature > 1 else "under-confident"
    return Finding(
        "calibration", cost=None,
        evidence=f"expected calibration error on {split}: {ece:.4f} ({direction}); dividing the logits by "
                 f"the temperature {temperature:.3f} brings it to {ece_after:.4f} (reliability diagram in the report)",
        suggestion="if the probabilities are used as confidences, divide the logits by the temperature above; "
                   "--label_smoothing=0.1 in training also tempers over-confidence" if ece > 0.01
                   else "well calibrated: nothing to do")


def label_issues(issues: list, class_names: tuple[str, ...], method: str) -> Finding | None:
    """Likely mislabeled examples (label_issues.LabelIssues per split); costs the test share (each one
    the model gets right counts as its mistake) and a tenth of the training share (noise it fits)."""
    issues = [split for split in issues if split.usable]
    found = [split for split in issues if len(split.indices)]
    if not found:
        return None
    shares = {split.split: len(split.indices) / max(split.examined, 1) for split in issues}
    counts = "; ".join(f"{len(split.indices)} of {split.examined} {split.split} examples ({shares[split.split]:.2%})"
                       for split in issues)
    first = found[0]
    examples = ", ".join(f"#{index} labelled {class_names[label]}, looks like {class_names[suggested]}"
                         for index, label, suggested in zip(first.indices[:3], first.labels, first.suggested))
    return Finding(
        "label_issues", cost=shares.get("test", 0.0) + shares.get("train", 0.0) / 10,
        evidence=f"likely mislabeled: {counts}, by confident learning (cleanlab) on {method}; the likeliest "
                 f"{first.split} ones: {examples} (images in the report)",
        suggestion="look at them: relabel or drop the ones a person agrees are wrong (indices in the JSON, in "
                   "the split's stored order); many noisy training labels also call for --label_smoothing=0.1")


def leakage(pairs: list[tuple[int, int, float]], test_examples: int) -> Finding | None:
    """Test images with a near copy in the training split: their accuracy is memory, not generalization."""
    if not pairs:
        return None
    share = len(pairs) / test_examples
    shown = ", ".join(f"train #{train} ~ test #{test} ({correlation:.3f})" for train, test, correlation in pairs[:3])
    return Finding(
        "leakage", cost=share,
        evidence=f"{len(pairs)} of {test_examples} test images ({share:.2%}) have an exact or near copy in the "
                 f"training split (perceptual hash, then pixel correlation), e.g. {shown}; pairs in the report",
        suggestion="drop the copies from the training split (pairs in the JSON as [train index, test index]); "
                   "until then the test accuracy overstates what the model does on new images")
