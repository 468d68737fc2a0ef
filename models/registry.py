"""Model name -> builder(input_shape, num_classes, config) -> keras.Model returning logits."""

from collections.abc import Callable

import keras
import numpy as np

from models import cnn, mlp
from trainer.config import TrainConfig
from trainer.errors import TapeloopError

Builder = Callable[[tuple[int, int, int], int, TrainConfig], keras.Model]

BUILDERS: dict[str, Builder] = {"cnn": cnn.build, "mlp": mlp.build}


def smallest_image_side(name: str, config: TrainConfig) -> int:
    """The smallest height and width `name` accepts: the cnn halves them once per stage."""
    return 2 ** config.model_depth if name == "cnn" else 1


def build_model(name: str, input_shape: tuple[int, int, int], num_classes: int,
                config: TrainConfig) -> keras.Model:
    """Builds the model and its variables (by calling it once), ready for restoring."""
    if name not in BUILDERS:
        raise TapeloopError(
            stage="model", problem=f"unknown model {name!r}", expected=f"one of {', '.join(sorted(BUILDERS))}",
            found=repr(name), fix="pass --model with one of the names above, or add yours to models.registry.BUILDERS")
    smallest = smallest_image_side(name, config)
    if min(input_shape[:2]) < smallest:
        raise TapeloopError(
            stage="model", problem=f"the images are too small for --model={name} with --model_depth={config.model_depth}",
            expected=f"images of at least {smallest}x{smallest} pixels (each of the {config.model_depth} stages halves "
                     "them)", found=f"images of {input_shape[0]}x{input_shape[1]}",
            fix=f"lower --model_depth to {max(1, min(input_shape[:2]).bit_length() - 1)} or less, or bring the "
                f"images to {smallest} pixels or more (--image_size for image folders)")
    model = BUILDERS[name](input_shape, num_classes, config)
    model(np.zeros((1, *input_shape), np.float32), training=False)
    return model
