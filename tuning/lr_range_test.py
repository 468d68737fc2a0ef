"""The learning-rate range test (Smith 2015, "Cyclical Learning Rates"; fastai's lr_find): a fresh
model trains while the rate rises exponentially from a low to a high value, one batch a step; the
loss against the rate shows where training is fast and where it breaks down.

The test runs with several seeds (fresh models, shuffles) and averages their smoothed curves;
where one curve bottoms out moves by a factor of 2-3 from seed to seed. The suggestion follows a
stated, conservative rule: a third of the rate at the bottom of the mean curve's first valley (the
lowest point before the loss first rises 20% above its lowest so far), below where training starts
to break down. The divisor was chosen on MNIST's validation split (docs/tuning.md): a tenth, fastai's
and Smith's "minimum / 10", cost 0.3 points there as the peak of a one-cycle schedule. It is refused when the
curve has no clear descent, and called weak, with the reasons, when the descent is shallow, the
curve never turns up, or the seeds disagree on the bottom by more than a factor of 3.
"""

import dataclasses
import itertools
import math

import keras
import numpy as np

from data import pipeline
from trainer import steps
from trainer.checks import FINITE_CHECKS
from settings.config import TrainConfig
from settings.errors import TapeloopError
from trainer.run_inputs import make_optimizer, make_stage_checks, prepare_run
from trainer.summaries import plt  # pyplot on the Agg backend: figures render to memory, never to a window.

SMOOTHING_FRACTION = 1 / 30  # Half-width of the centred moving average, as a share of the steps.
DIVERGENCE_FACTOR = 4.0  # A run stops once its recent loss exceeds this multiple of its lowest.
MIN_DESCENT = 0.2  # No suggestion unless the smoothed loss fell by this share of its starting value.
CLEAR_DESCENT = 0.5  # A clear curve falls by at least this share.
VALLEY_END = 1.2  # The first valley ends where the smoothed loss first rises past this multiple of its lowest.
BOTTOM_DIVISOR = 3.0  # The suggestion: the valley's bottom rate over this.
CLEAR_SPREAD = 3.0  # A clear suggestion: the seeds' lowest points lie within this factor of each other.
DIVERGED_STAGES = {stage for stage, _ in FINITE_CHECKS.values()}


@dataclasses.dataclass(frozen=True)
class RangeTest:
    """The rate of every step, each seed's training loss at it (up to where the first seed stopped),
    the mean of their smoothed losses, and why the first seed to stop stopped."""

    rates: np.ndarray
    losses: np.ndarray  # [seeds, steps]
    seed_smoothed: np.ndarray  # [seeds, steps]
    smoothed: np.ndarray  # [steps], the mean of seed_smoothed
    stopped: str
    seeds: tuple[int, ...]


@dataclasses.dataclass(frozen=True)
class Suggestion:
    """The suggested rate (None: refused), how sure it is (clear, weak or none) and why."""

    rate: float | None
    confidence: str
    reasons: tuple[str, ...]
    minimum_rate: float
    seed_minimum_rates: tuple[float, ...]


def smooth(losses: np.ndarray, half_width: int) -> np.ndarray:
    """A centred moving average (narrower at the ends): no lag, so the minimum stays where it was."""
    cumulative = np.concatenate([[0.0], np.cumsum(losses)])
    index = np.arange(len(losses))
    low, high = np.maximum(index - half_width, 0), np.minimum(index + half_width + 1, len(losses))
    return (cumulative[high] - cumulative[low]) / (high - low)


def half_width(step_count: int) -> int:
    return max(2, round(step_count * SMOOTHING_FRACTION))


def seed_curve(config: TrainConfig, min_rate: float, max_rate: float, step_count: int) -> tuple[list, str]:
    """One fresh model of `config` trained up to `step_count` steps at rates rising from `min_rate`
    to `max_rate`: its losses, and why it stopped (the end, or a diverged loss)."""
    inputs = prepare_run(dataclasses.replace(config, lr_schedule="constant", warmup_steps=0, ema_decay=0.0))
    optimizer = make_optimizer(config, keras.optimizers.schedules.ExponentialDecay(
        min_rate, step_count, max_rate / min_rate))
    optimizer.build(inputs.model.trainable_variables)
    metrics = steps.make_metrics(inputs.loss, with_gradients=True)  # The step updates them; the test reads its loss.
    train_step = steps.make_train_step(inputs.model, optimizer, inputs.loss, metrics,
                                       make_stage_checks(config, inputs.spec, training=True), config.clip_grad_norm,
                                       accumulate_steps=config.accumulate_steps)
    batches = itertools.chain.from_iterable(pipeline.train_batches(
        inputs.data.train, inputs.example_weights, inputs.spec, config, epoch) for epoch in itertools.count())
    window = half_width(step_count)
    losses, lowest = [], math.inf
    for images, labels, weights in itertools.islice(batches, step_count):
        try:
            loss = float(train_step(images, labels, weights))
        except TapeloopError as error:
            if error.stage not in DIVERGED_STAGES:
                raise
            loss = math.nan
        if not math.isfinite(loss):
            return losses, "a loss that was not finite"
        losses.append(loss)
        recent = float(np.mean(losses[-window:]))
        lowest = min(lowest, recent)
        if len(losses) > window and recent > DIVERGENCE_FACTOR * lowest:
            return losses, f"a loss over {DIVERGENCE_FACTOR:g} times its lowest"
    return losses, "the end of the range"


