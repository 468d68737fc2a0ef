"""The outer loop: epochs, evaluation, checkpoints, summaries, export. Reads top to bottom."""

import json
import os

import keras
from absl import logging

from data import catalog, pipeline
from models import registry
from trainer import steps
from trainer.checkpoints import RunCheckpoints, export_saved_model, restore_model_weights
from trainer.config import TrainConfig
from trainer.errors import TapeloopError
from trainer.flags import serialize_config
from trainer.progress import IntervalTimer, Progress
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
    model = registry.build_model(config.model, spec.image_shape, spec.num_classes, config)
    optimizer = make_optimizer(config)
    optimizer.build(model.trainable_variables)

    os.makedirs(config.run_dir, exist_ok=True)
    checkpoints = RunCheckpoints(config.run_dir, model, optimizer, config.keep_checkpoints)
    if checkpoints.restore_latest():
        logging.info("Resuming from %s at step %d.", checkpoints.latest.latest_checkpoint,
                     int(optimizer.iterations.numpy()))
    write_flags_file(config)
    writers = SummaryWriters(config.run_dir)

    train_metrics = steps.make_metrics(with_gradients=True)
    eval_metrics = steps.make_metrics(with_gradients=False)
    train_step = steps.make_train_step(model, optimizer, train_metrics, config.jit_compile)
    eval_step = steps.make_eval_step(model, eval_metrics)
    validation_batches = (pipeline.eval_batches(data.validation, spec, config)
                          if data.validation is not None else None)

    progress = Progress(config.progress, steps_per_epoch, total_steps)
    timer = IntervalTimer()

    def log_training(epoch, step):
        interval_steps, seconds = timer.close()
        checkpoints.training_seconds.assign_add(seconds)
        scalars = steps.read_and_reset(train_metrics)
        scalars["perf/examples_per_sec"] = interval_steps * config.batch_size / seconds
        scalars["learning_rate"] = float(keras.ops.convert_to_numpy(optimizer.learning_rate))
        write_scalars(writers.train, scalars, step)
        progress.log_interval(epoch, step, scalars)

    step = int(optimizer.iterations.numpy())
    while step < total_steps:
        epoch, step_in_epoch = divmod(step, steps_per_epoch)
        progress.start_epoch(epoch, step_in_epoch)
        timer.restart()
        for images, labels in pipeline.train_batches(data.train, spec, config, epoch, step_in_epoch):
            train_step(images, labels)
            timer.tick()
            step += 1
            if step % config.log_every_steps == 0:
                log_training(epoch, step)
            at_epoch_end = step % steps_per_epoch == 0
            if config.checkpoint_every_steps and step % config.checkpoint_every_steps == 0 and not at_epoch_end:
                checkpoints.save_latest(epochs_done=step // steps_per_epoch)
            if step >= total_steps:
                break
        if timer.steps:
            log_training(epoch, step)

        if validation_batches is not None:
            results = evaluate(eval_step, eval_metrics, validation_batches)
            write_scalars(writers.eval, results, step)
            improved = checkpoints.save_best_if_improved(results["accuracy"], epochs_done=step // steps_per_epoch)
            progress.log_eval(epoch, step, results, improved)
        checkpoints.save_latest(epochs_done=step // steps_per_epoch)
    writers.close()

    # The outcome: the best weights (by validation accuracy), scored once more and on test, exported.
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
        "eval": _accuracy_and_loss(final_eval) if final_eval else None,
        "test": _accuracy_and_loss(final_test),
        "steps": step,
        "epochs": step / steps_per_epoch,
        "wall_seconds": checkpoints.elapsed_seconds(),
        "examples_per_sec": step * config.batch_size / float(checkpoints.training_seconds.numpy()),
    }
    write_text_atomic(os.path.join(config.run_dir, "results.json"), json.dumps(results, indent=2) + "\n")
    return results


def _accuracy_and_loss(results: dict[str, float]) -> dict[str, float]:
    return {"accuracy": results["accuracy"], "loss": results["loss/total"]}


def evaluate(eval_step, eval_metrics, batches) -> dict[str, float]:
    """Runs `eval_step` over every batch; returns the metrics over the whole split."""
    for images, labels in batches:
        eval_step(images, labels)
    return steps.read_and_reset(eval_metrics)


def make_optimizer(config: TrainConfig) -> keras.optimizers.Optimizer:
    """adam, adamw (decay spared for biases and norm scales) or sgd with momentum."""
    if config.optimizer == "adam":
        return keras.optimizers.Adam(config.learning_rate)
    if config.optimizer == "adamw":
        optimizer = keras.optimizers.AdamW(config.learning_rate, weight_decay=config.weight_decay)
        optimizer.exclude_from_weight_decay(var_names=["bias", "gamma", "beta"])
        return optimizer
    return keras.optimizers.SGD(config.learning_rate, momentum=config.momentum)


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
