import math

import pytest

from tests.helpers import make_config
from trainer.schedules import LearningRate


def schedule(tmp_path, *flags, total_steps=1000, steps_per_epoch=100):
    return LearningRate(make_config(tmp_path, "--learning_rate=0.1", *flags), total_steps, steps_per_epoch)


def rates(learning_rate, steps):
    return [float(learning_rate(step)) for step in steps]


def test_constant_with_warmup_ramps_linearly_then_holds(tmp_path):
    learning_rate = schedule(tmp_path, "--warmup_steps=10")
    assert rates(learning_rate, [0, 4, 9, 10, 999]) == pytest.approx([0.01, 0.05, 0.1, 0.1, 0.1])
    assert rates(schedule(tmp_path), [0, 500]) == pytest.approx([0.1, 0.1])


def test_step_changes_value_after_each_boundary(tmp_path):
    learning_rate = schedule(tmp_path, "--lr_schedule=step", "--lr_boundaries=100,300", "--lr_values=0.5,0.05,0.005")
    assert rates(learning_rate, [0, 100, 101, 300, 301, 999]) == pytest.approx([0.5, 0.5, 0.05, 0.05, 0.005, 0.005])
    warmed = schedule(tmp_path, "--lr_schedule=step", "--lr_boundaries=100", "--lr_values=0.5,0.05",
                      "--warmup_steps=200")
    assert rates(warmed, [0, 99, 199, 200]) == pytest.approx([0.05 / 200, 0.05 * 100 / 200, 0.05, 0.05])


def test_exponential_decays_by_the_rate_per_decay_steps_from_the_end_of_warmup(tmp_path):
    learning_rate = schedule(tmp_path, "--lr_schedule=exponential", "--lr_decay_rate=0.5", "--lr_decay_steps=100",
                             "--warmup_steps=50", "--min_learning_rate=0.01")
    assert rates(learning_rate, [24, 50, 150, 200, 250, 900]) == pytest.approx(
        [0.05, 0.1, 0.05, 0.1 * 0.5 ** 1.5, 0.025, 0.01])
    per_epoch = schedule(tmp_path, "--lr_schedule=exponential", "--lr_decay_rate=0.1", steps_per_epoch=40)
    assert rates(per_epoch, [40, 80]) == pytest.approx([0.01, 0.001])


def test_cosine_ends_at_the_minimum_at_the_end_of_training(tmp_path):
    learning_rate = schedule(tmp_path, "--lr_schedule=cosine", "--warmup_steps=100", "--min_learning_rate=0.001")

    def closed_form(step):
        progress = min(1.0, (step - 100) / 900)
        return 0.001 + (0.1 - 0.001) * 0.5 * (1 + math.cos(math.pi * progress))

    steps = [100, 325, 550, 775, 1000, 1200]
    assert rates(learning_rate, steps) == pytest.approx([closed_form(step) for step in steps], rel=1e-5)
    assert float(learning_rate(1000)) == pytest.approx(0.001) and float(learning_rate(49)) == pytest.approx(0.05)
    shorter = schedule(tmp_path, "--lr_schedule=cosine", "--lr_decay_steps=200")
    assert rates(shorter, [100, 200, 700]) == pytest.approx([0.05, 0.0, 0.0], abs=1e-7)


def test_onecycle_rises_to_the_peak_and_falls_to_the_final_ratio(tmp_path):
    learning_rate = schedule(tmp_path, "--lr_schedule=onecycle", "--onecycle_peak_fraction=0.25",
                             "--onecycle_initial_ratio=0.04", "--onecycle_final_ratio=1e-4")
    start, peak, final = 0.1 * 0.04, 0.1, 0.1 * 1e-4
    assert rates(learning_rate, [0, 125, 250, 625, 1000]) == pytest.approx(
        [start, (start + peak) / 2, peak, (peak + final) / 2, final], rel=1e-5)
    assert float(learning_rate(1500)) == pytest.approx(final, rel=1e-5)  # Held after the end.


def test_plateau_lowers_the_rate_after_exactly_patience_evaluations_without_improvement(tmp_path):
    learning_rate = schedule(tmp_path, "--lr_schedule=plateau", "--plateau_patience=2", "--plateau_factor=0.5",
                             "--plateau_metric=loss", "--min_learning_rate=0.02")
    lowered = [learning_rate.end_of_evaluation({"loss/total": loss})
               for loss in [1.0, 0.9, 0.95, 0.9, 0.8, 0.85, 0.85, 0.85, 0.85, 0.85, 0.85]]
    assert lowered == [False, False, False, True, False, False, True, False, True, False, True]
    assert float(learning_rate(0)) == pytest.approx(0.02)  # 0.1 * 0.5^4 = 0.00625, floored.
    assert int(learning_rate.reductions.numpy()) == 4


def test_plateau_on_accuracy_waits_for_a_higher_value(tmp_path):
    learning_rate = schedule(tmp_path, "--lr_schedule=plateau", "--plateau_patience=1", "--plateau_metric=accuracy")
    assert [learning_rate.end_of_evaluation({"accuracy": value}) for value in [0.5, 0.6, 0.6, 0.7]] == [
        False, False, True, False]
    assert float(learning_rate(0)) == pytest.approx(0.1 * 0.2)


def test_other_schedules_ignore_evaluations(tmp_path):
    learning_rate = schedule(tmp_path, "--lr_schedule=cosine")
    assert not any(learning_rate.end_of_evaluation({"loss/total": 1.0}) for _ in range(5))
