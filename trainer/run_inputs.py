"""What a run is built from, checked before anything is written: data, loss, model, optimizer,
weight average and stage checks."""

import dataclasses
import os

import keras
import numpy as np
import tensorflow as tf
from absl import logging

from data import catalog, diagnostics, pipeline, service, sources
from data.files import unreadable_reason
from data.mixing import MixSettings
from models import registry, size, validation
from trainer import fine_tuning, losses, precision, warm_start
from trainer.averaging import WeightAverage
from trainer.batchnorm import batch_norm_layers, moving_average_momentum, set_momentum
from trainer.checkpoints import final_weights_dir, latest_checkpoint, restore_model_weights
from trainer.checks import StageChecks
from settings.config import TrainConfig
from settings.errors import TapeloopError, described
from trainer.run_directory import load_run_config
from trainer.schedules import LearningRate

MIXED_PRECISION_POLICIES = {"none": "float32", "bfloat16": "mixed_bfloat16", "float16": "mixed_float16"}


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
    backbone: fine_tuning.BackboneOptimizer | None  # --unfreeze_after_epochs: the backbone's own optimizer.
    weight_average: WeightAverage | None  # --ema_decay
    strategy: tf.distribute.Strategy
    model_size: dict  # "parameters" and "forward_flops_per_example" (models/size.py).
    precision: precision.Precision  # What --mixed_precision computes in on this machine, and why.
    batchnorm_momentum: float | None  # What the batch-norm layers train with (None: the model has none).


def prepare_run(config: TrainConfig, strategy: tf.distribute.Strategy | None = None) -> RunInputs:
    """Loads and checks the data (logging the pre-flight report), builds loss, model and optimizer
    (in the `strategy`'s scope, the default strategy if None)."""
    strategy = strategy or tf.distribute.get_strategy()
    keras.utils.set_random_seed(config.seed)  # Python, NumPy and TensorFlow.
    if config.deterministic:
        tf.config.experimental.enable_op_determinism()
    data = pipeline.prepare_data(config)
    if config.data_service:
        service.wait_for_service(config.data_service, config.data_service_timeout)
    report = diagnostics.preflight(data, config)
    for line in report.lines:
        logging.info("Data: %s", line)
    for warning in report.warnings:
        logging.warning(warning.paragraph())
    steps_per_epoch = _steps_per_epoch(config, len(data.train[1]), strategy.num_replicas_in_sync)
    total_steps = planned_steps(config, steps_per_epoch)
    class_weights = losses.class_weights(config.class_weights, data.train[1], data.spec.num_classes)
    learning_rate = LearningRate(config, total_steps, steps_per_epoch)
    compute_precision = run_precision(config)
    logging.info("Precision: %s.", compute_precision.reason)
    emulation_warning = compute_precision.emulation_warning()
    if emulation_warning:
        logging.warning(emulation_warning.paragraph())
    with strategy.scope():  # Keras optimizers must be built in the scope, before the first step.
        model = build_model(config, data.spec, pretrained=not resuming(config))
        warm_start_model(config, model, data.spec)  # Before the weight average copies the initial weights.
        parameters = size.parameter_count(model)  # Frozen ones included.
        frozen = fine_tuning.freeze(config, model)  # Before the optimizer: frozen variables get no slots.
        optimizer = make_optimizer(config, learning_rate)
        optimizer.build(model.trainable_variables)
        backbone = fine_tuning.backbone_optimizer(config, frozen, make_optimizer, learning_rate, optimizer)
        weight_average = make_weight_average(config, model)
    batchnorm_momentum = train_with_momentum(config, model, steps_per_epoch, total_steps)
    model_size = {"parameters": parameters,
                  "forward_flops_per_example": size.forward_flops(model, data.spec.image_shape)}
    logging.info("Model: %s, %s parameters, %.1f MFLOPs per example (forward pass; a multiply-add is 2).",
                 config.model, f"{model_size['parameters']:,}", model_size["forward_flops_per_example"] / 1e6)
    return RunInputs(
        spec=data.spec, data=data, report=report, steps_per_epoch=steps_per_epoch, total_steps=total_steps,
        loss=losses.from_config(config, data.spec.num_classes), class_weights=class_weights,
        example_weights=losses.example_weights(data.train[1], class_weights, data.train_sample_weights),
        model=model, learning_rate=learning_rate, optimizer=optimizer, backbone=backbone,
        weight_average=weight_average,
        strategy=strategy, model_size=model_size, precision=compute_precision, batchnorm_momentum=batchnorm_momentum)


