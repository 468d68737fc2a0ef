"""The story of a run, top to bottom: restore; per epoch, train the epoch, evaluate and keep the
best, save; finish (score, export, results.json).

What a run is built from is in run_inputs.py, one pass over a split in evaluation.py, TensorBoard in
summaries.py. Every periodic action of a training step (scalars, histograms, input images,
profiler window, mid-epoch checkpoint) appears once, in `train_epoch`, decided by `is_time`.
"""

import contextlib
import dataclasses
import json
import math
import os
import signal
from collections.abc import Callable, Iterator

import keras
import tensorflow as tf
from absl import logging

from data import pipeline, service, streaming
from data.mixing import MixSettings
from trainer import distribute, fine_tuning, losses, run_directory, steps
from trainer.batchnorm import StatisticsEstimator
from trainer.checkpoints import RunCheckpoints, export_saved_model, final_weights_dir, restore_model_weights
from trainer.checks import DivergenceGuard, TrainingWarnings
from settings.config import TrainConfig
from settings.errors import RunStopped, TapeloopError
from trainer.evaluation import Evaluator, evaluation_batches, summarize_split
from trainer.interrupts import StopRequest
from trainer.progress import IntervalTimer, Progress
from trainer.run_inputs import RunInputs, make_stage_checks, prepare_run
from trainer.summaries import ProfilerWindow, RunSummaries

GAP_CHECK_BATCHES = 32  # Training batches the statistics are re-estimated on to rule batch norm out.
AfterEvaluation = Callable[[int, dict[str, float]], bool]  # (epochs done, validation scores) -> stop?


def train(config: TrainConfig, after_evaluation: AfterEvaluation | None = None) -> dict:
    """Trains (or resumes) the run in `config.run_dir`; returns what it writes to results.json.

    `after_evaluation(epochs_done, scores)`, if given, is called after each validation pass (this
    is how a tune.py trial reports to its study); returning True stops the run there, and it
    finishes as usual. A multi_worker worker other than the chief trains in step with it, writes
    to a scratch directory, and returns only its step count.
    """
    strategy = distribute.make_strategy(config)  # First: it must precede every TensorFlow op.
    inputs = prepare_run(config, strategy)
    validation = (evaluation_batches(inputs.data.validation, inputs.spec, config)
                  if inputs.data.validation is not None else None)
    damage_named = streaming.damaged_records_named(inputs.data.train, inputs.data.validation, inputs.data.test)
    peer_loss_explained = distribute.peer_loss_explained(strategy, config.run_dir)
    if distribute.is_chief(strategy):
        with run_directory.claim(config.run_dir), StopRequest().installed() as stop, damage_named, peer_loss_explained:
            # Inputs checked; nothing written yet.
            return run(config, inputs, validation, config.run_dir, stop, after_evaluation)
    with distribute.worker_scratch(strategy) as scratch, StopRequest().installed() as stop, damage_named, \
            peer_loss_explained:
        return run(config, inputs, validation, scratch, stop, after_evaluation)


