"""Leakage between splits: training images that are exact or near copies of test images.

Each image gets a 64-bit perceptual hash (pHash: the signs of its lowest 8x8 DCT frequencies
against their median, on a 32x32 grayscale copy), so that a copy survives re-encoding, small
shifts of brightness and resizing. Every test hash is compared with every training hash (XOR and
popcount); pairs within HASH_DISTANCE bits are then confirmed on the pixels (correlation of
the standardized images at least PIXEL_CORRELATION), since distinct digits of one class can
hash alike.
"""

import numpy as np
import tensorflow as tf

HASH_SIZE = 8
HASH_DISTANCE = 10  # Bits of 64: a loose net, since the pixels decide.
PIXEL_CORRELATION = 0.99  # Distinct MNIST digits reach 0.98 (101 test images), copies 1.0.
TEST_CHUNK = 128  # Test hashes compared at once (a chunk x all training hashes of uint64).


def perceptual_hashes(images: np.ndarray, batch_size: int = 4096) -> np.ndarray:
    """One uint64 pHash per image ([N, H, W] or [N, H, W, C], any dtype)."""
    hashes = []
    for start in range(0, len(images), batch_size):
        batch = tf.convert_to_tensor(images[start:start + batch_size], tf.float32)
        if batch.shape.rank == 3:
            batch = batch[..., tf.newaxis]
        gray = tf.reduce_mean(tf.image.resize(batch, (32, 32), method="area"), axis=-1)
        frequencies = tf.signal.dct(tf.transpose(tf.signal.dct(gray, norm="ortho"), [0, 2, 1]), norm="ortho")
        low = tf.reshape(tf.transpose(frequencies, [0, 2, 1])[:, :HASH_SIZE, :HASH_SIZE], (-1, HASH_SIZE ** 2)).numpy()
        bits = low > np.median(low[:, 1:], axis=1, keepdims=True)  # The DC term would dominate the median.
        hashes.append(np.packbits(bits, axis=1).view(">u8").ravel().astype(np.uint64))
    return np.concatenate(hashes) if hashes else np.zeros(0, np.uint64)


def standardized(images: np.ndarray) -> np.ndarray:
    """Each image flattened, minus its mean, over its norm: a dot product is then a correlation."""
    flat = images.reshape(len(images), -1).astype(np.float32)
    flat -= flat.mean(axis=1, keepdims=True)
    return flat / np.maximum(np.linalg.norm(flat, axis=1, keepdims=True), 1e-6)


def near_duplicate_pairs(train_images: np.ndarray, test_images: np.ndarray) -> list[tuple[int, int, float]]:
    """(train index, test index, pixel correlation) for each test image with a near copy in training
    (its closest one), sorted by test index."""
    train_hashes, test_hashes = perceptual_hashes(train_images), perceptual_hashes(test_images)
    train_pixels, test_pixels = standardized(train_images), standardized(test_images)
    pairs = []
    for start in range(0, len(test_hashes), TEST_CHUNK):
        distances = np.bitwise_count(test_hashes[start:start + TEST_CHUNK, None] ^ train_hashes[None, :])
        for offset, candidates in enumerate(distances):
            close = np.flatnonzero(candidates <= HASH_DISTANCE)
            if not len(close):
                continue
            test_index = start + offset
            correlations = train_pixels[close] @ test_pixels[test_index]
            best = int(np.argmax(correlations))
            if correlations[best] >= PIXEL_CORRELATION:
                pairs.append((int(close[best]), test_index, float(correlations[best])))
    return pairs
