"""RandAugment's operations, each alone against PIL (the library that defines them) or the geometry
it should have, then the drawn layers: value range, magnitude 0, and determinism by seed."""

import math

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image, ImageEnhance, ImageOps

from data import randaugment as ra

RNG = np.random.default_rng(0)
GRAY = RNG.integers(20, 230, (1, 12, 10, 1)).astype(np.uint8)  # Not 0-255, so auto-contrast stretches.
RGB = RNG.integers(0, 256, (1, 12, 10, 3)).astype(np.uint8)
STRENGTH = 0.7  # |signed| for the operations below.


def one_operation(pixels: np.ndarray, name: str, signed: float = STRENGTH) -> np.ndarray:
    """`pixels` (uint8 [1, H, W, C]) through operation `name` alone, back as uint8-scaled floats."""
    names = ra.operations(pixels.shape[-1])
    result = ra.apply_operations(tf.constant(pixels / 255.0, tf.float32), names,
                                 tf.constant([names.index(name)]), tf.constant([signed]))
    return result.numpy() * 255.0


def pil(pixels: np.ndarray) -> Image.Image:
    return Image.fromarray(pixels[0, :, :, 0] if pixels.shape[-1] == 1 else pixels[0])


def as_array(image: Image.Image, channels: int) -> np.ndarray:
    array = np.asarray(image, np.float64)
    return array.reshape(1, *array.shape[:2], channels)


FACTOR = 1.0 + ra.MAX_ENHANCE * STRENGTH
PIL_REFERENCES = {  # name -> (PIL's version of the operation at STRENGTH, tolerance in 0-255 levels)
    "identity": (lambda image: image, 0.0),
    "auto_contrast": (ImageOps.autocontrast, 1.0),  # PIL truncates to a level.
    "equalize": (ImageOps.equalize, 0.0),
    "posterize": (lambda image: ImageOps.posterize(image, 8 - round(STRENGTH * ra.MAX_POSTERIZE_BITS_DROPPED)), 0.0),
    # PIL degenerates to the rounded mean grey and rounds the result: within a level.
    "contrast": (lambda image: ImageEnhance.Contrast(image).enhance(FACTOR), 1.0 + FACTOR * 0.5),
    "brightness": (lambda image: ImageEnhance.Brightness(image).enhance(FACTOR), 1.0),  # Truncated too.
    "sharpness": (lambda image: ImageEnhance.Sharpness(image).enhance(FACTOR), 1.0 + FACTOR * 0.5),
    "color": (lambda image: ImageEnhance.Color(image).enhance(FACTOR), 1.0 + FACTOR * 0.5),
}


@pytest.mark.parametrize("name, pixels", [
    pytest.param(name, pixels, id=f"{kind}-{name}") for kind, pixels in (("gray", GRAY), ("rgb", RGB))
    for name in sorted(PIL_REFERENCES) if name in ra.operations(pixels.shape[-1])])
def test_each_pixel_operation_matches_pil(name, pixels):
    reference, tolerance = PIL_REFERENCES[name]
    expected = as_array(reference(pil(pixels)), pixels.shape[-1])
    np.testing.assert_allclose(one_operation(pixels, name), expected, atol=tolerance + 1e-3)


def test_solarize_inverts_exactly_the_pixels_above_one_minus_the_strength():
    result = one_operation(GRAY, "solarize") / 255.0
    original = GRAY / 255.0
    inverted = original > 1.0 - STRENGTH
    assert 0 < inverted.sum() < inverted.size
    np.testing.assert_allclose(result, np.where(inverted, 1.0 - original, original), atol=1e-6)


def test_color_is_drawn_only_for_rgb_images():
    assert "color" not in ra.operations(1) and "color" in ra.operations(3)
    assert len(ra.operations(1)) == 13 and len(ra.operations(3)) == 14


def dot(row: int, column: int, size: int = 21) -> np.ndarray:
    image = np.zeros((1, size, size, 1), np.uint8)
    image[0, row, column, 0] = 255
    return image


def centroid(image: np.ndarray) -> np.ndarray:
    """(x, y) of the image's brightness."""
    weights = image[0, :, :, 0]
    rows, columns = np.indices(weights.shape)
    return np.array([(columns * weights).sum(), (rows * weights).sum()]) / weights.sum()


def moved(name: str, signed: float, x: float, y: float, size: int = 21) -> np.ndarray:
    """Where each geometric operation should move point (x, y), about the centre c: rotation by
    the angle (counter-clockwise on screen for a positive one), shear by the factor, shift by a
    share of the size; the operations' own formula inverted, written here independently."""
    centre = (size - 1) / 2.0
    dx, dy = x - centre, y - centre
    if name == "rotate":
        angle = signed * math.radians(ra.MAX_ROTATION_DEGREES)
        return np.array([math.cos(angle) * dx + math.sin(angle) * dy,
                         -math.sin(angle) * dx + math.cos(angle) * dy]) + centre
    shear, shift = signed * ra.MAX_SHEAR, signed * ra.MAX_TRANSLATE * size
    return {"shear_x": np.array([dx - shear * dy, dy]), "shear_y": np.array([dx, dy - shear * dx]),
            "translate_x": np.array([dx + shift, dy]), "translate_y": np.array([dx, dy + shift])}[name] + centre


@pytest.mark.parametrize("name", ra.GEOMETRIC)
@pytest.mark.parametrize("signed", [0.5, -0.3])
def test_each_geometric_operation_moves_a_point_where_its_formula_says(name, signed):
    # A 3x3 bright square, so bilinear resampling keeps its centroid (the point) exact.
    image = dot(6, 8)
    image[0, 5:8, 7:10, 0] = 255
    result = one_operation(image, name, signed)
    np.testing.assert_allclose(centroid(result), moved(name, signed, 8.0, 6.0), atol=0.05)
    assert result.max() <= 255.0 + 1e-3 and result.min() >= 0.0


def test_magnitude_zero_leaves_images_alone_but_for_the_operations_without_a_magnitude():
    pixels = tf.constant(RNG.uniform(size=(200, 12, 10, 3)), tf.float32)
    names = ra.operations(3)
    chosen = tf.constant(np.arange(200) % len(names), tf.int32)
    result = ra.apply_operations(pixels, names, chosen, tf.zeros(200)).numpy()
    for index, name in enumerate(names):
        picked = chosen.numpy() == index
        unchanged = np.allclose(result[picked], pixels.numpy()[picked], atol=1e-6)
        # Posterize keeps all 8 bits at magnitude 0, which still quantizes these float pixels.
        assert unchanged == (name not in ("auto_contrast", "equalize", "posterize")), name


def test_layers_keep_shape_dtype_and_the_unit_range_and_are_a_function_of_the_seed():
    pixels = tf.constant(RNG.uniform(size=(64, 16, 16, 3)), tf.float32)
    seed = tf.constant([3, 7], tf.int64)
    result = ra.randaugment(pixels, 3, 10.0, seed)
    assert result.shape == pixels.shape and result.dtype == tf.float32
    assert result.numpy().min() >= 0.0 and result.numpy().max() <= 1.0
    np.testing.assert_array_equal(result, ra.randaugment(pixels, 3, 10.0, seed))
    other = ra.randaugment(pixels, 3, 10.0, tf.constant([3, 8], tf.int64))
    changed = np.any(result.numpy() != other.numpy(), axis=(1, 2, 3))
    assert changed.mean() > 0.8  # Another seed draws other operations for most images.
    untouched = np.all(result.numpy() == pixels.numpy(), axis=(1, 2, 3))
    assert untouched.mean() < 0.2  # Three layers leave few images unchanged (identity thrice is rare).