def run(config: TrainConfig, inputs: RunInputs, validation, write_dir: str, stop: StopRequest,
        after_evaluation: AfterEvaluation | None = None) -> dict:
    """The run, resuming from `config.run_dir` and writing to `write_dir` (the run directory, or a
    worker's scratch); on SIGINT or SIGTERM it saves a checkpoint and raises RunStopped."""
    checkpoints = RunCheckpoints(write_dir, inputs.model, inputs.optimizer, inputs.learning_rate,
                                 config.keep_checkpoints, config.early_stopping_metric, inputs.weight_average,
                                 resume_dir=config.run_dir,
                                 backbone_optimizer=inputs.backbone.optimizer if inputs.backbone else None)
    step = restore(config, checkpoints, write_dir)
    parts = assemble(config, inputs, checkpoints, write_dir, stop)
    parts.summaries.run_started(config, inputs.report.text(), step)
    test = evaluation_batches(inputs.data.test, inputs.spec, config)
    sample_images = next(iter(validation if validation is not None else test))[0]
    parts.warnings.first_outputs(inputs.model(sample_images, training=False))

    while step < inputs.total_steps and not stopped_early(parts) and not parts.stopped_by_caller:
        epoch = step // inputs.steps_per_epoch
        if fine_tuning.unfreeze_due(config, inputs.model, epoch):  # Before the epoch, resumed or not.
            unfreeze_backbone(parts, epoch)
        # Train the epoch.
        step = train_epoch(parts, epoch, step)
        # Evaluate and keep the best; report to the caller, which may stop the run here.
        if validation is not None:
            scores = evaluate_and_keep_best(parts, validation, epoch, step)
            if after_evaluation:
                parts.stopped_by_caller = bool(after_evaluation(step // inputs.steps_per_epoch, scores))
        # Save.
        checkpoints.save_latest(epochs_done=step // inputs.steps_per_epoch)
    parts.profiler.stop()
    parts.service_watch.close()
    if stopped_early(parts):
        logging.info("Stopped early at step %d: validation %s has not improved for %d evaluations.",
                     step, config.early_stopping_metric, config.early_stopping_patience)
    if write_dir != config.run_dir:  # A worker's scratch: the chief scores, exports and reports.
        parts.summaries.close()
        return {"steps": step, "epochs": step / inputs.steps_per_epoch}
    return finish(parts, validation, test, step)


@dataclasses.dataclass
class RunParts:
    """What the phases of one run share, assembled once."""

    config: TrainConfig
    inputs: RunInputs
    checkpoints: RunCheckpoints
    summaries: RunSummaries
    train_steps: Callable  # (iterator, count) -> the last step's loss
    train_metrics: dict
    gradient_snapshot: list | None  # The last step's gradients, for --histogram_every_steps.
    evaluator: Evaluator
    progress: Progress
    timer: IntervalTimer
    divergence: DivergenceGuard
    warnings: TrainingWarnings
    profiler: ProfilerWindow
    stop: StopRequest
    write_dir: str
    bn_statistics: StatisticsEstimator  # --precise_bn_batches, and the check behind the overfitting warning.
    service_watch: service.StallWatch  # Around each read of --data_service batches, which never returns if it died.
    last_training_scalars: dict = dataclasses.field(default_factory=dict)
    stopped_by_caller: bool = False  # The after_evaluation call asked to stop.


def restore(config: TrainConfig, checkpoints: RunCheckpoints, write_dir: str) -> int:
    """Resumes from the newest intact checkpoint, or refuses to start over an earlier run's results;
    then writes flags.txt. Returns the step to continue from."""
    restored = checkpoints.restore_latest()
    step = int(checkpoints.checkpoint.optimizer.iterations.numpy())
    if restored:
        logging.info("Resuming from %s at step %d.", restored, step)
    elif write_dir == config.run_dir:
        run_directory.refuse_to_start_over(write_dir)
    run_directory.write_flags_file(config, write_dir)
    return step


def assemble(config: TrainConfig, inputs: RunInputs, checkpoints: RunCheckpoints, write_dir: str,
             stop: StopRequest) -> RunParts:
    """Builds the compiled train and eval steps, the summaries, and the progress display and guards."""
    model = inputs.model
    with inputs.strategy.scope():  # Summed over replicas when read.
        train_metrics = steps.make_metrics(inputs.loss, with_gradients=True)
    train_steps, gradient_snapshot = compile_training(config, inputs, train_metrics)
    if MixSettings.from_config(config).active:
        logging.info("MixUp/CutMix: training accuracy is scored against each mixed example's dominant "
                     "label (the larger share of its target); validation and test examples are never mixed.")
    if config.class_weights != "none":
        logging.info("Class weights (before scaling to a mean example weight of 1): %s", ", ".join(
            f"{name}={weight:.3g}" for name, weight in zip(inputs.spec.class_names, inputs.class_weights)))
    return RunParts(
        config=config, inputs=inputs, checkpoints=checkpoints,
        summaries=RunSummaries(write_dir, inputs.spec, config.standardize), train_steps=train_steps,
        train_metrics=train_metrics, gradient_snapshot=gradient_snapshot,
        evaluator=Evaluator(config, inputs.spec, model, inputs.loss),  # Evaluation runs on one device.
        progress=Progress(config.progress, inputs.steps_per_epoch, inputs.total_steps), timer=IntervalTimer(),
        divergence=DivergenceGuard(config.divergence_factor, chance_loss=math.log(inputs.spec.num_classes)),
        warnings=TrainingWarnings(inputs.spec.num_classes),
        profiler=ProfilerWindow(config.profile_steps, write_dir), stop=stop, write_dir=write_dir,
        bn_statistics=StatisticsEstimator(model, inputs.data.train, inputs.spec, config),
        service_watch=service.StallWatch(config.data_service, config.data_service_timeout,
                                        config.data_service_worker_wait))


def compile_training(config: TrainConfig, inputs: RunInputs, train_metrics: dict) -> tuple[Callable, list | None]:
    """The compiled multi-step train loop for the variables that train now, and (for
    --histogram_every_steps) the variables that keep its last gradients."""
    with inputs.strategy.scope():
        gradient_snapshot = ([tf.Variable(tf.zeros_like(variable), trainable=False,
                                          aggregation=tf.VariableAggregation.ONLY_FIRST_REPLICA)
                              for variable in inputs.model.trainable_variables]
                             if config.histogram_every_steps else None)
    train_steps = steps.make_train_loop(inputs.model, inputs.optimizer, inputs.loss, train_metrics,
                                        make_stage_checks(config, inputs.spec, training=True), config.clip_grad_norm,
                                        config.jit_compile, gradient_snapshot, inputs.weight_average, inputs.strategy,
                                        config.accumulate_steps, inputs.backbone)
    return train_steps, gradient_snapshot


def unfreeze_backbone(parts: RunParts, epoch: int) -> None:
    """--unfreeze_after_epochs: the backbone trains from `epoch` on; the steps that baked in
    which layers train (the train loop, batch-norm re-estimation) are compiled again."""
    inputs = parts.inputs
    fine_tuning.unfreeze(parts.config, inputs.model, epoch)
    parts.train_steps, parts.gradient_snapshot = compile_training(parts.config, inputs, parts.train_metrics)
    parts.bn_statistics = StatisticsEstimator(inputs.model, inputs.data.train, inputs.spec, parts.config)


def train_epoch(parts: RunParts, epoch: int, step: int) -> int:
    """Trains from `step` to the end of `epoch` and returns the step reached."""
    config, inputs = parts.config, parts.inputs
    epoch_end = min((epoch + 1) * inputs.steps_per_epoch, inputs.total_steps)
    parts.progress.start_epoch(epoch, step - epoch * inputs.steps_per_epoch)
    parts.timer.restart()
    with parts.service_watch.waiting():
        batches = iter(training_batches(parts, epoch, step - epoch * inputs.steps_per_epoch))
    count, refilled_at = 0, None
    while step < epoch_end:
        if step == 0 or is_time(config.image_summary_every_steps, step, count):
            log_input_images(parts, epoch, step)  # The batch trained next.
        parts.profiler.update(step)
        first_step = parts.divergence.first_loss is None
        count = 1 if first_step else min(config.steps_per_loop, epoch_end - step)
        try:
            with parts.service_watch.waiting():
                step_loss = parts.train_steps(batches, count)
        except tf.errors.OutOfRangeError:
            if not config.data_service:
                raise
            step, batches = refill_lost_batches(parts, epoch, step, refilled_at)
            refilled_at = step
            continue
        parts.timer.tick(count)
        step += count
        if first_step:
            parts.divergence.check(step, float(step_loss), current_learning_rate(inputs.optimizer))
        if parts.stop.signal_number is not None:
            stop_for_signal(parts, epoch, step)
        checkpoint_due = is_time(config.checkpoint_every_steps, step, count) and step < epoch_end
        if parts.timer.steps and (is_time(config.log_every_steps, step, count) or checkpoint_due
                                  or step == epoch_end):
            log_training(parts, epoch, step)  # Before a checkpoint: it checks the loss first.
        if is_time(config.histogram_every_steps, step, count):
            parts.summaries.histograms(inputs.model.trainable_variables, parts.gradient_snapshot, step)
        if checkpoint_due:
            parts.checkpoints.save_latest(epochs_done=step // inputs.steps_per_epoch)
    return step


def refill_lost_batches(parts: RunParts, epoch: int, step: int, refilled_at: int | None) -> tuple[int, Iterator]:
    """After the tf.data service ended `epoch` early (a worker stopped while it held some of its
    batches, which the service then never delivers), says so and returns the step reached and
    the epoch's batches from there on, built again; the paragraph if the batches built again at
    step `refilled_at` ended before any trained."""
    inputs = parts.inputs
    reached = int(inputs.optimizer.iterations.numpy())
    if reached == refilled_at:
        raise TapeloopError(
            stage="data", problem=f"the tf.data service at {parts.config.data_service} ended epoch {epoch + 1}'s "
            f"batches twice at step {reached}", expected="the epoch's batches built again after a worker stopped",
            found="none delivered: the workers lose every batch they are given",
            fix="check the workers' logs, restart them, then rerun the training command: it resumes from the last "
                "checkpoint")
    parts.timer.tick(reached - step)
    delivered = reached - epoch * inputs.steps_per_epoch
    missing = min((epoch + 1) * inputs.steps_per_epoch, inputs.total_steps) - reached
    logging.warning(
        "Epoch %d: the tf.data service ended the epoch after %d of its batches, %d short: a worker stopped while it "
        "held them (the service visits each batch at most once). The epoch's last %d steps train on its batches "
        "from position %d on, built again, so up to %d of its batches train twice and as many not at all.",
        epoch + 1, delivered, missing, missing, delivered, missing)
    with parts.service_watch.waiting():
        batches = iter(training_batches(parts, epoch, delivered))
    return reached, batches


def is_time(every: int, step: int, count: int) -> bool:
    """Whether the `count` steps that ended at `step` passed a multiple of `every` (0: never)."""
    return bool(every) and step // every > (step - count) // every


def training_batches(parts: RunParts, epoch: int, step_in_epoch: int):
    """The epoch's training batches from `step_in_epoch` on, distributed over the replicas."""
    inputs = parts.inputs
    return inputs.strategy.distribute_datasets_from_function(lambda context: pipeline.train_batches(
        inputs.data.train, inputs.example_weights, inputs.spec, parts.config, epoch, step_in_epoch,
        distribute.replica_shard(context)))


def log_training(parts: RunParts, epoch: int, step: int) -> None:
    """Logs the training metrics of the steps since the last log (with throughput and learning rate),
    then checks the loss for divergence."""
    interval_steps, seconds = parts.timer.close()
    parts.checkpoints.training_seconds.assign_add(seconds)
    scalars = steps.read_and_reset(parts.train_metrics)
    scalars["perf/examples_per_sec"] = interval_steps * pipeline.update_batch_size(parts.config) / seconds
    scalars["learning_rate"] = current_learning_rate(parts.inputs.optimizer)
    parts.summaries.training(scalars, step)
    parts.progress.log_interval(epoch, step, scalars, steps_per_second=interval_steps / seconds)
    parts.divergence.check(step, scalars["loss/total"], scalars["learning_rate"])
    if step == parts.inputs.steps_per_epoch:
        parts.warnings.end_of_first_epoch(parts.divergence.first_loss, scalars["loss/total"])
    parts.last_training_scalars.update(scalars)


def log_input_images(parts: RunParts, epoch: int, step: int) -> None:
    """The batch that step `step` trains on, as the model sees it."""
    inputs = parts.inputs
    images, labels, _ = next(iter(pipeline.train_batches(
        inputs.data.train, inputs.example_weights, inputs.spec, parts.config, epoch,
        step - epoch * inputs.steps_per_epoch)))
    parts.summaries.inputs(images, losses.class_ids(labels).numpy(), step)


def evaluate_and_keep_best(parts: RunParts, validation, epoch: int, step: int) -> dict[str, float]:
    """Scores the weights evaluation uses on the validation split, saves them to best/ if they beat
    every earlier evaluation, warns about a wide train/validation gap, and lets the plateau
    schedule react. Returns the scores."""
    with evaluated_weights(parts):
        evaluation = scored(parts, validation)
    results = evaluation.scores
    parts.summaries.evaluation(evaluation, step)
    improved = parts.checkpoints.save_best_if_improved(results, epochs_done=step // parts.inputs.steps_per_epoch)
    parts.progress.log_eval(epoch, step, results, improved)
    warn_about_accuracy_gap(parts, validation, results["accuracy"])
    if parts.inputs.learning_rate.end_of_evaluation(results):
        logging.info("Validation %s has not improved for %d evaluations: learning rate lowered to %.3g.",
                     parts.config.plateau_metric, parts.config.plateau_patience,
                     current_learning_rate(parts.inputs.optimizer))
    return results


def evaluated_weights(parts: RunParts):
    """The weights evaluation scores, in the model for the block: the --ema_decay average, else the raw ones."""
    weight_average = parts.inputs.weight_average
    return weight_average.swapped_in() if weight_average else contextlib.nullcontext()


def scored(parts: RunParts, batches, precise_bn_batches: int | None = None):
    """One evaluation of the model's weights, with batch-norm statistics re-estimated on
    `precise_bn_batches` (--precise_bn_batches if None; 0: the moving averages). Training keeps
    its own moving averages."""
    count = parts.config.precise_bn_batches if precise_bn_batches is None else precise_bn_batches
    if not count:
        return parts.evaluator.run(batches)
    with parts.bn_statistics.kept():
        parts.bn_statistics.estimate(count)
        return parts.evaluator.run(batches)


def warn_about_accuracy_gap(parts: RunParts, validation, eval_accuracy: float) -> None:
    """Warns when validation trails training by over 10 points, after ruling out the two causes that
    are not overfitting: batch-norm statistics and a weight average that lag the weights."""
    train_accuracy = parts.last_training_scalars["accuracy"]
    if not parts.warnings.gap_to_explain(train_accuracy, eval_accuracy):
        return
    other_scores = {}
    if parts.bn_statistics.layers and not parts.config.precise_bn_batches:
        with evaluated_weights(parts):
            other_scores["precise_bn_accuracy"] = scored(parts, validation, GAP_CHECK_BATCHES).scores["accuracy"]
    if parts.inputs.weight_average:
        other_scores["raw_weights_accuracy"] = scored(parts, validation).scores["accuracy"]
    parts.warnings.accuracy_gap(train_accuracy, eval_accuracy, precise_bn_batches=GAP_CHECK_BATCHES, **other_scores)


def stop_for_signal(parts: RunParts, epoch: int, step: int) -> None:
    """Saves a checkpoint at `step` and raises RunStopped, saying where the run stopped."""
    if parts.timer.steps:
        log_training(parts, epoch, step)  # Checks the loss before it is saved.
    path = parts.checkpoints.save_latest(epochs_done=step // parts.inputs.steps_per_epoch)
    parts.summaries.close()
    number = parts.stop.signal_number
    raise RunStopped(number, f"{signal.Signals(number).name} at step {step} of {parts.inputs.total_steps} "
                             f"(epoch {epoch + 1}); checkpoint {path} saved. Resume: rerun the same command.")


def stopped_early(parts: RunParts) -> bool:
    patience = parts.config.early_stopping_patience
    return bool(patience and parts.checkpoints.best_metric.evaluations_since_best.numpy() >= patience)


def finish(parts: RunParts, validation, test, step: int) -> dict:
    """The outcome: the best weights by validation metric (the last ones without a validation split;
    averaged with --ema_decay), scored once more and on test, exported; results.json written."""
    config, inputs, write_dir = parts.config, parts.inputs, parts.write_dir
    weights = restore_model_weights(inputs.model, final_weights_dir(write_dir), inputs.weight_average)
    if config.precise_bn_batches:  # Kept in the model: the export carries these statistics.
        parts.bn_statistics.estimate(config.precise_bn_batches)
    final_eval = parts.evaluator.run(validation).scores if validation is not None else None
    final_test = parts.evaluator.run(test).scores if config.score_test else None
    export_saved_model(inputs.model, inputs.spec, config.standardize, os.path.join(write_dir, "saved_model"))
    final, split = (final_test, "Test") if final_test else (final_eval, "Validation")
    logging.info("%s accuracy %.4f, loss %.4f (weights from %s).", split, final["accuracy"], final["loss/total"],
                 weights)
    training_seconds = float(parts.checkpoints.training_seconds.numpy())
    results = {
        "dataset": config.dataset,
        "model": config.model,
        **inputs.model_size,
        "weights": weights,
        "eval": summarize_split(final_eval, inputs.spec.class_names) if final_eval else None,
        "test": summarize_split(final_test, inputs.spec.class_names) if final_test else None,
        "steps": step,
        "epochs": step / inputs.steps_per_epoch,
        "stopped_early": stopped_early(parts),
        "stopped_by_caller": parts.stopped_by_caller,
        "wall_seconds": parts.checkpoints.elapsed_seconds(),
        "training_seconds": training_seconds,
        "examples_per_sec": step * pipeline.update_batch_size(config) / training_seconds,
        "precision": inputs.precision.record(),
        "batchnorm_momentum": inputs.batchnorm_momentum,
    }
    parts.summaries.results(results, step)
    parts.summaries.close()
    run_directory.write_text_atomic(os.path.join(write_dir, "results.json"), json.dumps(results, indent=2) + "\n")
    return results


def current_learning_rate(optimizer: keras.optimizers.Optimizer) -> float:
    return float(keras.ops.convert_to_numpy(optimizer.learning_rate))