def run_range_test(config: TrainConfig, min_rate: float, max_rate: float, step_count: int,
                   repeats: int = 1) -> RangeTest:
    """The range test with `repeats` fresh models (seeds --seed, --seed + 1, ...), cut to the
    steps every one of them reached."""
    seeds = tuple(range(config.seed, config.seed + repeats))
    curves = [seed_curve(dataclasses.replace(config, seed=seed), min_rate, max_rate, step_count) for seed in seeds]
    reached = min(len(losses) for losses, _ in curves)
    losses = np.array([curve[:reached] for curve, _ in curves]).reshape(repeats, reached)
    stopped = min(curves, key=lambda curve: len(curve[0]))[1]
    rates = min_rate * (max_rate / min_rate) ** (np.arange(reached) / step_count)
    seed_smoothed = np.array([smooth(curve, half_width(step_count)) for curve in losses]).reshape(losses.shape)
    return RangeTest(rates, losses, seed_smoothed, seed_smoothed.mean(axis=0), stopped, seeds)


def first_valley(smoothed: np.ndarray) -> int:
    """The index of the lowest point before the loss first rises VALLEY_END over its lowest so far."""
    lowest_so_far = np.minimum.accumulate(smoothed)
    rises = np.flatnonzero(smoothed > VALLEY_END * lowest_so_far)
    end = rises[0] if len(rises) else len(smoothed)
    return int(np.argmin(smoothed[:end]))


def suggest(test: RangeTest) -> Suggestion:
    """A third (1 / BOTTOM_DIVISOR) of the rate at the bottom of the first valley of the seeds' mean
    curve; none without a clear descent. Weak when the curve is shallow, never turns up, or the seeds disagree."""
    count = test.losses.shape[1]
    if count < 10:
        return Suggestion(None, "none", (f"the loss diverged after {count} steps: lower the starting rate",),
                          math.nan, ())
    start = float(np.median(test.losses[:, :max(3, count // 20)]))
    lowest = first_valley(test.smoothed)
    descent = (start - test.smoothed[lowest]) / start
    minimum_rate = float(test.rates[lowest])
    seed_rates = tuple(float(test.rates[first_valley(curve)]) for curve in test.seed_smoothed)
    if descent < MIN_DESCENT or lowest < count // 10:
        return Suggestion(None, "none", (
            f"no clear descent: the smoothed loss fell {descent:.0%} (from {start:.3g} to "
            f"{test.smoothed[lowest]:.3g}, lowest at {minimum_rate:.2g}); below {MIN_DESCENT:.0%} no rate is "
            "suggested. Widen the range, train more steps, or check that the model can learn the data",),
            minimum_rate, seed_rates)
    spread = max(seed_rates) / min(seed_rates)
    reasons = [f"the smoothed loss fell {descent:.0%}, from {start:.3g} to {test.smoothed[lowest]:.3g} at "
               f"{minimum_rate:.2g} (the bottom of its first valley); the test stopped at {test.stopped}; over "
               f"{len(test.seeds)} seeds the bottom lay between {min(seed_rates):.2g} and {max(seed_rates):.2g}"]
    if lowest == int(np.argmin(test.smoothed)) and test.smoothed[lowest:].max() <= VALLEY_END * test.smoothed[lowest]:
        reasons.append("the loss did not turn up after its lowest point: raise the top of the range to see where "
                       "it breaks down")
    if descent < CLEAR_DESCENT:
        reasons.append(f"the descent is shallow (under {CLEAR_DESCENT:.0%})")
    if spread > CLEAR_SPREAD:
        reasons.append(f"the seeds disagree by a factor of {spread:.1f} on where the loss is lowest")
    if len(test.seeds) == 1:
        reasons.append("one seed only: repeat the test (--range_test_repeats) to see how much the bottom moves")
    return Suggestion(minimum_rate / BOTTOM_DIVISOR, "clear" if len(reasons) == 1 else "weak", tuple(reasons), minimum_rate,
                      seed_rates)


def curve_figure(test: RangeTest, suggestion: Suggestion):
    """The loss against the rate (log axis), smoothed over raw, with the suggestion marked."""
    figure, axes = plt.subplots(figsize=(7, 4.2), dpi=100)
    for index, (seed, losses) in enumerate(zip(test.seeds, test.losses)):
        axes.plot(test.rates, losses, color="0.75", linewidth=0.7, label="training loss, each seed" if not index else None)
    axes.plot(test.rates, test.smoothed, color="C0", linewidth=2, label=f"smoothed, mean of {len(test.seeds)} seeds")
    axes.axvline(suggestion.minimum_rate, color="C3", linestyle=":", label=f"valley bottom {suggestion.minimum_rate:.2g}")
    if suggestion.rate is not None:
        axes.axvline(suggestion.rate, color="C2", label=f"suggested {suggestion.rate:.2g} ({suggestion.confidence})")
    axes.set_xscale("log")
    axes.set_ylim(0, min(float(test.losses.max()), 1.5 * float(test.smoothed[0])) * 1.05)
    axes.set_xlabel("learning rate")
    axes.set_ylabel("loss")
    axes.set_title("Learning-rate range test" + ("" if suggestion.rate is not None else ": no suggestion"))
    axes.legend(loc="lower left")
    figure.tight_layout()
    return figure
