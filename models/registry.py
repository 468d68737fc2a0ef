"""Model name -> builder(input_shape, num_classes, config) -> keras.Model returning logits."""

from collections.abc import Callable

import keras
import numpy as np

from models import cnn, mlp
from trainer.config import TrainConfig
from trainer.errors import TapeloopError

Builder = Callable[[tuple[int, int, int], int, TrainConfig], keras.Model]

BUILDERS: dict[str, Builder] = {"cnn": cnn.build, "mlp": mlp.build}


def build_model(name: str, input_shape: tuple[int, int, int], num_classes: int,
                config: TrainConfig) -> keras.Model:
    """Builds the model and its variables (by calling it once), ready for restoring."""
    if name not in BUILDERS:
        raise TapeloopError(
            stage="model", problem=f"unknown model {name!r}", expected=f"one of {', '.join(sorted(BUILDERS))}",
            found=repr(name), fix="pass --model with one of the names above, or add yours to models.registry.BUILDERS")
    model = BUILDERS[name](input_shape, num_classes, config)
    model(np.zeros((1, *input_shape), np.float32), training=False)
    return model
