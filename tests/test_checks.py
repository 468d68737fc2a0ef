import math

import pytest

from trainer.checks import DivergenceGuard
from trainer.errors import TapeloopError


def test_a_nan_loss_stops_the_run_reporting_the_step_and_learning_rate():
    guard = DivergenceGuard(factor=10)
    guard.check(1, 2.3, 0.5)
    with pytest.raises(TapeloopError) as raised:
        guard.check(200, math.nan, 0.5)
    message = str(raised.value)
    assert "[loss] training diverged by step 200: the loss became nan" in message
    assert "with learning rate 0.5" in message and "lower --learning_rate (try 0.05)" in message
    assert "--warmup_steps" in message and "last good checkpoint" in message


def test_a_loss_that_climbs_past_the_factor_and_its_start_stops_the_run():
    guard = DivergenceGuard(factor=10)
    for step, loss in enumerate([2.3, 1.0, 0.2, 1.9], start=1):
        guard.check(step, loss, 1e-3)  # 1.9 > 10 x 0.2, but below the first loss: still healthy.
    with pytest.raises(TapeloopError, match=r"grew to 2.5, over 10x its lowest value \(0.2\) and above its first"):
        guard.check(5, 2.5, 1e-3)


def test_healthy_noise_near_the_minimum_and_factor_zero_pass():
    guard = DivergenceGuard(factor=10)
    for step, loss in enumerate([2.3, 0.05, 0.3, 0.04, 0.45], start=1):
        guard.check(step, loss, 1e-3)
    unguarded = DivergenceGuard(factor=0)
    for step, loss in enumerate([2.3, 0.1, 500.0], start=1):
        unguarded.check(step, loss, 1e-3)
    with pytest.raises(TapeloopError, match="the loss became inf"):
        unguarded.check(4, math.inf, 1e-3)
