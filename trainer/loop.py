"""The outer loop: epochs, evaluation, checkpoints, summaries, export. Reads top to bottom."""

import json
import os

import keras
from absl import logging

from data import catalog, pipeline
from models import registry
from trainer import losses, steps
from trainer.checkpoints import RunCheckpoints, export_saved_model, restore_model_weights
from trainer.checks import DivergenceGuard
from trainer.config import TrainConfig
from trainer.errors import TapeloopError
from trainer.flags import serialize_config
from trainer.progress import IntervalTimer, Progress
from trainer.schedules import LearningRate
from trainer.summaries import SummaryWriters, write_scalars


def train(config: TrainConfig) -> dict:
    """Trains (or resumes) the run in `config.run_dir`; returns what it writes to results.json."""
    keras.utils.set_random_seed(config.seed)
    spec = catalog.get_spec(config.dataset)
    data = pipeline.prepare_data(config, spec)
    steps_per_epoch = pipeline.steps_per_epoch(len(data.train[1]), config.batch_size)
    if steps_per_epoch == 0:
        raise TapeloopError(
            stage="data", problem="the training split is smaller than one batch",
            expected=f"at least --batch_size={config.batch_size} training examples",
            found=f"{len(data.train[1])} after holding out --validation_split={config.validation_split}",
            fix="lower --batch_size or --validation_split, or use more data")
    total_steps = config.epochs * steps_per_epoch
    if config.max_steps:
        total_steps = min(total_steps, config.max_steps)
    loss = losses.from_config(config, spec.num_classes)
    class_weights = losses.class_weights(config.class_weights, data.train[1], spec.num_classes)
    example_weights = losses.example_weights(data.train[1], class_weights, data.train_sample_weights)
    model = registry.build_model(config.model, spec.image_shape, spec.num_classes, config)
    learning_rate = LearningRate(config, total_steps, steps_per_epoch)
    optimizer = make_optimizer(config, learning_rate)
    optimizer.build(model.trainable_variables)

    os.makedirs(config.run_dir, exist_ok=True)
    checkpoints = RunCheckpoints(config.run_dir, model, optimizer, learning_rate, config.keep_checkpoints,
                                 config.early_stopping_metric)
    if checkpoints.restore_latest():
        logging.info("Resuming from %s at step %d.", checkpoints.latest.latest_checkpoint,
                     int(optimizer.iterations.numpy()))
    write_flags_file(config)
    writers = SummaryWriters(config.run_dir)
    if config.class_weights != "none":
        logging.info("Class weights (before scaling to a mean example weight of 1): %s",
                     ", ".join(f"{name}={weight:.3g}" for name, weight in zip(spec.class_names, class_weights)))

    train_metrics = steps.make_metrics(loss, with_gradients=True)
    eval_metrics = steps.make_metrics(loss, class_names=spec.class_names)
    train_step = steps.make_train_step(model, optimizer, loss, train_metrics, config.clip_grad_norm,
                                       config.jit_compile)
    eval_step = steps.make_eval_step(model, loss, eval_metrics)
    validation_batches = (pipeline.eval_batches(data.validation, spec, config)
                          if data.validation is not None else None)

    progress = Progress(config.progress, steps_per_epoch, total_steps)
    timer = IntervalTimer()
    divergence = DivergenceGuard(config.divergence_factor)

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

    def stopped_early():
        patience = config.early_stopping_patience
        return bool(patience and checkpoints.best_metric.evaluations_since_best.numpy() >= patience)

    step = int(optimizer.iterations.numpy())
    while step < total_steps and not stopped_early():
        epoch, step_in_epoch = divmod(step, steps_per_epoch)
        progress.start_epoch(epoch, step_in_epoch)
        timer.restart()
        for images, labels, weights in pipeline.train_batches(data.train, example_weights, spec, config,
                                                              epoch, step_in_epoch):
            step_loss = train_step(images, labels, weights)
            timer.tick()
            step += 1
            if divergence.first_loss is None:
                divergence.check(step, float(step_loss), current_learning_rate())
            if step % config.log_every_steps == 0:
                log_training(epoch, step)
            at_epoch_end = step % steps_per_epoch == 0
            if config.checkpoint_every_steps and step % config.checkpoint_every_steps == 0 and not at_epoch_end:
                if timer.steps:
                    log_training(epoch, step)  # Checks the loss before it is saved.
                checkpoints.save_latest(epochs_done=step // steps_per_epoch)
            if step >= total_steps:
                break
        if timer.steps:
            log_training(epoch, step)

        if validation_batches is not None:
            results = evaluate(eval_step, eval_metrics, validation_batches)
            write_scalars(writers.eval, results, step)
            improved = checkpoints.save_best_if_improved(results, epochs_done=step // steps_per_epoch)
            progress.log_eval(epoch, step, results, improved)
            if learning_rate.end_of_evaluation(results):
                logging.info("Validation %s has not improved for %d evaluations: learning rate lowered to %.3g.",
                             config.plateau_metric, config.plateau_patience, current_learning_rate())
        checkpoints.save_latest(epochs_done=step // steps_per_epoch)
    writers.close()
    if stopped_early():
        logging.info("Stopped early at step %d: validation %s has not improved for %d evaluations.",
                     step, config.early_stopping_metric, config.early_stopping_patience)

    # The outcome: the best weights (by validation metric), scored once more and on test, exported.
    weights = checkpoints.best.latest_checkpoint or checkpoints.latest.latest_checkpoint
    restore_model_weights(model, os.path.dirname(weights))
    final_eval = (evaluate(eval_step, eval_metrics, validation_batches)
                  if validation_batches is not None else None)
    final_test = evaluate(eval_step, eval_metrics, pipeline.eval_batches(data.test, spec, config))
    export_saved_model(model, spec, config.standardize, os.path.join(config.run_dir, "saved_model"))
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
        "examples_per_sec": step * config.batch_size / float(checkpoints.training_seconds.numpy()),
    }
    write_text_atomic(os.path.join(config.run_dir, "results.json"), json.dumps(results, indent=2) + "\n")
    return results


def summarize_split(values: dict[str, float], class_names: tuple[str, ...]) -> dict:
    """Evaluation metrics (tag -> value) as results.json reports a split, per-class figures nested."""
    return {
        "accuracy": values["accuracy"],
        "loss": values["loss/total"],
        "balanced_accuracy": values["balanced_accuracy"],
        "per_class": {name: {"precision": values[f"precision/{name}"], "recall": values.get(f"recall/{name}")}
                      for name in class_names},
    }


def evaluate(eval_step, eval_metrics, batches) -> dict[str, float]:
    """Runs `eval_step` over every batch; returns the metrics over the whole split."""
    for images, labels in batches:
        eval_step(images, labels)
    return steps.read_and_reset(eval_metrics)


def make_optimizer(config: TrainConfig, learning_rate=None) -> keras.optimizers.Optimizer:
    """adam, adamw or sgd with momentum, at `learning_rate` (a schedule; --learning_rate if None).

    adamw and sgd decay kernels by --weight_decay; biases and norm scales are spared.
    """
    rate = config.learning_rate if learning_rate is None else learning_rate
    if config.optimizer == "adam":
        return keras.optimizers.Adam(rate)
    if config.optimizer == "adamw":
        optimizer = keras.optimizers.AdamW(rate, weight_decay=config.weight_decay)
    else:
        optimizer = keras.optimizers.SGD(rate, momentum=config.momentum, weight_decay=config.weight_decay or None)
    optimizer.exclude_from_weight_decay(var_names=["bias", "gamma", "beta"])
    return optimizer


def write_flags_file(config: TrainConfig) -> None:
    """Writes RUN/flags.txt; on a resume with other flags, says which ones changed."""
    path = os.path.join(config.run_dir, "flags.txt")
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
