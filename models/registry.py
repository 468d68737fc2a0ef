"""Model name -> builder(input_shape, num_classes, *, width, depth, dropout) -> keras.Model
returning logits, and the smallest image side a model takes. Nothing here reads flags:
trainer/setup.py turns them into these keyword arguments. Register your own model by adding
its builder to BUILDERS (and its smallest side, if it has one, to SMALLEST_IMAGE_SIDE)."""

import keras
import numpy as np

from models import cnn, mlp

BUILDERS = {"cnn": cnn.build, "mlp": mlp.build}
SMALLEST_IMAGE_SIDE = {"cnn": cnn.smallest_image_side}  # depth -> pixels; models not listed take any size.


def smallest_image_side(name: str, depth: int) -> int:
    """The smallest height and width model `name` takes at `depth`."""
    return SMALLEST_IMAGE_SIDE[name](depth) if name in SMALLEST_IMAGE_SIDE else 1


def build_model(name: str, input_shape: tuple[int, int, int], num_classes: int, **settings) -> keras.Model:
    """Builds model `name` with its `settings` (width, depth, dropout) and creates its variables
    (by calling it once), ready for restoring."""
    model = BUILDERS[name](input_shape, num_classes, **settings)
    model(np.zeros((1, *input_shape), np.float32), training=False)
    return model
