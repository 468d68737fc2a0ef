"""RandAugment (Cubuk et al., 2020): every training image goes through N operations drawn at random,
each image its own, all at one magnitude M on a 0-10 scale.

The operations and their strength at M = 10 follow timm's "increasing" variants (a larger M is
always a stronger change): rotate up to 30 degrees, shear up to 0.3, translate up to 45% of the
image, solarize above a threshold falling to 0, posterize to 4 bits, and contrast, brightness,
sharpness and color factors 1 +/- 0.9; signed changes take a random sign per image. Color is left
out for one-channel images, where it is the identity. The operations work on [0, 1] pixels, before
standardization, and keep them in [0, 1]; pixels a geometric operation uncovers are black (0), as
in data.pipeline.augment.

Draws come from stateless ops keyed by a [2] seed, so a batch is a pure function of its seed. Each
layer partitions the batch by the operation each image drew and runs every operation once, on its
images only; a geometric one is a projective resampling with a matrix per image.
"""

import math

import tensorflow as tf

MAX_MAGNITUDE = 10.0
MAX_ROTATION_DEGREES = 30.0
MAX_SHEAR = 0.3
MAX_TRANSLATE = 0.45  # A fraction of the image's width (x) or height (y).
MAX_ENHANCE = 0.9  # contrast, brightness, sharpness and color: a factor of 1 +/- 0.9 at M = 10.
MAX_POSTERIZE_BITS_DROPPED = 4
GRAY_WEIGHTS = (0.299, 0.587, 0.114)  # ITU-R 601 luma, as PIL's convert("L").
SMOOTHING_KERNEL = ((1.0, 1.0, 1.0), (1.0, 5.0, 1.0), (1.0, 1.0, 1.0))  # PIL's SMOOTH, sharpness' blur.
GEOMETRIC = ("rotate", "shear_x", "shear_y", "translate_x", "translate_y")  # The first OPERATIONS.


def operations(channels: int) -> tuple[str, ...]:
    """The operations RandAugment draws from for images of `channels` channels."""
    return tuple(name for name in OPERATIONS if channels == 3 or name != "color")


def randaugment(pixels: tf.Tensor, layers: int, magnitude: float, seed: tf.Tensor) -> tf.Tensor:
    """[B, H, W, C] pixels in [0, 1] -> the same shape, each image through `layers` operations drawn
    uniformly (with replacement) from `operations(C)`, at `magnitude` (0-10)."""
    names = operations(pixels.shape[-1])
    strength = magnitude / MAX_MAGNITUDE
    for layer_seed in tf.unstack(tf.random.experimental.stateless_split(seed, layers)):
        choice_seed, sign_seed = tf.unstack(tf.random.experimental.stateless_split(layer_seed, 2))
        size = tf.shape(pixels)[0]
        chosen = tf.random.stateless_uniform([size], choice_seed, maxval=len(names), dtype=tf.int32)
        signed = tf.where(tf.random.stateless_uniform([size], sign_seed) < 0.5, -strength, strength)
        pixels = apply_operations(pixels, names, chosen, signed)
    return pixels


def apply_operations(pixels: tf.Tensor, names: tuple[str, ...], chosen: tf.Tensor,
                     signed: tf.Tensor) -> tf.Tensor:
    """Image i through operation names[chosen[i]] at strength |signed[i]| (0-1), signed changes
    (rotation, shear, translation, the enhance factors) in the direction of signed[i]'s sign.

    Each operation runs only on the images that drew it (partitioned, then stitched back)."""
    count = len(names)
    positions = tf.dynamic_partition(tf.range(tf.shape(pixels)[0]), chosen, count)
    groups = zip(names, tf.dynamic_partition(pixels, chosen, count), tf.dynamic_partition(signed, chosen, count))
    stitched = tf.dynamic_stitch(positions, [OPERATIONS[name](group, strength) for name, group, strength in groups])
    return tf.ensure_shape(stitched, pixels.shape)


