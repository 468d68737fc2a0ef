"""Why a finished run scored what it did (scripts/diagnose.py --run_dir=RUN): its logged curves and
measurements on its final weights, as ranked findings (diagnosis/findings.py), written as text, as
JSON and to RUN/diagnosis for TensorBoard.

The measurements use the validation split when the run held one out (so that acting on them does
not tune to the test split), else the test split, and say which.
"""

import dataclasses
import os

import numpy as np
import tensorflow as tf
from google.protobuf.message import DecodeError
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from data import pipeline, sources
from data.streaming import StreamedImages, pixels_at
from diagnosis import calibration, findings, label_issues, near_duplicates
from trainer import summaries
from trainer.checkpoints import checkpoint_step, latest_checkpoint
from settings.errors import TapeloopError
from trainer.evaluation import predicted_logits
from trainer.finished_run import final_model

PRECISE_BN_CHECK_BATCHES = 50
LABEL_NOISE_CEILING = 0.02  # A share of likely-wrong training labels that caps training accuracy visibly.
CONFUSED_IMAGES_SHOWN = 8  # Per confused pair, in the report's image grid.
LABEL_REVIEW = 100  # Examples of lowest label quality queued for review per split (diagnose.py --label_review).
TRAINING_CURVE_TAGS = ("loss/total", "accuracy", "learning_rate")


@dataclasses.dataclass
class RunDiagnosis:
    findings: list[findings.Finding]
    split: str
    calibration: dict
    notes: list[str]
    reliability: tuple[np.ndarray, np.ndarray, np.ndarray]  # Per bin: count, mean confidence, accuracy.
    grids: dict[str, tuple[np.ndarray, list[str]]]  # Name -> images in [0, 1] and their captions.
    label_issues: list  # label_issues.LabelIssues per split examined.
    duplicates: list[tuple[int, int, float]]  # (stored train index, test index, pixel correlation).
    paths: dict[str, list[str]] | None = None  # An image folder's file per stored example, per split.

    def as_json(self) -> dict:
        examined = {issues.split: issues.indices.tolist() for issues in self.label_issues if issues.usable}
        report = {"split": self.split, "findings": [finding.as_json() for finding in self.findings],
                  "label_issues": {"train": examined.get("train"), "test": examined.get("test")},
                  "label_review": {issues.split: issues.review.as_json() for issues in self.label_issues
                                   if issues.review},
                  "duplicates": [[train, test] for train, test, _ in self.duplicates],
                  "calibration": self.calibration, "notes": self.notes}
        if self.paths is not None:
            report["paths"] = {
                "label_issues": {split: [self.paths[split][index] for index in indices]
                                 for split, indices in examined.items()},
                "duplicates": [[self.paths["train"][train], self.paths["test"][test]]
                               for train, test, _ in self.duplicates]}
        return report

    def lines(self) -> list[str]:
        """The report as text, a finding a paragraph, costliest first."""
        lines = [f"Diagnosis on the {self.split} split ({len(self.findings)} findings, costliest first):"]
        for rank, finding in enumerate(self.findings, 1):
            cost = "" if finding.cost is None else f" (likely cost {finding.cost * 100:.1f} points)"
            lines.append(f"{rank}. [{finding.severity}] {finding.kind}{cost}: {finding.evidence}. "
                         f"Try: {finding.suggestion}.")
        return lines + [review_line(issues) for issues in self.label_issues if issues.review] + [
            f"Note: {note}" for note in self.notes]


def review_line(issues) -> str:
    """The label review queue of a split, in a line: its first examples; all are in the grid and the JSON."""
    review = issues.review
    first = ", ".join(f"#{index} ({score:.3f})" for index, score in zip(review.indices[:10], review.scores))
    return (f"Label review ({issues.split} split): the {len(review.indices)} of {issues.examined} examples whose "
            f"labels look least likely, lowest label quality first: {first}, ... (all in "
            f"diagnosis/label_review_{issues.split}.png and the JSON's label_review).")


