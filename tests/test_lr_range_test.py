"""The learning-rate range test: the smoothing, the suggestion rule on curves of known shape
(clear, shallow, flat, never turning up), and the test run alone on a small model."""

import json

import numpy as np
import pytest

from tests.helpers import make_config
from tuning import lr_range_test
from tuning.lr_range_test import RangeTest, smooth, suggest


def curve(*losses: np.ndarray, stopped="a loss over 4 times its lowest") -> RangeTest:
    """A range test whose seeds gave `losses`, at rates from 1e-6 up six decades."""
    rates = 1e-6 * (1e6) ** (np.arange(len(losses[0])) / len(losses[0]))
    seed_smoothed = np.array([smooth(seed_losses, 5) for seed_losses in losses])
    return RangeTest(rates, np.array(losses), seed_smoothed, seed_smoothed.mean(axis=0), stopped,
                     tuple(range(len(losses))))


def valley(log_bottom: float) -> np.ndarray:
    """A loss that falls from 2.3 to 0.3 around 1e-3 and breaks down after 10^log_bottom."""
    log_rate = np.linspace(-6, 0, 300)
    return 2.3 - 2.0 / (1 + np.exp(-3 * (log_rate + 3))) + 4 * np.exp(3 * (log_rate - log_bottom - 0.5))


def test_the_centred_average_keeps_a_straight_line_where_it_is():
    line = np.arange(50, dtype=float)
    assert np.allclose(smooth(line, 5)[5:-5], line[5:-5])
    assert np.allclose(smooth(np.full(20, 3.0), 4), 3.0)


def test_a_clear_valley_gives_a_third_of_its_bottom_rate():
    test = curve(valley(-2.0), valley(-1.8), valley(-2.2))
    result = suggest(test)
    bottom = test.rates[np.argmin(test.smoothed)]
    assert result.confidence == "clear", result.reasons
    assert result.rate == pytest.approx(bottom / 3)
    assert min(result.seed_minimum_rates) < bottom < max(result.seed_minimum_rates)


def test_the_first_valley_counts_when_the_loss_recovers_after_breaking_down():
    losses = valley(-2.0)
    rates = curve(losses).rates
    bump = (rates > 3e-2) & (rates < 1e-1)
    second_valley = np.where(bump, losses + 1.0, losses)
    second_valley[rates > 1e-1] = 0.1  # Lower than the first valley, after a breakdown.
    result = suggest(curve(second_valley, second_valley))
    assert result.minimum_rate < 3e-2


def test_seeds_that_disagree_make_the_suggestion_weak():
    result = suggest(curve(valley(-2.5), valley(-1.5)))
    assert result.confidence == "weak"
    assert any("seeds disagree by a factor" in reason for reason in result.reasons)


def test_one_seed_is_never_clear():
    result = suggest(curve(valley(-2.0)))
    assert result.confidence == "weak" and "one seed only" in result.reasons[-1]


def test_a_curve_with_no_clear_descent_gets_no_suggestion():
    losses = 2.3 + 0.05 * np.random.default_rng(0).standard_normal(300)
    result = suggest(curve(losses, losses, stopped="the end of the range"))
    assert result.rate is None and result.confidence == "none"
    assert "no clear descent" in result.reasons[0]


def test_a_curve_that_never_turns_up_is_weak_and_says_why():
    losses = np.linspace(2.3, 0.3, 300)
    result = suggest(curve(losses, losses, stopped="the end of the range"))
    assert result.confidence == "weak" and result.rate is not None
    assert any("did not turn up" in reason for reason in result.reasons)


def test_a_loss_that_diverges_at_once_gets_no_suggestion():
    result = suggest(curve(np.array([2.3, 5.0, 20.0])))
    assert result.rate is None and "lower the starting rate" in result.reasons[0]


def test_the_range_test_raises_the_rate_until_the_loss_diverges(tmp_path):
    config = make_config(tmp_path / "run", "--optimizer=sgd", "--momentum=0.9", "--model=mlp", "--model_width=32")
    test = lr_range_test.run_range_test(config, min_rate=1e-4, max_rate=1e4, step_count=120, repeats=2)
    assert test.seeds == (0, 1) and test.losses.shape[0] == 2
    assert 10 < test.losses.shape[1] < 120, test.stopped  # Stopped by divergence, long before 1e4.
    assert not np.array_equal(test.losses[0], test.losses[1])  # Two fresh models.
    assert test.stopped in ("a loss that was not finite", "a loss over 4 times its lowest")
    assert np.allclose(np.diff(np.log10(test.rates)), 8 / 120)
    assert test.rates[0] == pytest.approx(1e-4)
    assert np.isfinite(test.losses).all() and test.smoothed.shape == test.rates.shape


@pytest.mark.slow
def test_the_script_writes_the_curve_and_says_how_sure_it_is(tmp_path):
    from tests.helpers import SMALL_RUN, read_scalars, run_script

    result = run_script("lr_range_test", *SMALL_RUN, f"--run_dir={tmp_path}", "--range_test_steps=60",
                        "--range_test_min_rate=1e-5", "--range_test_max_rate=100", "--range_test_repeats=2")
    assert result.returncode == 0, result.stderr[-2000:]
    assert "range test: 2 seeds" in result.stdout
    assert "suggested learning rate" in result.stdout or "no rate suggested" in result.stdout
    record = json.loads((tmp_path / "lr_range_test.json").read_text())
    assert record["seeds"] == [0, 1] and len(record["losses"]) == 2 and (tmp_path / "lr_range_test.png").stat().st_size
    scalars = read_scalars(tmp_path / "lr_range_test")
    assert len(scalars["lr_range_test/smoothed_loss"]) == len(record["rates"])
