"""--freeze=backbone and --unfreeze_after_epochs: the two-phase fine-tune in one run.

The backbone is every layer of the model but its `head` (every registered model names its last
layer so). Frozen, its layers are `trainable = False`, Keras' freezing: the optimizer is built
without them (no slots, no weight decay) and their batch-norm layers normalize with their moving
statistics and leave them alone, in training too. After --unfreeze_after_epochs epochs the
backbone trains as well, with an optimizer of its own at --backbone_lr_scale of the schedule's
rate: its slots are made at the start, so the checkpoint holds the same variables before and
after the unfreeze and a resume either side of it is exact. A compiled step bakes in which
layers train, so the loop compiles its steps again at the unfreeze.
"""

import dataclasses

import keras
from absl import logging

from models import registry
from settings.config import TrainConfig
from settings.errors import TapeloopError


def backbone_layers(model: keras.Model) -> list[keras.layers.Layer]:
    """Every direct layer of `model` but its head."""
    head = registry.head_of(model)
    if head is None:
        raise TapeloopError(
            stage="model", problem=f"--freeze=backbone cannot tell {model.name}'s backbone from its head",
            expected="a model whose last layer is its `head` attribute, as every registered model's is",
            found=f"{type(model).__name__} without a `head` layer", fix="name the model's last layer `head`")
    return [layer for layer in model.layers if layer is not head]


def set_backbone_trainable(model: keras.Model, trainable: bool) -> None:
    for layer in backbone_layers(model):
        layer.trainable = trainable


@dataclasses.dataclass
class BackboneOptimizer:
    """The optimizer of the backbone's variables once they train (after the unfreeze)."""

    optimizer: keras.optimizers.Optimizer
    variables: list

    def apply_own(self, pairs: list) -> list:
        """Applies the (gradient, variable) pairs of the backbone's variables; returns the others."""
        ids = {id(variable) for variable in self.variables}
        own = [pair for pair in pairs if id(pair[1]) in ids]
        if own:  # Decided when the step is traced: before the unfreeze the backbone is not trained.
            self.optimizer.apply_gradients(own)
        return [pair for pair in pairs if id(pair[1]) not in ids]


def refuse_unsupported(config: TrainConfig) -> None:
    """The fine-tuning flags that do not go together."""
    if config.unfreeze_after_epochs and config.freeze != "backbone":
        raise TapeloopError(
            stage="model", problem="--unfreeze_after_epochs has nothing to unfreeze",
            expected="--freeze=backbone with it", found=f"--freeze={config.freeze}",
            fix="add --freeze=backbone, or drop --unfreeze_after_epochs")
    if config.unfreeze_after_epochs >= config.epochs and config.freeze == "backbone":
        raise TapeloopError(
            stage="model", problem=f"--unfreeze_after_epochs={config.unfreeze_after_epochs} can never happen in a "
            f"run of --epochs={config.epochs}", expected="--unfreeze_after_epochs below --epochs (the backbone "
            "trains from that epoch on)", found=f"--unfreeze_after_epochs={config.unfreeze_after_epochs} "
            f"--epochs={config.epochs}", fix=f"lower --unfreeze_after_epochs, or raise --epochs above "
            f"{config.unfreeze_after_epochs}")
    if config.unfreeze_after_epochs and config.mixed_precision == "float16":
        raise TapeloopError(
            stage="model", problem="--unfreeze_after_epochs cannot be combined with float16 loss scaling",
            expected="--mixed_precision=none or bfloat16 (the backbone's optimizer would need the head's "
                     "loss scale)", found="--mixed_precision=float16", fix="use --mixed_precision=bfloat16")


def freeze(config: TrainConfig, model: keras.Model) -> list:
    """Applies --freeze; returns the variables it froze (none without it)."""
    refuse_unsupported(config)
    if config.freeze != "backbone":
        return []
    trainable_before = list(model.trainable_variables)
    set_backbone_trainable(model, False)
    still_trainable = {id(variable) for variable in model.trainable_variables}
    frozen = [variable for variable in trainable_before if id(variable) not in still_trainable]
    logging.info("--freeze=backbone: %d of %d trainable variables frozen (their batch norm in inference mode)%s.",
                 len(frozen), len(trainable_before),
                 f" until epoch {config.unfreeze_after_epochs + 1}" if config.unfreeze_after_epochs else "")
    return frozen


def backbone_optimizer(config: TrainConfig, frozen: list, make_optimizer, learning_rate,
                       head_optimizer: keras.optimizers.Optimizer) -> BackboneOptimizer | None:
    """With --unfreeze_after_epochs, the optimizer of the `frozen` variables for after the
    unfreeze: --backbone_lr_scale times `learning_rate` at the head optimizer's step."""
    if not config.unfreeze_after_epochs:
        return None
    optimizer = make_optimizer(config, lambda: config.backbone_lr_scale * learning_rate(head_optimizer.iterations))
    optimizer.build(frozen)
    return BackboneOptimizer(optimizer, frozen)


def unfreeze_due(config: TrainConfig, model: keras.Model, epoch: int) -> bool:
    """Whether the backbone, still frozen, starts training at `epoch`."""
    return (bool(config.unfreeze_after_epochs) and epoch >= config.unfreeze_after_epochs
            and not all(layer.trainable for layer in backbone_layers(model)))


def unfreeze(config: TrainConfig, model: keras.Model, epoch: int) -> None:
    set_backbone_trainable(model, True)
    logging.info("Epoch %d: the backbone is unfrozen and trains from here at %.3g x the learning rate "
                 "(--unfreeze_after_epochs=%d).", epoch + 1, config.backbone_lr_scale, config.unfreeze_after_epochs)
