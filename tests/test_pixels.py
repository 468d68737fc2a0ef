import numpy as np
import pytest

from data import catalog, pipeline, pixels


def test_integer_pixels_are_0_to_255_whatever_the_input_range():
    assert pixels.stored_range(True, (-1.0, 1.0)) == (0.0, 255.0)
    assert pixels.stored_range(False, (-1.0, 1.0)) == (-1.0, 1.0)


@pytest.mark.parametrize("images, input_range", [
    (np.array([[[0, 17], [128, 255]]], np.uint8), (0.0, 1.0)),
    (np.array([[[0.0, 17.0], [128.0, 255.0]]], np.float32), (0.0, 255.0)),
    (np.array([[[-1.0, -0.5], [0.25, 1.0]]], np.float32), (-1.0, 1.0)),
])
def test_numpy_scaling_for_specs_and_saved_models_matches_the_pipeline(images, input_range):
    in_pipeline = pipeline.to_model_input(images, catalog.MNIST, False, input_range).numpy()[..., 0]
    scaled = pixels.unit_scaled(images, input_range)
    np.testing.assert_allclose(scaled, in_pipeline, rtol=1e-6)
    assert scaled.dtype == np.float32 and scaled.min() == 0.0 and scaled.max() == 1.0