def rotate(pixels: tf.Tensor, signed: tf.Tensor) -> tf.Tensor:
    angle = signed * MAX_ROTATION_DEGREES * math.pi / 180.0
    cos, sin = tf.cos(angle), tf.sin(angle)
    return resampled(pixels, cos, -sin, sin, cos)


def shear_x(pixels: tf.Tensor, signed: tf.Tensor) -> tf.Tensor:
    one, zero = tf.ones_like(signed), tf.zeros_like(signed)
    return resampled(pixels, one, signed * MAX_SHEAR, zero, one)


def shear_y(pixels: tf.Tensor, signed: tf.Tensor) -> tf.Tensor:
    one, zero = tf.ones_like(signed), tf.zeros_like(signed)
    return resampled(pixels, one, zero, signed * MAX_SHEAR, one)


def translate_x(pixels: tf.Tensor, signed: tf.Tensor) -> tf.Tensor:
    one, zero = tf.ones_like(signed), tf.zeros_like(signed)
    return resampled(pixels, one, zero, zero, one, shift_x=signed * MAX_TRANSLATE * pixels.shape[2])


def translate_y(pixels: tf.Tensor, signed: tf.Tensor) -> tf.Tensor:
    one, zero = tf.ones_like(signed), tf.zeros_like(signed)
    return resampled(pixels, one, zero, zero, one, shift_y=signed * MAX_TRANSLATE * pixels.shape[1])


def resampled(pixels: tf.Tensor, l00, l01, l10, l11, shift_x=0.0, shift_y=0.0) -> tf.Tensor:
    """Each output pixel (x, y) read bilinearly from input point L (x - c, y - c) + c - shift, with
    c the image centre and L = [[l00, l01], [l10, l11]] (one per image); uncovered pixels black."""
    height, width = pixels.shape[1], pixels.shape[2]
    centre_x, centre_y = (width - 1) / 2.0, (height - 1) / 2.0
    a2 = centre_x - l00 * centre_x - l01 * centre_y - shift_x
    b2 = centre_y - l10 * centre_x - l11 * centre_y - shift_y
    zero = tf.zeros_like(l00)
    return tf.raw_ops.ImageProjectiveTransformV3(
        images=pixels, transforms=tf.stack([l00, l01, a2, l10, l11, b2, zero, zero], axis=1),
        output_shape=[height, width], fill_value=0.0, interpolation="BILINEAR", fill_mode="CONSTANT")


def blend(degenerate: tf.Tensor, pixels: tf.Tensor, factor: tf.Tensor) -> tf.Tensor:
    """PIL's ImageEnhance: degenerate + factor * (pixels - degenerate), clipped to [0, 1]; one factor
    per image."""
    return tf.clip_by_value(degenerate + factor[:, None, None, None] * (pixels - degenerate), 0.0, 1.0)


def grayscale(pixels: tf.Tensor) -> tf.Tensor:
    """[B, H, W, C] -> [B, H, W, 1] luma (the pixels themselves for one channel)."""
    if pixels.shape[-1] == 1:
        return pixels
    return tf.reduce_sum(pixels * tf.constant(GRAY_WEIGHTS), axis=-1, keepdims=True)


def auto_contrast(pixels: tf.Tensor) -> tf.Tensor:
    """Each image's channels stretched so their darkest pixel is 0 and brightest 1 (flat ones kept)."""
    low = tf.reduce_min(pixels, axis=[1, 2], keepdims=True)
    high = tf.reduce_max(pixels, axis=[1, 2], keepdims=True)
    stretched = (pixels - low) / tf.maximum(high - low, 1e-12)
    return tf.where(high > low, stretched, pixels)


