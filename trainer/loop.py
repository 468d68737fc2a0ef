"""The outer loop: epochs, evaluation, checkpoints, summaries, export. Reads top to bottom."""

import contextlib
import dataclasses
import json
import os
import signal

import keras
import numpy as np
import tensorflow as tf
from absl import logging

from data import catalog, diagnostics, pipeline
from data.sources import Arrays
from models import registry
from trainer import distribute, losses, run_directory, steps
from trainer.averaging import WeightAverage
from trainer.checkpoints import RunCheckpoints, export_saved_model, final_weights_dir, restore_model_weights
from trainer.checks import DivergenceGuard, StageChecks, TrainingWarnings, check_unaugmented
from trainer.config import TrainConfig
from trainer.errors import RunStopped, TapeloopError
from trainer.flags import serialize_config
from trainer.interrupts import StopRequest
from trainer.progress import IntervalTimer, Progress
from trainer.schedules import LearningRate
from trainer.summaries import (SummaryWriters, confusion_figure, labelled_grid, write_figure, write_hparams,
                                write_histograms, write_scalars, write_text)


@dataclasses.dataclass(frozen=True)
class RunInputs:
    """What a run is built from, checked before anything is written: data, loss, model, optimizer."""

    spec: catalog.DatasetSpec
    data: pipeline.PreparedData
    report: diagnostics.Report
    steps_per_epoch: int
    total_steps: int
    loss: losses.WeightedLoss
    class_weights: np.ndarray
    example_weights: np.ndarray
    model: keras.Model
    learning_rate: LearningRate
    optimizer: keras.optimizers.Optimizer
    weight_average: WeightAverage | None  # --ema_decay
    strategy: tf.distribute.Strategy


def prepare_run(config: TrainConfig, strategy: tf.distribute.Strategy | None = None) -> RunInputs:
    """Loads and checks the data (logging the pre-flight report), builds loss, model and optimizer
    (in the `strategy`'s scope, the default strategy if None)."""
    strategy = strategy or tf.distribute.get_strategy()
    keras.utils.set_random_seed(config.seed)  # Python, NumPy and TensorFlow.
    if config.deterministic:
        tf.config.experimental.enable_op_determinism()
    data = pipeline.prepare_data(config)
    spec = data.spec
    report = diagnostics.preflight(data, config)
    for line in report.lines:
        logging.info("Data: %s", line)
    for warning in report.warnings:
        logging.warning(warning.paragraph())
    steps_per_epoch = pipeline.steps_per_epoch(len(data.train[1]), config.batch_size)
    if steps_per_epoch == 0:
        raise TapeloopError(
            stage="data", problem="the training split is smaller than one batch",
            expected=f"at least --batch_size={config.batch_size} training examples",
            found=f"{len(data.train[1])} after holding out --validation_split={config.validation_split}",
            fix="lower --batch_size or --validation_split, or use more data")
    replicas = strategy.num_replicas_in_sync
    if config.batch_size % replicas:
        raise TapeloopError(
            stage="distribute", problem="the global batch does not split evenly over the replicas",
            expected=f"--batch_size a multiple of the {replicas} replicas", found=f"--batch_size={config.batch_size}",
            fix=f"use --batch_size={max(replicas, config.batch_size // replicas * replicas)}")
    total_steps = config.epochs * steps_per_epoch
    if config.max_steps:
        total_steps = min(total_steps, config.max_steps)
    class_weights = losses.class_weights(config.class_weights, data.train[1], spec.num_classes)
    learning_rate = LearningRate(config, total_steps, steps_per_epoch)
    with strategy.scope():  # Keras optimizers must be built in the scope, before the first step.
        model = build_model(config, spec)
        optimizer = make_optimizer(config, learning_rate)
        optimizer.build(model.trainable_variables)
        weight_average = WeightAverage(model, config.ema_decay) if config.ema_decay else None
    return RunInputs(
        spec=spec, data=data, report=report, steps_per_epoch=steps_per_epoch, total_steps=total_steps,
        loss=losses.from_config(config, spec.num_classes), class_weights=class_weights,
        example_weights=losses.example_weights(data.train[1], class_weights, data.train_sample_weights),
        model=model, learning_rate=learning_rate, optimizer=optimizer, weight_average=weight_average,
        strategy=strategy)


MIXED_PRECISION_POLICIES = {"none": "float32", "bfloat16": "mixed_bfloat16", "float16": "mixed_float16"}