def read_scalars(folder: str) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Tag -> (steps, values) of the scalar summaries in a TensorBoard folder (empty if none, or
    what its readable records hold: a truncated file ends its records, a damaged one has none)."""
    if not os.path.isdir(folder):
        return {}
    events = EventAccumulator(folder, size_guidance={"tensors": 0})
    try:
        events.Reload()
    except (tf.errors.OpError, DecodeError, ValueError):  # Garbage where a record should be.
        return {}
    scalars = {}
    for tag in events.Tags()["tensors"]:
        records = [(event.step, tf.make_ndarray(event.tensor_proto)) for event in events.Tensors(tag)]
        if records and records[0][1].ndim == 0 and records[0][1].dtype != object:
            steps, values = zip(*sorted(dict(records).items()))  # A resumed run logs some steps twice: keep the last.
            scalars[tag] = (np.array(steps), np.array(values, np.float64))
    return scalars


def read_curves(run_dir: str, steps_per_epoch: int, num_classes: int, optimizer: str = "adam",
                settings: dict | None = None) -> tuple[findings.Curves | None, str | None]:
    """The run's training and validation curves from its event files, or (None, what is missing)
    when RUN/train lacks the training curves (deleted, damaged or truncated event files)."""
    train, evaluation = read_scalars(os.path.join(run_dir, "train")), read_scalars(os.path.join(run_dir, "eval"))
    missing = [tag for tag in TRAINING_CURVE_TAGS if tag not in train]
    if missing:
        folder = os.path.join(run_dir, "train")
        state = "damaged or cut short" if os.path.isdir(folder) and os.listdir(folder) else "missing"
        return None, f"{folder} holds no readable {', '.join(missing)} (its event files are {state})"
    steps, loss = train["loss/total"]
    eval_steps, eval_loss = evaluation.get("loss/total", (np.array([], int), np.array([])))
    return findings.Curves(
        steps=steps, train_loss=loss, train_accuracy=train["accuracy"][1], learning_rate=train["learning_rate"][1],
        steps_per_epoch=steps_per_epoch, eval_epochs=np.round(eval_steps / steps_per_epoch).astype(int),
        eval_loss=eval_loss, eval_accuracy=evaluation.get("accuracy", (None, np.array([])))[1],
        num_classes=num_classes, optimizer=optimizer, settings=settings or {}), None


def diagnose_run(run_dir: str, data_dir: str | None = None, label_issue_mode: str = "cheap",
                 read_test: bool = True, label_review: int = LABEL_REVIEW) -> RunDiagnosis:
    """Reads the run, rebuilds its final model and data, and returns its ranked findings.

    `label_issue_mode`: off, test (the test split only: seconds), cheap or thorough (the training
    split too, by cross-validation: label_issues.MODES); in each, the `label_review` examples of lowest
    label quality are queued for review. Without `read_test` (improve.py's rounds,
    which must not see the test split) nothing of the test split is read: no leakage, no test label
    issues, and the run must have a validation split.
    """
    config, data, model, bn_statistics = final_model(run_dir, data_dir)
    spec = data.spec
    if data.validation is None and not read_test:
        raise TapeloopError(stage="eval", problem=f"{run_dir} held out no validation split",
                            expected="a run trained with --validation_split above 0", found="--validation_split=0",
                            fix="diagnose it with the test split (scripts/diagnose.py does), or retrain with a split")
    streamed = isinstance(data.train[0], StreamedImages)
    label_issue_mode = "off" if streamed or not read_test else label_issue_mode
    split_name, (images, labels) = (("validation", data.validation) if data.validation is not None
                                    else ("test", data.test))
    batches = pipeline.eval_batches((images, labels), spec, config)
    logits = predicted_logits(model, batches)
    found, notes = [], []
    if bn_statistics.layers and not config.precise_bn_batches:
        with bn_statistics.kept():
            bn_statistics.estimate(PRECISE_BN_CHECK_BATCHES)
            precise = predicted_logits(model, batches)
        found.append(findings.batchnorm_statistics(split_name, accuracy(logits, labels), accuracy(precise, labels),
                                                   PRECISE_BN_CHECK_BATCHES))
    bn_lags = bool(found and found[0] and found[0].cost >= findings.MAJOR_COST)
    if bn_lags:  # What follows is measured on the model with its statistics fixed.
        bn_statistics.estimate(PRECISE_BN_CHECK_BATCHES)
        logits = precise
    if streamed:
        notes.append("label issues and leakage are not sought: they compare every image, which a streamed dataset "
                     "(--dataset=tfrecord) does not hold in memory; diagnose a run on the image folder for them")
    training_examples = None if streamed else data.training_examples()
    issues = split_label_issues(config, data, training_examples, model, label_issue_mode, label_review)
    notes += [f"label issues in the {split.split} split are not judged: the out-of-sample model's accuracy there "
              f"({split.model_accuracy:.4f}) is below {label_issues.MIN_MODEL_ACCURACY}" for split in issues
              if not split.usable]
    label_noise = next((len(split.indices) / split.examined for split in issues if split.split == "train"), 0.0)
    found += curve_findings(run_dir, config, data, bn_lags, label_noise, notes)
    prediction_findings, confused, calibration_report = from_predictions(spec, data.train[1], split_name, logits,
                                                                         labels)
    method = ("the run's model for the test split" + (f", {label_issues.MODES[label_issue_mode][0]}-fold "
              "cross-validation for the training split" if label_issue_mode in label_issues.MODES else ""))
    grids = {"confused_pairs": confused_examples(images, labels, logits.argmax(axis=1), confused, spec, config),
             **{f"label_issues_{split.split}": issue_examples(split, spec, config) for split in issues
                if split.usable},
             **{f"label_review_{split.split}": review_examples(split.review, spec, config) for split in issues
                if split.review}}
    pairs = leakage(training_examples, data, config, found, grids) if training_examples and read_test else []
    found.append(findings.label_issues(issues, spec.class_names, method))
    return RunDiagnosis(
        findings=findings.ranked(found + prediction_findings), split=split_name, calibration=calibration_report,
        notes=notes, reliability=calibration.reliability_bins(calibration.softmax(logits), labels),
        grids=grids, label_issues=issues, duplicates=pairs, paths=sources.stored_paths(config))


def curve_findings(run_dir: str, config, data, bn_lags: bool, label_noise: float,
                   notes: list[str]) -> list[findings.Finding]:
    """The curve detectors' findings, leaving out those that read a validation curve measured with
    lagging batch-norm statistics, and underfitting and capacity when the share of training labels
    that look wrong (`label_noise`) explains the training accuracy; what was left out goes to `notes`."""
    steps_per_epoch = pipeline.steps_per_epoch(len(data.train[1]), config.batch_size)
    curves, problem = read_curves(run_dir, steps_per_epoch, data.spec.num_classes, config.optimizer,
                                  dataclasses.asdict(config))
    if curves is None:
        notes.append(f"the curve findings are left out: {problem}; the findings measured on the final model "
                     "(batch-norm statistics, label issues, leakage, confusions, calibration) do not need them")
        return []
    found = findings.from_curves(curves) + [kept_checkpoint_finding(run_dir, config, data, curves)]
    found = [finding for finding in found if finding]
    ceiling = 1 - label_noise  # The accuracy a model that ignores wrong labels reaches on training data.
    if label_noise >= LABEL_NOISE_CEILING and ceiling - 0.03 <= curves.final_train_accuracy() <= ceiling + 0.01:
        notes.append(f"training accuracy {curves.final_train_accuracy():.4f} is near the {ceiling:.4f} that the "
                     f"{label_noise:.1%} of training labels that look wrong leave: underfitting and capacity are "
                     "not judged")
        found = [finding for finding in found if finding.kind not in ("underfitting", "capacity")]
    if len(curves.train_loss) < findings.CURVE_LOGS_NEEDED:
        notes.append(f"only {len(curves.train_loss)} training logs: most curve findings need "
                     f"{findings.CURVE_LOGS_NEEDED} or more; rerun with --log_every_steps="
                     f"{max(1, int(curves.steps[-1]) // 20)}")
    if bn_lags:
        notes.append("the validation curve was measured with lagging batch-norm statistics, so the findings that "
                     "read it (" + ", ".join(findings.EVAL_CURVE_KINDS) + ") are left out until they are fixed; "
                     "what follows the curves is measured with re-estimated statistics")
        found = [finding for finding in found if finding.kind not in findings.EVAL_CURVE_KINDS]
    return found


def kept_checkpoint_finding(run_dir: str, config, data, curves: findings.Curves) -> findings.Finding | None:
    """checkpoint_selection for a run that kept a best/ checkpoint (it held out a validation split)."""
    kept = latest_checkpoint(os.path.join(run_dir, "best"))
    if kept is None or data.validation is None:
        return None
    kept_epoch = round(checkpoint_step(kept) / curves.steps_per_epoch)
    return findings.checkpoint_selection(curves, config.early_stopping_metric, kept_epoch, len(data.validation[1]))


def leakage(training_examples, data, config, found: list, grids: dict) -> list[tuple[int, int, float]]:
    """Test images with a near copy in training: adds the finding and the grid; returns the pairs
    as (stored training index, test index, correlation)."""
    train_images, _, stored_index = training_examples
    pairs = near_duplicates.near_duplicate_pairs(train_images, data.test[0])
    grids["leakage"] = duplicate_examples(train_images, data.test[0], pairs, stored_index, data.spec, config)
    pairs = [(int(stored_index[train]), test, correlation) for train, test, correlation in pairs]
    found.append(findings.leakage(pairs, len(data.test[1])))
    return pairs


def split_label_issues(config, data, training_examples, model, mode: str, review_count: int) -> list:
    """Label issues and review queues of the test split (the final model's probabilities) and, in the
    cheap and thorough modes, of the training split (cross-validation)."""
    if mode == "off":
        return []
    test_images, test_labels = data.test
    probabilities = calibration.softmax(predicted_logits(model, pipeline.eval_batches(data.test, data.spec, config)))
    issues = [label_issues.issues_in("test", test_images, test_labels.astype(np.int64), probabilities,
                                     review_count=review_count)]
    if mode in label_issues.MODES:
        issues.insert(0, label_issues.training_split_issues(config, training_examples, data.spec.class_names,
                                                            mode, review_count))
    return issues


def displayed(images: np.ndarray, spec, config) -> np.ndarray:
    """Stored images as a person sees them: [N, H, W, C] in [0, 1]."""
    return pipeline.to_display(pipeline.to_model_input(images, spec, False, config.input_range), spec, False)


def confused_examples(images, labels, predicted, pairs, spec, config) -> tuple[np.ndarray, list[str]]:
    """Up to CONFUSED_IMAGES_SHOWN images of each confused (true, predicted) pair."""
    chosen = np.concatenate([np.flatnonzero((labels == true) & (predicted == guess))[:CONFUSED_IMAGES_SHOWN]
                             for true, guess in pairs]).astype(int) if pairs else np.array([], int)
    captions = [f"{spec.class_names[labels[index]]} as {spec.class_names[predicted[index]]}" for index in chosen]
    return displayed(pixels_at(images, chosen), spec, config), captions


def issue_examples(issues, spec, config) -> tuple[np.ndarray, list[str]]:
    """The likeliest label issues of a split, captioned "#index labelled A, looks like B"."""
    captions = [f"#{index} labelled {spec.class_names[label]},\nlooks like {spec.class_names[suggested]}"
                for index, label, suggested in zip(issues.indices, issues.labels, issues.suggested)]
    return displayed(issues.images, spec, config), captions[:len(issues.images)]


def review_examples(review, spec, config) -> tuple[np.ndarray, list[str]]:
    """A split's label review queue, captioned "#index labelled A (quality q), looks like B"."""
    captions = [f"#{index} labelled {spec.class_names[label]} ({score:.3f}),\nlooks like {spec.class_names[suggested]}"
                for index, score, label, suggested in zip(review.indices, review.scores, review.labels,
                                                          review.suggested)]
    return displayed(review.images, spec, config), captions


def duplicate_examples(train_images, test_images, pairs, stored_index, spec, config, shown: int = 16):
    """The first `shown` leakage pairs, each training image beside its test image."""
    chosen = pairs[:shown]
    images = [image for train, test, _ in chosen for image in (train_images[train], test_images[test])]
    captions = [caption for train, test, correlation in chosen
                for caption in (f"train #{stored_index[train]}", f"test #{test} ({correlation:.3f})")]
    return displayed(np.array(images) if images else train_images[:0], spec, config), captions


def accuracy(logits: np.ndarray, labels: np.ndarray) -> float:
    return float(np.mean(logits.argmax(axis=1) == labels))


def from_predictions(spec, train_labels: np.ndarray, split_name: str, logits: np.ndarray, labels: np.ndarray):
    """Confusion, imbalance and calibration findings from the split's logits; also the confused pairs
    and the calibration numbers for the JSON."""
    num_classes = spec.num_classes
    confusion = np.zeros((num_classes, num_classes), np.int64)
    np.add.at(confusion, (labels, logits.argmax(axis=1)), 1)
    correct, examples = np.diag(confusion), confusion.sum(axis=1)
    recalls = correct / np.maximum(examples, 1)
    confusion_finding, confused = findings.class_confusion(split_name, confusion, spec.class_names)
    imbalance = findings.class_imbalance(np.bincount(train_labels, minlength=num_classes), correct, examples,
                                         spec.class_names, accuracy(logits, labels),
                                         float(recalls[examples > 0].mean()))
    probabilities = calibration.softmax(logits)
    temperature = calibration.fit_temperature(logits, labels)
    ece = calibration.expected_calibration_error(probabilities, labels)
    ece_after = calibration.expected_calibration_error(calibration.softmax(logits, temperature), labels)
    report = {"split": split_name, "ece": ece, "temperature": temperature, "ece_after_temperature": ece_after}
    return ([confusion_finding, imbalance, findings.calibration(split_name, ece, temperature, ece_after)],
            confused, report)


def reliability_figure(reliability, split: str):
    """The reliability diagram: accuracy against confidence per bin, the diagonal being perfect."""
    counts, confidence, bin_accuracy = reliability
    edges = np.linspace(0, 1, len(counts) + 1)
    figure, axis = summaries.plt.subplots(figsize=(4, 4))
    used = counts > 0
    axis.bar(edges[:-1][used], bin_accuracy[used], width=1 / len(counts), align="edge", edgecolor="black",
             label="accuracy")
    axis.plot([0, 1], [0, 1], "k--", label="perfect calibration")
    axis.scatter(confidence[used], bin_accuracy[used], s=8, color="red", label="mean confidence")
    axis.set_xlabel("confidence")
    axis.set_ylabel("accuracy")
    axis.set_title(f"reliability on {split}")
    axis.legend(fontsize=7)
    figure.tight_layout()
    return figure


def write_to_tensorboard(run_dir: str, diagnosis: RunDiagnosis) -> str:
    """The report as text and its figures as images under RUN/diagnosis; returns that folder."""
    folder = os.path.join(run_dir, "diagnosis")
    os.makedirs(folder, exist_ok=True)
    writer = tf.summary.create_file_writer(folder)
    summaries.write_text(writer, "diagnosis/report", "\n".join(diagnosis.lines()), step=0)
    figures = {"reliability": reliability_figure(diagnosis.reliability, diagnosis.split),
               **{name: summaries.labelled_grid(images, captions)
                  for name, (images, captions) in diagnosis.grids.items() if len(images)}}
    for name, figure in figures.items():  # Also as PNG files, to look at without TensorBoard.
        figure.savefig(os.path.join(folder, f"{name}.png"), dpi=100)
        summaries.write_figure(writer, f"diagnosis/{name}", figure, step=0)
    writer.close()
    return folder