def train_with_momentum(config: TrainConfig, model: keras.Model, steps_per_epoch: int,
                        total_steps: int) -> float | None:
    """Sets the model's batch-norm momentum (--batchnorm_momentum, or one spanning at most an epoch and
    a fifth of the run) and logs it; None if the model has no batch norm."""
    if not batch_norm_layers(model):
        return None
    momentum = moving_average_momentum(config.batchnorm_momentum, steps_per_epoch, total_steps)
    set_momentum(model, momentum)
    logging.info("Batch norm: moving statistics with momentum %.4g, %s (averages over about the last %d steps; an "
                 "epoch is %d, the run %d).", momentum, "as --batchnorm_momentum asks" if config.batchnorm_momentum
                 else "from the run's length", round(1 / (1 - momentum)), steps_per_epoch, total_steps)
    return momentum


def run_precision(config: TrainConfig) -> precision.Precision:
    """--mixed_precision on this machine (auto: bfloat16 where the hardware runs it natively)."""
    return precision.for_run(config.mixed_precision, config.strategy)


def planned_steps(config: TrainConfig, steps_per_epoch: int) -> int:
    """The updates a run of `config` plans: its epochs, or fewer when --max_steps caps them."""
    total_steps = config.epochs * steps_per_epoch
    return min(total_steps, config.max_steps) if config.max_steps else total_steps


def _steps_per_epoch(config: TrainConfig, train_examples: int, replicas: int) -> int:
    """Full batches per epoch; refuses a split smaller than one batch or a batch the replicas cannot share."""
    batch_size = pipeline.update_batch_size(config)
    steps_per_epoch = pipeline.steps_per_epoch(train_examples, batch_size)
    if steps_per_epoch == 0:
        raise TapeloopError(
            stage="data", problem="the training split is smaller than one batch",
            expected=f"at least {batch_size} training examples (--batch_size={config.batch_size}"
                     + (f" x --accumulate_steps={config.accumulate_steps})" if config.accumulate_steps > 1 else ")"),
            found=f"{train_examples} after holding out --validation_split={config.validation_split}",
            fix="lower --batch_size or --validation_split, or use more data")
    if config.batch_size % replicas:
        raise TapeloopError(
            stage="distribute", problem="the global batch does not split evenly over the replicas",
            expected=f"--batch_size a multiple of the {replicas} replicas", found=f"--batch_size={config.batch_size}",
            fix=f"use --batch_size={max(replicas, config.batch_size // replicas * replicas)}")
    return steps_per_epoch


def model_settings(config: TrainConfig, pretrained: bool = True) -> dict:
    """The model flags as the keyword arguments every registered model takes, and --pretrained
    for the models that take it (as "none" if not `pretrained`: weights restored afterwards)."""
    settings = {"width": config.model_width, "depth": config.model_depth, "dropout": config.dropout}
    settings.update(validation.extra_settings(config))
    if config.model in registry.PRETRAINED:
        settings["weights"] = config.pretrained if pretrained else "none"
    return settings


def build_model(config: TrainConfig, spec: catalog.DatasetSpec, pretrained: bool = True) -> keras.Model:
    """The registry's --model for `spec`, computing in the run's precision (variables float32),
    with its --pretrained weights unless not `pretrained` (a caller about to restore a checkpoint)."""
    validation.refuse_unbuildable(config, spec.image_shape)
    refuse_unreadable_weights(config)
    previous_policy = keras.config.dtype_policy()
    keras.config.set_dtype_policy(MIXED_PRECISION_POLICIES[run_precision(config).setting])
    try:  # Layers take the policy when they are created; restoring it keeps other models float32.
        return registry.build_model(config.model, spec.image_shape, spec.num_classes,
                                    **model_settings(config, pretrained))
    except Exception as error:  # Keras' download raises a bare Exception when offline.
        if not pretrained or config.model not in registry.PRETRAINED or config.pretrained == "none":
            raise
        raise pretrained_weights_error(config, error) from None
    finally:
        keras.config.set_dtype_policy(previous_policy)


def refuse_unreadable_weights(config: TrainConfig) -> None:
    """A --pretrained weights file that is not there, or is not a regular file, is named before any work."""
    unreadable = (config.pretrained not in ("none", "imagenet")
                  and unreadable_reason(os.path.expanduser(config.pretrained)))
    if unreadable:
        raise TapeloopError(
            stage="model", problem=f"--pretrained={config.pretrained} cannot be read", expected="a Keras weights "
            "file saved from the same backbone", found=unreadable,
            fix="check the path (it is read as given, relative to the working directory)")


