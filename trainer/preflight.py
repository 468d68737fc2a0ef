"""The pre-flight of a run's settings (scripts/diagnose.py without --run_dir): the data report, then
one training step on one batch under --checks=full; nothing is written."""

import dataclasses

from data import pipeline
from settings.config import TrainConfig
from trainer import steps
from trainer.checks import TrainingWarnings
from trainer.run_inputs import make_stage_checks, prepare_run


def diagnose(config: TrainConfig) -> dict:
    """The pre-flight report, then one training step on one batch under --checks=full; writes nothing.

    Returns the report's lines, every warning raised, and the step's loss and gradient norm.
    """
    run = prepare_run(config)
    checks = dataclasses.replace(make_stage_checks(config, run.spec, training=True), level="full")
    warnings = TrainingWarnings(run.spec.num_classes)
    images, labels, weights = next(iter(pipeline.train_batches(
        run.data.train, run.example_weights, run.spec, config, epoch=0)))
    warnings.first_outputs(run.model(images, training=False))
    metrics = steps.make_metrics(run.loss, with_gradients=True)
    steps.make_train_step(run.model, run.optimizer, run.loss, metrics, checks, config.clip_grad_norm,
                          config.jit_compile, accumulate_steps=config.accumulate_steps)(images, labels, weights)
    values = steps.read_and_reset(metrics)
    return {"report": run.report.lines, "warnings": run.report.warnings + warnings.issued,
            "num_classes": run.spec.num_classes, "loss": values["loss/total"],
            "gradient_norm": values["gradients/global_norm"]}
