"""MixUp and CutMix alone: what each does to images, targets and weights, how often, by which lam,
and their settings' refusals."""

import numpy as np
import pytest
import tensorflow as tf

from data import mixing
from data.mixing import MixSettings
from tests.helpers import make_config
from settings.errors import TapeloopError

SEED = tf.constant([5, 11], tf.int64)
CLASSES = 8  # One class per example below, so a mixed target names both partners and lam.


def flat_batch(size: int = CLASSES):
    """Images of one grey value each (the example's own), one-hot targets of class i for example i,
    and distinct example weights."""
    values = np.arange(size, dtype=np.float32) / size
    images = tf.constant(np.broadcast_to(values[:, None, None, None], (size, 6, 5, 1)))
    return images, tf.one_hot(np.arange(size) % CLASSES, CLASSES), tf.constant(1.0 + values), values


def partners_and_shares(targets: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Each row's partner and own share, read off its target (its own class keeps the largest
    share it can: lam, or 1 when the partner is itself)."""
    own = np.arange(len(targets))
    share = targets[own, own]
    rest = targets.copy()
    rest[own, own] = 0
    partner = np.where(share < 1, rest.argmax(axis=1), own)
    return partner, share


def test_mixup_blends_images_targets_and_weights_by_one_lam_per_example():
    images, targets, weights, values = flat_batch()
    mixed, mixed_targets, mixed_weights = mixing.mix(images, targets, weights, MixSettings(0.4, 0, 1.0, 0), SEED)
    partner, share = partners_and_shares(mixed_targets.numpy())
    assert sorted(partner) == list(range(CLASSES))  # A permutation of the batch.
    assert 0 < share.min() and (share < 1).sum() >= CLASSES - 2
    np.testing.assert_allclose(mixed.numpy()[:, 0, 0, 0], share * values + (1 - share) * values[partner], atol=1e-6)
    assert np.ptp(mixed.numpy(), axis=(1, 2, 3)).max() < 1e-6  # Whole images blended, not parts.
    np.testing.assert_allclose(mixed_weights, share * weights.numpy() + (1 - share) * weights.numpy()[partner],
                               rtol=1e-6)


def test_cutmix_pastes_one_box_of_the_partner_and_mixes_targets_by_its_area():
    images, targets, weights, values = flat_batch()
    mixed, mixed_targets, _ = mixing.mix(images, targets, weights, MixSettings(0, 1.0, 0, 1.0), SEED)
    partner, share = partners_and_shares(mixed_targets.numpy())
    for index in range(CLASSES):
        pasted = np.isclose(mixed.numpy()[index, :, :, 0], values[partner[index]])
        own = np.isclose(mixed.numpy()[index, :, :, 0], values[index])
        assert (pasted | own).all()
        if partner[index] == index:
            continue
        np.testing.assert_allclose(1 - pasted.mean(), share[index], atol=1e-6)
        rows, columns = np.nonzero(pasted)
        if len(rows):  # The pasted pixels fill their bounding box: one rectangle.
            assert pasted[rows.min():rows.max() + 1, columns.min():columns.max() + 1].all()


def test_each_example_gets_cutmix_mixup_or_nothing_by_their_chances():
    size = 4000
    images = tf.random.stateless_uniform([size, 8, 8, 1], [1, 2])
    targets = tf.one_hot(np.arange(size) % 10, 10)
    mixed, mixed_targets, _ = mixing.mix(images, targets, tf.ones(size), MixSettings(0.5, 1.0, 0.3, 0.2), SEED)
    changed = (np.abs(mixed.numpy() - images.numpy()) > 0).any(axis=(1, 2, 3))
    changed_everywhere = (np.abs(mixed.numpy() - images.numpy()) > 0).all(axis=(1, 2, 3))
    # MixUp changes every pixel (continuous lam, another image); CutMix only a box.
    assert abs(changed_everywhere.mean() - 0.3) < 0.03
    assert abs((changed & ~changed_everywhere).mean() - 0.2) < 0.03
    rows = mixed_targets.numpy()
    assert rows.min() >= 0 and np.abs(rows.sum(axis=1) - 1).max() < 1e-6
    assert abs((rows.max(axis=1) < 1).mean() - 0.5 * 0.9) < 0.03  # A tenth of partners share the class.


@pytest.mark.parametrize("alpha", [0.2, 1.0])
def test_lam_follows_beta_alpha_alpha(alpha):
    draws = mixing.beta_draws(tf.constant(40000), alpha, SEED).numpy()
    assert draws.min() >= 0 and draws.max() <= 1
    assert abs(draws.mean() - 0.5) < 0.01
    assert abs(draws.var() - 1 / (4 * (2 * alpha + 1))) < 0.01  # Beta(a, a)'s variance.


def test_a_batch_is_a_function_of_its_seed():
    images, targets, weights, _ = flat_batch()
    settings = MixSettings(0.4, 1.0, 0.5, 0.5)
    first = mixing.mix(images, targets, weights, settings, SEED)
    for part, again in zip(first, mixing.mix(images, targets, weights, settings, SEED)):
        np.testing.assert_array_equal(part, again)
    other = mixing.mix(images, targets, weights, settings, tf.constant([5, 12], tf.int64))
    assert not np.array_equal(first[1], other[1])


@pytest.mark.parametrize("flags, expected", [
    (("--mixup_alpha=0.2",), (1.0, 0.0)), (("--cutmix_alpha=1",), (0.0, 1.0)),
    (("--mixup_alpha=0.2", "--cutmix_alpha=1"), (0.5, 0.5)),
    (("--mixup_alpha=0.2", "--cutmix_alpha=1", "--mixup_chance=0.2"), (0.2, 0.5)), ((), (0.0, 0.0))])
def test_unset_chances_share_every_example_among_the_methods_on(tmp_path, flags, expected):
    settings = MixSettings.from_config(make_config(tmp_path, *flags))
    assert (settings.mixup_chance, settings.cutmix_chance) == expected
    assert settings.active == bool(flags)


@pytest.mark.parametrize("flags, found", [
    (("--mixup_chance=0.5",), "--mixup_chance=0.5 without --mixup_alpha"),
    (("--mixup_alpha=0.2", "--cutmix_alpha=1", "--mixup_chance=0.7", "--cutmix_chance=0.6"), "1.3 in all")])
def test_settings_that_do_not_fit_together_are_refused_with_the_fix(tmp_path, flags, found):
    with pytest.raises(TapeloopError) as raised:
        MixSettings.from_config(make_config(tmp_path, *flags))
    assert raised.value.stage == "data" and found in str(raised.value) and "Fix:" in str(raised.value)