def pretrained_weights_error(config: TrainConfig, error: Exception) -> TapeloopError:
    """The paragraph for --pretrained weights that could not be fetched or do not fit."""
    where = ("Keras' download of the ImageNet weights (it needs the network, or the file already in "
             "~/.keras/models)" if config.pretrained == "imagenet" else config.pretrained)
    return TapeloopError(
        stage="model", problem=f"the --pretrained weights of {config.model} could not be loaded",
        expected=f"{where}, holding keras.applications' {config.model} without its top",
        found=described(error),
        fix="on a machine without network, copy the file Keras downloads into ~/.keras/models or pass "
            "--pretrained=PATH; a PATH must come from the same backbone (model.backbone.save_weights)")


def warm_start_model(config: TrainConfig, model: keras.Model, spec: catalog.DatasetSpec) -> None:
    """--init_from: the other run's model is rebuilt from its flags and restored as chosen (by
    default as its train.py scored it: best/ or the last checkpoint, averaged under --ema_decay);
    its matching variables are copied into `model` (its head only if both runs have `spec`'s
    class names), and one paragraph says what was and was not."""
    if not config.init_from:
        return
    if resuming(config):
        logging.info("Resuming: the run continues from its own checkpoint, not from --init_from=%s.",
                     config.init_from)  # So a resume does not need the other run any more.
        return
    run_dir, choice = warm_start.split_reference(config.init_from)
    try:
        source_config = load_run_config(run_dir)
    except TapeloopError as error:
        raise TapeloopError(stage="init_from", problem=f"--init_from={config.init_from} is not a run to start from",
                            expected=error.expected, found=error.found,
                            fix="pass the run directory of a run scripts/train.py wrote") from None
    if source_config.model != config.model:  # Another architecture's variables match only by accident.
        raise TapeloopError(stage="init_from", problem=f"--init_from={config.init_from} is a run of another model",
                            expected=f"a run of --model={config.model}", found=f"--model={source_config.model}",
                            fix=f"pass a {config.model} run, or train with --model={source_config.model}")
    source_spec = sources.dataset_spec(source_config)
    source = build_model(source_config, source_spec, pretrained=False)
    folder = os.path.join(run_dir, warm_start.WEIGHT_FOLDERS[choice]) if choice else final_weights_dir(run_dir)
    weights = restore_model_weights(source, folder, make_weight_average(source_config, source))
    loaded, kept = warm_start.copy_matching(model, source, config.init_from,
                                            same_classes=source_spec.class_names == spec.class_names)
    (logging.warning if kept else logging.info)(warm_start.summary(config.init_from, weights, loaded, kept))


def resuming(config: TrainConfig) -> bool:
    """Whether the run has a checkpoint of its own to continue from (which replaces any starting weights)."""
    return bool(config.run_dir and latest_checkpoint(os.path.join(config.run_dir, "checkpoints")))


def make_weight_average(config: TrainConfig, model: keras.Model) -> WeightAverage | None:
    """The --ema_decay average of `model`'s weights, or None without it."""
    return WeightAverage(model, config.ema_decay) if config.ema_decay else None


def make_stage_checks(config: TrainConfig, spec: catalog.DatasetSpec, training: bool = False) -> StageChecks:
    """The --checks guards for batches of `spec` as the pipeline prepares them: for `training`
    batches under MixUp/CutMix, labels are soft targets."""
    label_format = "soft" if training and MixSettings.from_config(config).active else config.label_format
    return StageChecks(config.checks, spec.image_shape, pipeline.model_input_range(spec, config.standardize),
                       spec.num_classes, label_format, loss_scaling=config.mixed_precision == "float16")


def make_optimizer(config: TrainConfig, learning_rate=None) -> keras.optimizers.Optimizer:
    """adam, adamw or sgd with momentum, at `learning_rate` (a schedule; --learning_rate if None).

    adamw and sgd decay kernels by --weight_decay; biases and norm scales are spared.
    """
    rate = config.learning_rate if learning_rate is None else learning_rate
    if config.optimizer == "adam":
        optimizer = keras.optimizers.Adam(rate, beta_1=config.adam_beta1, beta_2=config.adam_beta2)
    elif config.optimizer == "adamw":
        optimizer = keras.optimizers.AdamW(rate, weight_decay=config.weight_decay, beta_1=config.adam_beta1,
                                           beta_2=config.adam_beta2)
    else:
        optimizer = keras.optimizers.SGD(rate, momentum=config.momentum, weight_decay=config.weight_decay or None)
    if config.optimizer != "adam":
        optimizer.exclude_from_weight_decay(var_names=["bias", "gamma", "beta"])
    if config.mixed_precision == "float16":
        return keras.optimizers.LossScaleOptimizer(optimizer)
    return optimizer
