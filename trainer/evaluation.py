"""Evaluation: one pass over a split, its batches, its summary in results.json, and the Evaluator
that the loop and scripts/evaluate.py both build, so the wiring exists once."""

import dataclasses

import keras
import numpy as np
import tensorflow as tf

from data import catalog, pipeline
from data.sources import Arrays
from trainer import losses, steps
from trainer.checks import check_unaugmented
from settings.config import TrainConfig
from trainer.run_inputs import make_stage_checks


@dataclasses.dataclass(frozen=True)
class Evaluation:
    """One pass over a split: its metrics by tag, confusion matrix, and the first misclassified examples."""

    scores: dict[str, float]
    confusion: np.ndarray
    misclassified: tuple[np.ndarray, np.ndarray, np.ndarray] | None  # (images, true ids, predicted ids)


class Evaluator:
    """The checked eval step of a model and its metrics; `run` scores a split with them."""

    def __init__(self, config: TrainConfig, spec: catalog.DatasetSpec, model: keras.Model,
                 loss: losses.WeightedLoss | None = None):
        loss = loss or losses.from_config(config, spec.num_classes)
        self.metrics = steps.make_metrics(loss, class_names=spec.class_names)
        self.step = steps.make_eval_step(model, loss, self.metrics, make_stage_checks(config, spec))

    def run(self, batches, keep_misclassified: int = 24) -> Evaluation:
        """Runs the eval step over every batch; returns the metrics over the whole split."""
        kept = ([], [], [])
        for images, labels in batches:
            logits = self.step(images, labels)
            if sum(map(len, kept[0])) < keep_misclassified:
                true = losses.class_ids(labels).numpy()
                predicted = np.argmax(logits, axis=-1)
                wrong = predicted != true
                for store, values in zip(kept, (images.numpy()[wrong], true[wrong], predicted[wrong])):
                    store.append(values)
        confusion = self.metrics["confusion_matrix"].result().numpy()
        misclassified = tuple(np.concatenate(store)[:keep_misclassified] for store in kept) if kept[0] else None
        return Evaluation(steps.read_and_reset(self.metrics), confusion, misclassified)


def predicted_logits(model: keras.Model, batches) -> np.ndarray:
    """The model's float32 logits for every batch of (images, labels), in order."""
    forward = tf.function(lambda images: model(images, training=False))
    return np.concatenate([tf.cast(forward(images), tf.float32).numpy() for images, _ in batches])


def evaluation_batches(split: Arrays, spec: catalog.DatasetSpec, config: TrainConfig):
    """The split's evaluation batches, checked (unless --checks=off) to be unaugmented."""
    batches = pipeline.eval_batches(split, spec, config)
    if config.checks != "off":
        check_unaugmented(batches, split[0], lambda images: pipeline.to_model_input(
            images, spec, config.standardize, config.input_range))
    return batches


def summarize_split(values: dict[str, float], class_names: tuple[str, ...]) -> dict:
    """Evaluation metrics (tag -> value) as results.json reports a split, per-class figures nested."""
    return {
        "accuracy": values["accuracy"],
        "loss": values["loss/total"],
        "balanced_accuracy": values["balanced_accuracy"],
        "per_class": {name: {"precision": values[f"precision/{name}"], "recall": values.get(f"recall/{name}")}
                      for name in class_names},
    }