def train(config: TrainConfig) -> dict:
    """Trains (or resumes) the run in `config.run_dir`; returns what it writes to results.json.

    A multi_worker worker other than the chief trains in step with it, writes to a scratch
    directory, and returns only its step count.
    """
    strategy = distribute.make_strategy(config)  # First: it must precede every TensorFlow op.
    run = prepare_run(config, strategy)
    validation = evaluation_batches(run.data.validation, run.spec, config) if run.data.validation is not None else None
    if distribute.is_chief(strategy):
        with run_directory.claim(config.run_dir), StopRequest().installed() as stop:
            return _train_claimed(config, run, validation, config.run_dir, stop)  # Inputs checked; nothing written.
    with distribute.worker_scratch(strategy) as scratch, StopRequest().installed() as stop:
        return _train_claimed(config, run, validation, scratch, stop)


def _train_claimed(config: TrainConfig, run: RunInputs, validation_batches, write_dir: str,
                   stop: StopRequest) -> dict:
    """The run itself, resuming from `config.run_dir` and writing to `write_dir` (the run directory,
    or a worker's scratch); on SIGINT or SIGTERM it saves a checkpoint and raises RunStopped."""
    spec, data, model, optimizer, learning_rate = run.spec, run.data, run.model, run.optimizer, run.learning_rate
    loss, steps_per_epoch, total_steps, strategy = run.loss, run.steps_per_epoch, run.total_steps, run.strategy

    weight_average = run.weight_average
    checkpoints = RunCheckpoints(write_dir, model, optimizer, learning_rate, config.keep_checkpoints,
                                 config.early_stopping_metric, weight_average, resume_dir=config.run_dir)
    restored = checkpoints.restore_latest()
    if restored:
        logging.info("Resuming from %s at step %d.", restored, int(optimizer.iterations.numpy()))
    elif write_dir == config.run_dir:
        run_directory.refuse_to_start_over(write_dir)
    write_flags_file(config, write_dir)
    writers = SummaryWriters(write_dir)
    start_step = int(optimizer.iterations.numpy())
    write_text(writers.train, "diagnostics", run.report.text(), start_step)
    write_text(writers.train, "flags", serialize_config(config), start_step)
    write_hparams(writers.run, hparams_of(config), trial_id=os.path.basename(os.path.normpath(config.run_dir)))
    if config.class_weights != "none":
        logging.info("Class weights (before scaling to a mean example weight of 1): %s",
                     ", ".join(f"{name}={weight:.3g}" for name, weight in zip(spec.class_names, run.class_weights)))

    stage_checks = make_stage_checks(config, spec)
    with strategy.scope():  # Summed over replicas when read.
        train_metrics = steps.make_metrics(loss, with_gradients=True)
        gradient_snapshot = ([tf.Variable(tf.zeros_like(variable), trainable=False,
                                          aggregation=tf.VariableAggregation.ONLY_FIRST_REPLICA)
                              for variable in model.trainable_variables] if config.histogram_every_steps else None)
    eval_metrics = steps.make_metrics(loss, class_names=spec.class_names)  # Evaluation runs on one device.
    train_steps = steps.make_train_loop(model, optimizer, loss, train_metrics, stage_checks,
                                        config.clip_grad_norm, config.jit_compile, gradient_snapshot,
                                        weight_average, strategy)
    eval_step = steps.make_eval_step(model, loss, eval_metrics, stage_checks)

    progress = Progress(config.progress, steps_per_epoch, total_steps)
    timer = IntervalTimer()
    divergence = DivergenceGuard(config.divergence_factor)
    warnings = TrainingWarnings(spec.num_classes)
    last_training_scalars = {}

    def current_learning_rate():
        return float(keras.ops.convert_to_numpy(optimizer.learning_rate))

    def log_training(epoch, step):
        interval_steps, seconds = timer.close()
        checkpoints.training_seconds.assign_add(seconds)
        scalars = steps.read_and_reset(train_metrics)
        scalars["perf/examples_per_sec"] = interval_steps * config.batch_size / seconds
        scalars["learning_rate"] = current_learning_rate()
        write_scalars(writers.train, scalars, step)
        progress.log_interval(epoch, step, scalars)
        divergence.check(step, scalars["loss/total"], scalars["learning_rate"])
        if step == steps_per_epoch:
            warnings.end_of_first_epoch(divergence.first_loss, scalars["loss/total"])
        last_training_scalars.update(scalars)

    def log_input_images(epoch, step_in_epoch, step):
        images, labels, _ = next(iter(pipeline.train_batches(
            data.train, run.example_weights, spec, config, epoch, step_in_epoch)))
        captions = [spec.class_names[class_id] for class_id in loss.class_ids(labels).numpy()[:32]]
        grid = labelled_grid(pipeline.to_display(images[:32], spec, config.standardize), captions)
        write_figure(writers.train, "inputs", grid, step)

    def log_evaluation_images(evaluation, step):
        write_figure(writers.eval, "confusion_matrix", confusion_figure(evaluation.confusion, spec.class_names), step)
        if evaluation.misclassified is not None:
            images, true, predicted = evaluation.misclassified
            captions = [f"{spec.class_names[t]} as {spec.class_names[p]}" for t, p in zip(true, predicted)]
            grid = labelled_grid(pipeline.to_display(images, spec, config.standardize), captions)
            write_figure(writers.eval, "misclassified", grid, step)

    def log_histograms(step):
        write_histograms(writers.train, {
            **{f"weights/{variable.path}": variable for variable in model.trainable_variables},
            **{f"gradients/{variable.path}": gradient
               for variable, gradient in zip(model.trainable_variables, gradient_snapshot)}}, step)

    def stop_for_signal(epoch, step):
        if timer.steps:
            log_training(epoch, step)  # Checks the loss before it is saved.
        path = checkpoints.save_latest(epochs_done=step // steps_per_epoch)
        writers.close()
        name = signal.Signals(stop.signal_number).name
        raise RunStopped(stop.signal_number, f"{name} at step {step} of {total_steps} (epoch {epoch + 1}); "
                         f"checkpoint {path} saved. Resume: rerun the same command.")

    def stopped_early():
        patience = config.early_stopping_patience
        return bool(patience and checkpoints.best_metric.evaluations_since_best.numpy() >= patience)

    test_batches = evaluation_batches(data.test, spec, config)
    sample_images = next(iter(validation_batches if validation_batches is not None else test_batches))[0]
    warnings.first_outputs(model(sample_images, training=False))

    step = start_step
    profiling = False
    while step < total_steps and not stopped_early():
        epoch, step_in_epoch = divmod(step, steps_per_epoch)
        epoch_end = min((epoch + 1) * steps_per_epoch, total_steps)
        progress.start_epoch(epoch, step_in_epoch)
        timer.restart()
        batches = iter(strategy.distribute_datasets_from_function(lambda context: pipeline.train_batches(
            data.train, run.example_weights, spec, config, epoch, step_in_epoch, replica_shard(context))))
        if step == 0:
            log_input_images(epoch, 0, step)
        while step < epoch_end:
            if config.profile_steps and not profiling and config.profile_steps[0] <= step < config.profile_steps[1]:
                tf.profiler.experimental.start(write_dir)
                profiling = True
            first_step = divergence.first_loss is None
            count = 1 if first_step else min(config.steps_per_loop, epoch_end - step)
            step_loss = train_steps(batches, count)
            timer.tick(count)
            step += count
            if stop.signal_number is not None:
                stop_for_signal(epoch, step)
            if first_step:
                divergence.check(step, float(step_loss), current_learning_rate())
            if passed_multiple(config.log_every_steps, step, count):
                log_training(epoch, step)
            if passed_multiple(config.histogram_every_steps, step, count):
                log_histograms(step)
            if passed_multiple(config.image_summary_every_steps, step, count) and step < epoch_end:
                log_input_images(epoch, step - epoch * steps_per_epoch, step)  # The batch trained next.
            if profiling and step >= config.profile_steps[1]:
                tf.profiler.experimental.stop()
                profiling = False
            if passed_multiple(config.checkpoint_every_steps, step, count) and step < epoch_end:
                if timer.steps:
                    log_training(epoch, step)  # Checks the loss before it is saved.
                checkpoints.save_latest(epochs_done=step // steps_per_epoch)
        if timer.steps:
            log_training(epoch, step)

        if validation_batches is not None:
            with weight_average.swapped_in() if weight_average else contextlib.nullcontext():
                evaluation = evaluate(eval_step, eval_metrics, validation_batches)
            results = evaluation.scores
            write_scalars(writers.eval, results, step)
            log_evaluation_images(evaluation, step)
            improved = checkpoints.save_best_if_improved(results, epochs_done=step // steps_per_epoch)
            progress.log_eval(epoch, step, results, improved)
            warnings.after_evaluation(last_training_scalars["accuracy"], results["accuracy"])
            if learning_rate.end_of_evaluation(results):
                logging.info("Validation %s has not improved for %d evaluations: learning rate lowered to %.3g.",
                             config.plateau_metric, config.plateau_patience, current_learning_rate())
        checkpoints.save_latest(epochs_done=step // steps_per_epoch)
    if profiling:
        tf.profiler.experimental.stop()
    if stopped_early():
        logging.info("Stopped early at step %d: validation %s has not improved for %d evaluations.",
                     step, config.early_stopping_metric, config.early_stopping_patience)
    if write_dir != config.run_dir:  # A worker's scratch: the chief scores, exports and reports.
        writers.close()
        return {"steps": step, "epochs": step / steps_per_epoch}

    # The outcome: the best weights by validation metric (the last ones without a validation split;
    # averaged with --ema_decay), scored once more and on test, exported.
    weights = restore_model_weights(model, final_weights_dir(write_dir), weight_average)
    final_eval = (evaluate(eval_step, eval_metrics, validation_batches).scores
                  if validation_batches is not None else None)
    final_test = evaluate(eval_step, eval_metrics, test_batches).scores
    export_saved_model(model, spec, config.standardize, os.path.join(write_dir, "saved_model"))
    logging.info("Test accuracy %.4f, loss %.4f (weights from %s).",
                 final_test["accuracy"], final_test["loss/total"], weights)
    results = {
        "dataset": config.dataset,
        "model": config.model,
        "weights": weights,
        "eval": summarize_split(final_eval, spec.class_names) if final_eval else None,
        "test": summarize_split(final_test, spec.class_names),
        "steps": step,
        "epochs": step / steps_per_epoch,
        "stopped_early": stopped_early(),
        "wall_seconds": checkpoints.elapsed_seconds(),
        "training_seconds": float(checkpoints.training_seconds.numpy()),
        "examples_per_sec": step * config.batch_size / float(checkpoints.training_seconds.numpy()),
    }
    write_scalars(writers.run, {
        f"results/{split}_{metric}": results[split][metric]
        for split in ("eval", "test") if results[split] for metric in ("accuracy", "balanced_accuracy", "loss")}, step)
    writers.close()
    write_text_atomic(os.path.join(write_dir, "results.json"), json.dumps(results, indent=2) + "\n")
    return results


def diagnose(config: TrainConfig) -> dict:
    """The pre-flight report, then one training step on one batch under --checks=full; writes nothing.

    Returns the report's lines, every warning raised, and the step's loss and gradient norm.
    """
    run = prepare_run(config)
    checks = dataclasses.replace(make_stage_checks(config, run.spec), level="full")
    warnings = TrainingWarnings(run.spec.num_classes)
    images, labels, weights = next(iter(pipeline.train_batches(
        run.data.train, run.example_weights, run.spec, config, epoch=0)))
    warnings.first_outputs(run.model(images, training=False))
    metrics = steps.make_metrics(run.loss, with_gradients=True)
    steps.make_train_step(run.model, run.optimizer, run.loss, metrics, checks, config.clip_grad_norm,
                          config.jit_compile)(images, labels, weights)
    values = steps.read_and_reset(metrics)
    return {"report": run.report.lines, "warnings": run.report.warnings + warnings.issued,
            "num_classes": run.spec.num_classes, "loss": values["loss/total"],
            "gradient_norm": values["gradients/global_norm"]}


def hparams_of(config: TrainConfig) -> dict:
    """The run's flags as hparams values (bool, number or string), the run directory left out."""
    return {name: value if isinstance(value, (bool, int, float, str)) else str(value)
            for name, value in dataclasses.asdict(config).items() if value is not None and name != "run_dir"}


def passed_multiple(every: int, step: int, count: int) -> bool:
    """Whether the `count` steps that ended at `step` passed a multiple of `every` (0: never)."""
    return bool(every) and step // every > (step - count) // every


def summarize_split(values: dict[str, float], class_names: tuple[str, ...]) -> dict:
    """Evaluation metrics (tag -> value) as results.json reports a split, per-class figures nested."""
    return {
        "accuracy": values["accuracy"],
        "loss": values["loss/total"],
        "balanced_accuracy": values["balanced_accuracy"],
        "per_class": {name: {"precision": values[f"precision/{name}"], "recall": values.get(f"recall/{name}")}
                      for name in class_names},
    }


@dataclasses.dataclass(frozen=True)
class Evaluation:
    """One pass over a split: its metrics by tag, confusion matrix, and the first misclassified examples."""

    scores: dict[str, float]
    confusion: np.ndarray
    misclassified: tuple[np.ndarray, np.ndarray, np.ndarray] | None  # (images, true ids, predicted ids)


def evaluate(eval_step, eval_metrics, batches, keep_misclassified: int = 24) -> Evaluation:
    """Runs `eval_step` over every batch; returns the metrics over the whole split."""
    kept = ([], [], [])
    for images, labels in batches:
        logits = eval_step(images, labels)
        if sum(map(len, kept[0])) < keep_misclassified:
            true = labels.numpy() if labels.shape.rank == 1 else np.argmax(labels, axis=-1)
            predicted = np.argmax(logits, axis=-1)
            wrong = predicted != true
            for store, values in zip(kept, (images.numpy()[wrong], true[wrong], predicted[wrong])):
                store.append(values)
    confusion = eval_metrics["confusion_matrix"].result().numpy()
    misclassified = tuple(np.concatenate(store)[:keep_misclassified] for store in kept) if kept[0] else None
    return Evaluation(steps.read_and_reset(eval_metrics), confusion, misclassified)


def evaluation_batches(split: Arrays, spec: catalog.DatasetSpec, config: TrainConfig):
    """The split's evaluation batches, checked (unless --checks=off) to be unaugmented."""
    batches = pipeline.eval_batches(split, spec, config)
    if config.checks != "off":
        check_unaugmented(batches, split[0], lambda images: pipeline.to_model_input(
            images, spec, config.standardize, config.input_range))
    return batches


def replica_shard(context: tf.distribute.InputContext) -> tuple[int, int, int]:
    """(first replica, replicas fed, replicas in all) for the input pipeline `context` describes."""
    replicas_fed = context.num_replicas_in_sync // context.num_input_pipelines
    return context.input_pipeline_id * replicas_fed, replicas_fed, context.num_replicas_in_sync


def build_model(config: TrainConfig, spec: catalog.DatasetSpec) -> keras.Model:
    """The registry's model for `spec`, computing in the --mixed_precision dtype (variables float32)."""
    previous_policy = keras.config.dtype_policy()
    keras.config.set_dtype_policy(MIXED_PRECISION_POLICIES[config.mixed_precision])
    try:  # Layers take the policy when they are created; restoring it keeps other models float32.
        return registry.build_model(config.model, spec.image_shape, spec.num_classes, config)
    finally:
        keras.config.set_dtype_policy(previous_policy)


def make_stage_checks(config: TrainConfig, spec: catalog.DatasetSpec) -> StageChecks:
    """The --checks guards for batches of `spec` as the pipeline prepares them."""
    return StageChecks(config.checks, spec.image_shape, pipeline.model_input_range(spec, config.standardize),
                       spec.num_classes, config.label_format, loss_scaling=config.mixed_precision == "float16")


def make_optimizer(config: TrainConfig, learning_rate=None) -> keras.optimizers.Optimizer:
    """adam, adamw or sgd with momentum, at `learning_rate` (a schedule; --learning_rate if None).

    adamw and sgd decay kernels by --weight_decay; biases and norm scales are spared.
    """
    rate = config.learning_rate if learning_rate is None else learning_rate
    if config.optimizer == "adam":
        optimizer = keras.optimizers.Adam(rate)
    elif config.optimizer == "adamw":
        optimizer = keras.optimizers.AdamW(rate, weight_decay=config.weight_decay)
    else:
        optimizer = keras.optimizers.SGD(rate, momentum=config.momentum, weight_decay=config.weight_decay or None)
    if config.optimizer != "adam":
        optimizer.exclude_from_weight_decay(var_names=["bias", "gamma", "beta"])
    if config.mixed_precision == "float16":
        return keras.optimizers.LossScaleOptimizer(optimizer)
    return optimizer


def write_flags_file(config: TrainConfig, folder: str) -> None:
    """Writes `folder`/flags.txt; on a resume with other flags, says which ones changed."""
    path = os.path.join(folder, "flags.txt")
    text = serialize_config(config)
    if os.path.exists(path):
        with open(path) as stream:
            before = set(stream.read().splitlines())
        changed = sorted(set(text.splitlines()) - before)
        if changed:
            logging.warning("Resuming with changed flags: %s", " ".join(changed))
    write_text_atomic(path, text)


def write_text_atomic(path: str, text: str) -> None:
    """Writes `text` to `path` so that readers see the old or the new file, never a partial one."""
    partial = f"{path}.partial"
    with open(partial, "w") as stream:
        stream.write(text)
    os.replace(partial, path)
