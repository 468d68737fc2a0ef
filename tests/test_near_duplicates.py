"""Leakage detection alone: hashes that survive re-encoding-like changes, pairs confirmed on the pixels."""

import numpy as np

from diagnosis import near_duplicates


def blobs(count, seed):
    """Distinct smooth 28x28 images (random low-frequency patterns), as uint8."""
    rng = np.random.default_rng(seed)
    coarse = rng.random((count, 7, 7))
    return (np.kron(coarse, np.ones((4, 4))) * 255).astype(np.uint8)


def test_a_hash_survives_brightness_and_noise_and_tells_different_images_apart():
    images = blobs(50, seed=0)
    rng = np.random.default_rng(1)
    changed = np.clip(images * 0.9 + 12 + rng.normal(0, 3, images.shape), 0, 255).astype(np.uint8)
    original, copy = near_duplicates.perceptual_hashes(images), near_duplicates.perceptual_hashes(changed)
    assert original.dtype == np.uint64 and len(original) == 50
    same = np.bitwise_count(original ^ copy)
    different = np.bitwise_count(original[:, None] ^ original[None, :])[~np.eye(50, dtype=bool)]
    assert same.max() <= near_duplicates.HASH_DISTANCE
    assert np.mean(different <= near_duplicates.HASH_DISTANCE) < 0.01  # The pixel check sorts out the rest.


def test_the_bits_are_the_signs_of_the_lowest_frequencies_against_their_median():
    rng = np.random.default_rng(7)
    signs = np.where(rng.permutation(64) < 32, 1.0, -1.0).reshape(8, 8)  # Median 0: bit set where +1.
    signs[0, 0] = 40.0  # The DC term (brightness), which the median leaves out.
    coefficients = np.zeros((32, 32))
    coefficients[:8, :8] = signs * 20
    # The image whose orthonormal 2-D DCT is `coefficients` (row index: vertical frequency).
    basis = np.cos(np.pi * (2 * np.arange(32)[None, :] + 1) * np.arange(32)[:, None] / 64) * np.sqrt(2 / 32)
    basis[0] /= np.sqrt(2)
    image = basis.T @ coefficients @ basis
    bits = np.unpackbits(near_duplicates.perceptual_hashes(image[None]).astype(">u8").view(np.uint8))
    expected = (signs > 0).ravel()
    expected[0] = True  # DC above the median too.
    np.testing.assert_array_equal(bits.astype(bool), expected)


def test_copies_of_test_images_in_training_are_found_and_only_they():
    train, test = blobs(400, seed=2), blobs(100, seed=3)
    copied = [5, 17, 60]
    train[[10, 200, 399]] = np.clip(test[copied].astype(int) + 3, 0, 255).astype(np.uint8)  # Near copies.
    pairs = near_duplicates.near_duplicate_pairs(train, test)
    assert [(train_index, test_index) for train_index, test_index, _ in pairs] == [(10, 5), (200, 17), (399, 60)]
    assert all(correlation > 0.99 for _, _, correlation in pairs)
    assert near_duplicates.near_duplicate_pairs(blobs(200, seed=4), blobs(50, seed=5)) == []


def test_standardized_rows_make_dot_products_correlations():
    images = np.random.default_rng(6).random((3, 4, 4))
    rows = near_duplicates.standardized(images)
    expected = np.corrcoef(images.reshape(3, -1))
    np.testing.assert_allclose(rows @ rows.T, expected, atol=1e-5)
