"""The one rule for turning stored pixels into [0, 1]: integer pixels are 0-255, float pixels
are mapped from --input_range (how they are stored)."""

import numpy as np


def stored_range(is_integer: bool, input_range: tuple[float, float]) -> tuple[float, float]:
    """The stored values that become 0 and 1: (0, 255) for integer pixels, else `input_range`."""
    return (0.0, 255.0) if is_integer else tuple(input_range)


def unit_scaled(images: np.ndarray, input_range: tuple[float, float] = (0.0, 1.0)) -> np.ndarray:
    """Stored pixels as float32 in [0, 1] (NumPy; the pipeline does the same per batch in TensorFlow)."""
    low, high = stored_range(np.issubdtype(images.dtype, np.integer), input_range)
    return (images.astype(np.float32) - low) / (high - low)
