"""Model name -> builder(input_shape, num_classes, *, width, depth, dropout) -> keras.Model
returning logits, the smallest image side a model takes, the depths it allows, and which models
take [0, 1] pixels with pretrained weights (the keras.applications backbones). Nothing here
reads flags: trainer/run_inputs.py turns them into these keyword arguments. Register your own model by
adding its builder to BUILDERS (and its smallest side, if it has one, to SMALLEST_IMAGE_SIDE; its
rule for depths, if it has one, to DEPTHS; the further settings it takes to EXTRA_SETTINGS)."""

import keras
import numpy as np

from models import applications, cnn, mlp, resnet

BUILDERS = {"cnn": cnn.build, "lean_cnn": cnn.build_lean, "mlp": mlp.build, "resnet": resnet.build,
            **applications.BUILDERS}
# (depth, **the model's EXTRA_SETTINGS) -> pixels; models not listed take any size.
SMALLEST_IMAGE_SIDE = {"cnn": cnn.smallest_image_side, "lean_cnn": cnn.smallest_lean_image_side}
DEPTHS = {"resnet": (resnet.is_valid_depth, resnet.DEPTHS_EXPECTED)}  # (depth -> allowed?, the rule in words)
# The settings a model's builder takes beyond width, depth and dropout, each a flag of the same name
# (--fused_batchnorm: models/fused_batchnorm.py; the others: models/cnn.py).
CONV_BLOCK_SETTINGS = ("filters_per_stage", "kernel_sizes", "conv_padding", "batchnorm", "fused_batchnorm",
                       "pool_first", "dense_units")
EXTRA_SETTINGS = {"cnn": ("convs_per_stage", *CONV_BLOCK_SETTINGS), "lean_cnn": CONV_BLOCK_SETTINGS,
                  "resnet": ("fused_batchnorm",)}
# Models whose builder takes `weights` (--pretrained) and whose input is [0, 1] pixels, normalized
# inside the model as the pretrained weights expect (so the pipeline must not standardize).
PRETRAINED = {name: backbone.trained_on for name, backbone in applications.BACKBONES.items()}


def smallest_image_side(name: str, depth: int, **settings) -> int:
    """The smallest height and width model `name` takes at `depth` with its further `settings`."""
    return SMALLEST_IMAGE_SIDE[name](depth, **settings) if name in SMALLEST_IMAGE_SIDE else 1


def depth_rule_broken(name: str, depth: int) -> str | None:
    """The depths model `name` allows, in words, if `depth` is not one of them; else None."""
    if name in DEPTHS and not DEPTHS[name][0](depth):
        return DEPTHS[name][1]
    return None


def head_of(model: keras.Model) -> keras.layers.Layer | None:
    """The model's classification head: the last layer, which every registered model keeps as its
    `head` attribute (None for a model that has none). Fine-tuning and warm starts both ask here."""
    head = getattr(model, "head", None)
    return head if isinstance(head, keras.layers.Layer) else None


def build_model(name: str, input_shape: tuple[int, int, int], num_classes: int, **settings) -> keras.Model:
    """Builds model `name` with its `settings` (width, depth, dropout) and creates its variables
    (by calling it once), ready for restoring."""
    model = BUILDERS[name](input_shape, num_classes, **settings)
    model(np.zeros((1, *input_shape), np.float32), training=False)
    return model