def equalize(pixels: tf.Tensor) -> tf.Tensor:
    """PIL's ImageOps.equalize on each image's channels, over 256 levels (pixels are quantized)."""
    shape = tf.shape(pixels)
    levels = tf.cast(tf.round(pixels * 255.0), tf.int32)
    channels_first = tf.reshape(tf.transpose(levels, [0, 3, 1, 2]), [shape[0] * shape[3], -1])
    rows = tf.range(tf.shape(channels_first)[0])[:, None]
    bins = shape[0] * shape[3] * 256
    histograms = tf.reshape(tf.math.bincount(rows * 256 + channels_first, minlength=bins, maxlength=bins), [-1, 256])
    top_level = tf.reduce_max(channels_first, axis=1)
    top_count = tf.gather(histograms, top_level, batch_dims=1)
    step = (tf.reduce_sum(histograms, axis=1) - top_count) // 255
    safe_step = tf.maximum(step, 1)[:, None]
    table = (tf.cumsum(histograms, axis=1) + safe_step // 2) // safe_step
    table = tf.clip_by_value(tf.concat([tf.zeros_like(table[:, :1]), table[:, :-1]], axis=1), 0, 255)
    mapped = tf.where(step[:, None] > 0, tf.gather(table, channels_first, batch_dims=1), channels_first)
    mapped = tf.transpose(tf.reshape(mapped, [shape[0], shape[3], shape[1], shape[2]]), [0, 2, 3, 1])
    return tf.cast(mapped, tf.float32) / 255.0


def solarize(pixels: tf.Tensor, threshold: tf.Tensor) -> tf.Tensor:
    """Pixels above each image's threshold inverted (1 - p)."""
    return tf.where(pixels > threshold[:, None, None, None], 1.0 - pixels, pixels)


def posterize(pixels: tf.Tensor, bits: tf.Tensor) -> tf.Tensor:
    """Each image's 8-bit pixels kept to their top `bits` bits (PIL's ImageOps.posterize)."""
    step = tf.pow(2.0, 8.0 - bits)[:, None, None, None]
    return tf.floor(tf.round(pixels * 255.0) / step) * step / 255.0


def smoothed(pixels: tf.Tensor) -> tf.Tensor:
    """PIL's SMOOTH filter on each channel, the border pixels left as they are."""
    height, width, channels = pixels.shape[1:]
    kernel = tf.constant(SMOOTHING_KERNEL) / tf.reduce_sum(SMOOTHING_KERNEL)
    kernel = tf.tile(kernel[:, :, None, None], [1, 1, channels, 1])
    filtered = tf.nn.depthwise_conv2d(pixels, kernel, strides=[1, 1, 1, 1], padding="SAME")
    rows, columns = tf.range(height)[:, None], tf.range(width)[None, :]
    border = (rows == 0) | (rows == height - 1) | (columns == 0) | (columns == width - 1)
    return tf.where(border[None, :, :, None], pixels, filtered)

def enhanced(degenerate_of):
    """An ImageEnhance-style operation: a blend with `degenerate_of(pixels)` by 1 + 0.9 signed."""
    return lambda pixels, signed: blend(degenerate_of(pixels), pixels, 1.0 + MAX_ENHANCE * signed)


OPERATIONS = {
    "rotate": rotate, "shear_x": shear_x, "shear_y": shear_y, "translate_x": translate_x,
    "translate_y": translate_y,
    "identity": lambda pixels, signed: pixels,
    "auto_contrast": lambda pixels, signed: auto_contrast(pixels),
    "equalize": lambda pixels, signed: equalize(pixels),
    "solarize": lambda pixels, signed: solarize(pixels, 1.0 - tf.abs(signed)),
    "posterize": lambda pixels, signed: posterize(pixels, 8 - tf.round(tf.abs(signed) * MAX_POSTERIZE_BITS_DROPPED)),
    "contrast": enhanced(lambda pixels: tf.reduce_mean(grayscale(pixels), axis=[1, 2, 3], keepdims=True)),
    "brightness": enhanced(tf.zeros_like),
    "sharpness": enhanced(smoothed),
    "color": enhanced(grayscale),
}
