"""MixUp (Zhang et al., 2018) and CutMix (Yun et al., 2019) within a training batch.

Each example is mixed with a partner from its own batch (a random permutation): MixUp blends the
two images as lam * x + (1 - lam) * x_partner, CutMix pastes a random box of the partner's image
into it, with lam then the share of the image left uncovered. lam ~ Beta(alpha, alpha), one draw
per example. The targets become the same mixture of the two one-hot rows (soft targets), and the
example weights too, so class weights apply to each mixed example as sum_c target_c * weight_c
(sample weights likewise, in proportion to each image's share). Each example gets CutMix with
`cutmix_chance`, MixUp with `mixup_chance`, and stays as it is otherwise. Draws come from stateless
ops keyed by a [2] seed, so a batch is a pure function of its seed.
"""

import dataclasses

import tensorflow as tf

from settings.config import TrainConfig
from settings.errors import TapeloopError


@dataclasses.dataclass(frozen=True)
class MixSettings:
    """The Beta(alpha, alpha) of each method (0: off) and the chance of each per example."""

    mixup_alpha: float = 0.0
    cutmix_alpha: float = 0.0
    mixup_chance: float = 0.0
    cutmix_chance: float = 0.0

    @classmethod
    def from_config(cls, config: TrainConfig) -> "MixSettings":
        """The flags' settings; a chance left unset shares all examples equally among the methods
        whose alpha is set (1 alone, 0.5 each together)."""
        alphas = {"mixup": config.mixup_alpha, "cutmix": config.cutmix_alpha}
        given = {"mixup": config.mixup_chance, "cutmix": config.cutmix_chance}
        on = [method for method, alpha in alphas.items() if alpha > 0]
        for method, chance in given.items():
            if chance and method not in on:
                raise _settings_error(f"--{method}_chance={chance:g} without --{method}_alpha",
                                      f"set --{method}_alpha (e.g. 0.2 for MixUp, 1.0 for CutMix) or drop "
                                      f"--{method}_chance")
        chances = {method: (given[method] if given[method] is not None else 1.0 / len(on)) if method in on
                   else 0.0 for method in alphas}
        if sum(chances.values()) > 1.0 + 1e-9:
            raise _settings_error(f"--mixup_chance={chances['mixup']:g} and --cutmix_chance="
                                  f"{chances['cutmix']:g}, {sum(chances.values()):g} in all",
                                  "give chances that sum to at most 1 (e.g. 0.5 each)")
        return cls(config.mixup_alpha, config.cutmix_alpha, chances["mixup"], chances["cutmix"])

    @property
    def active(self) -> bool:
        return bool(self.mixup_chance or self.cutmix_chance)


def _settings_error(found: str, fix: str) -> TapeloopError:
    return TapeloopError(stage="data", problem="the MixUp/CutMix settings do not fit together",
                         expected="each chance for a method whose alpha is above 0, the chances summing to "
                                  "at most 1 (the share of examples mixed)", found=found, fix=fix)


def mix(images: tf.Tensor, targets: tf.Tensor, weights: tf.Tensor, settings: MixSettings,
        seed: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor, tf.Tensor]:
    """(images [B, H, W, C], one-hot or soft targets [B, K], example weights [B]) -> the same,
    mixed: each example with its partner, by MixUp, CutMix or not at all (see the module's doc)."""
    size = tf.shape(images)[0]
    partner_seed, method_seed, mixup_seed, cutmix_seed = tf.unstack(
        tf.random.experimental.stateless_split(seed, 4))
    partner = tf.argsort(tf.random.stateless_uniform([size], partner_seed))
    method = tf.random.stateless_uniform([size], method_seed)
    use_cutmix = method < settings.cutmix_chance
    use_mixup = ~use_cutmix & (method < settings.cutmix_chance + settings.mixup_chance)
    partner_images = tf.gather(images, partner)
    kept = tf.ones([size])
    if settings.mixup_chance:
        share = beta_draws(size, settings.mixup_alpha, mixup_seed)
        blended = share[:, None, None, None] * images + (1.0 - share[:, None, None, None]) * partner_images
        images = tf.where(use_mixup[:, None, None, None], blended, images)
        kept = tf.where(use_mixup, share, kept)
    if settings.cutmix_chance:
        pasted, share = cutmix_boxes(size, images.shape[1], images.shape[2], settings.cutmix_alpha, cutmix_seed)
        images = tf.where(use_cutmix[:, None, None, None] & pasted, partner_images, images)
        kept = tf.where(use_cutmix, share, kept)
    targets = kept[:, None] * targets + (1.0 - kept[:, None]) * tf.gather(targets, partner)
    weights = kept * weights + (1.0 - kept) * tf.gather(weights, partner)
    return images, targets, weights


def beta_draws(size: tf.Tensor, alpha: float, seed: tf.Tensor) -> tf.Tensor:
    """`size` draws from Beta(alpha, alpha), as float32: X / (X + Y) for X, Y ~ Gamma(alpha)."""
    first_seed, second_seed = tf.unstack(tf.random.experimental.stateless_split(seed, 2))
    # float64, since for small alpha both float32 gamma draws can underflow to 0 together.
    first = tf.random.stateless_gamma([size], first_seed, alpha, dtype=tf.float64)
    second = tf.random.stateless_gamma([size], second_seed, alpha, dtype=tf.float64)
    total = first + second
    return tf.cast(tf.where(total > 0, first / tf.where(total > 0, total, 1.0), 0.5), tf.float32)


def cutmix_boxes(size: tf.Tensor, height: int, width: int, alpha: float, seed: tf.Tensor
                 ) -> tuple[tf.Tensor, tf.Tensor]:
    """For each of `size` images, a box of about (1 - lam) of the image (lam ~ Beta(alpha, alpha))
    centred on a uniform point and clipped at the edges -> ([B, H, W, 1] True inside the box, the
    share of the image outside it)."""
    share_seed, centre_seed = tf.unstack(tf.random.experimental.stateless_split(seed, 2))
    side = tf.sqrt(1.0 - beta_draws(size, alpha, share_seed))
    centre = tf.random.stateless_uniform([2, size], centre_seed)
    centre_y, centre_x = centre[0] * height, centre[1] * width
    half_height, half_width = tf.round(side * height) / 2.0, tf.round(side * width) / 2.0
    top = tf.clip_by_value(tf.round(centre_y - half_height), 0.0, height)
    bottom = tf.clip_by_value(tf.round(centre_y + half_height), 0.0, height)
    left = tf.clip_by_value(tf.round(centre_x - half_width), 0.0, width)
    right = tf.clip_by_value(tf.round(centre_x + half_width), 0.0, width)
    rows = tf.range(height, dtype=tf.float32)[None, :, None]
    columns = tf.range(width, dtype=tf.float32)[None, None, :]
    inside = ((rows >= top[:, None, None]) & (rows < bottom[:, None, None])
              & (columns >= left[:, None, None]) & (columns < right[:, None, None]))
    share = 1.0 - (bottom - top) * (right - left) / (height * width)
    return inside[..., tf.newaxis], share
