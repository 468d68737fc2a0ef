"""keras.applications backbones (mobilenet_v2, efficientnet_b0, resnet50) with a new head, for
transfer learning: --model=NAME --pretrained=none|imagenet|PATH.

Each backbone was trained on ImageNet with its own preprocessing: MobileNetV2 on pixels scaled to
[-1, 1], ResNet50 on mean-subtracted BGR (caffe style), EfficientNet on 0-255 pixels that it
normalizes itself. Feeding one the wrong range is the transfer-learning form of unnormalized
pixels: it trains, but the pretrained features are wasted. So the model takes pixels in [0, 1],
as the pipeline makes them without --standardize, refuses anything else (below), and applies
the backbone's own preprocessing inside, where the SavedModel carries it. Grayscale images are
repeated to three channels, and images under MIN_SIDE pixels are resized up to it (the model
says so when built).
"""

import dataclasses
import warnings
from collections.abc import Callable

import keras
import tensorflow as tf
from absl import logging

MIN_SIDE = 32  # keras.applications' smallest input for all three.
PIXEL_TOLERANCE = 1e-3


@dataclasses.dataclass(frozen=True)
class Backbone:
    constructor: Callable[..., keras.Model]
    preprocess: Callable  # 0-255 RGB -> what the network was trained on.
    trained_on: str  # That range, in words.


BACKBONES = {
    "mobilenet_v2": Backbone(keras.applications.MobileNetV2, keras.applications.mobilenet_v2.preprocess_input,
                             "pixels scaled to [-1, 1]"),
    "efficientnet_b0": Backbone(keras.applications.EfficientNetB0,
                                keras.applications.efficientnet.preprocess_input,  # The identity: it normalizes inside.
                                "0-255 pixels, normalized by its own first layers"),
    "resnet50": Backbone(keras.applications.ResNet50, keras.applications.resnet50.preprocess_input,
                         "BGR pixels minus the ImageNet mean (caffe style)"),
}


def backbone_input_shape(input_shape: tuple[int, int, int]) -> tuple[int, int, int]:
    """The shape the backbone sees: three channels, each side at least MIN_SIDE."""
    height, width = input_shape[:2]
    return max(height, MIN_SIDE), max(width, MIN_SIDE), 3


def backbone_inputs(name: str, pixels: tf.Tensor) -> tf.Tensor:
    """[0, 1] images [B, H, W, C] -> what backbone `name` was trained on: three channels, sides
    of at least MIN_SIDE, its own preprocessing of 0-255 values."""
    if pixels.shape[-1] == 1:
        pixels = tf.repeat(pixels, 3, axis=-1)
    resize_to = backbone_input_shape(tuple(pixels.shape[1:]))[:2]
    if resize_to != tuple(pixels.shape[1:3]):
        pixels = tf.image.resize(pixels, resize_to)
    return BACKBONES[name].preprocess(pixels * 255.0)


class TransferModel(keras.Model):
    """[0, 1] pixels -> the backbone's preprocessing -> the backbone (global average pooled) ->
    dropout -> a linear head returning logits."""

    def __init__(self, name: str, input_shape: tuple[int, int, int], num_classes: int, dropout: float,
                 weights: str | None, **kwargs):
        super().__init__(name=name, **kwargs)
        self._trained_on = BACKBONES[name].trained_on
        self.backbone = BACKBONES[name].constructor(include_top=False, weights=weights, pooling="avg",
                                               input_shape=backbone_input_shape(input_shape))
        self.dropout = keras.layers.Dropout(dropout)
        self.head = keras.layers.Dense(num_classes)

    def call(self, images, training=False):
        features = self.backbone(backbone_inputs(self.name, self._checked_pixels(images)), training=training)
        return self.head(self.dropout(features, training=training))

    def _checked_pixels(self, images):
        """`images`, after an assertion that they are [0, 1] pixels (graph mode: an op to depend on)."""
        low, high = tf.reduce_min(images), tf.reduce_max(images)
        ok = tf.logical_and(low >= -PIXEL_TOLERANCE, high <= 1.0 + PIXEL_TOLERANCE)
        message = (f"{self.name} takes pixels in [0, 1] and applies its own preprocessing to them (it was "
                   f"trained on {self._trained_on}); these images are outside [0, 1]: preprocessed "
                   "already (preprocess_input, or --standardize), or 0-255 values. Pass [0, 1] pixels.")
        check = tf.debugging.Assert(ok, [message, "min", low, "max", high])
        with tf.control_dependencies([check]):
            return tf.identity(images)


def builder(name: str):
    """The registry builder of backbone `name`: (input_shape, num_classes, *, dropout, weights, ...)
    -> a TransferModel; width and depth do not apply to it."""

    def build(input_shape: tuple[int, int, int], num_classes: int, *, width: int, depth: int, dropout: float,
              weights: str = "none") -> keras.Model:
        del width, depth  # The backbone's architecture is fixed.
        if backbone_input_shape(input_shape) != (*input_shape[:2], 3):
            logging.info("%s: %dx%dx%d images are brought to %s inside the model (%s).", name, *input_shape,
                         "x".join(map(str, backbone_input_shape(input_shape))),
                         ", ".join(part for part, applies in (
                             ("repeated to 3 channels", input_shape[2] == 1),
                             (f"resized up to its smallest input, {MIN_SIDE} pixels",
                              min(input_shape[:2]) < MIN_SIDE)) if applies))
        if weights == "none":
            return TransferModel(name, input_shape, num_classes, dropout, None)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            model = TransferModel(name, input_shape, num_classes, dropout, weights)
        refuse_partly_loaded(weights, caught)
        return model

    return build


def refuse_partly_loaded(weights: str, caught: list) -> None:
    """Raises ValueError if Keras loaded `weights` only in part: it warns, and leaves the layers
    it found nothing for with their random initialization."""
    skipped = [str(warning.message) for warning in caught if "freshly-initialized" in str(warning.message)
               or "Skipping" in str(warning.message)]
    if skipped:
        raise ValueError(f"{weights} does not fit: Keras skipped {len(skipped)} parts of the model "
                         f"({skipped[0].splitlines()[0]})")


BUILDERS = {name: builder(name) for name in BACKBONES}
