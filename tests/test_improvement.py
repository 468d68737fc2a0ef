"""improve.py: the keep rule, and rounds of trials on a run whose learning rate is far too low."""

import json

import pytest

from tests.helpers import SMALL_RUN, run_script
from tuning import improvement


def trial(validation):
    return improvement.Trial(1, "x", {}, "/unused", validation)


ACCURACY = improvement.Judge("accuracy", (100,) * 10)  # 1,000 validation examples.


@pytest.mark.parametrize("best, tried, kept", [
    (0.90, 0.93, True),    # 3 points on 1,000 examples: beyond the noise there (2.7 points).
    (0.90, 0.91, False),   # 1 point: within it.
    (0.99, 0.999, True),   # Near the top the noise shrinks (0.89 points at 99%).
    (0.99, 0.995, False),
])
def test_a_trial_is_kept_only_beyond_the_noise_of_the_validation_split(best, tried, kept):
    assert ACCURACY.keeps(trial(best), trial(tried)) == (tried - best > ACCURACY.noise(best)) == kept


def test_the_noise_is_at_least_one_example():
    assert improvement.Judge("accuracy", (45, 45)).noise(1.0) == pytest.approx(1 / 90)
    assert improvement.Judge("accuracy", (5000, 5000)).noise(0.5) == pytest.approx(2 * (0.5 / 10_000) ** 0.5)
    assert improvement.Judge("balanced_accuracy", (45, 5)).noise(1.0) == pytest.approx(1 / 90)


def test_balanced_accuracys_noise_is_set_by_the_small_classes():
    """A long tail: 9 classes of 500 validation examples and one of 5. Balanced accuracy moves by 2
    points when one of the five changes; its noise is far above that of 4,505 examples' accuracy."""
    long_tail = improvement.Judge("balanced_accuracy", (500,) * 9 + (5,))
    variance = 0.9 * 0.1 * (9 / 500 + 1 / 5) / 100
    assert long_tail.noise(0.9) == pytest.approx(2 * (2 * variance) ** 0.5)
    assert long_tail.noise(0.9) > 3 * improvement.Judge("accuracy", (500,) * 9 + (5,)).noise(0.9)


@pytest.mark.slow
def test_improve_raises_a_too_low_rate_then_fixes_what_the_next_diagnosis_finds_and_scores_test_once(tmp_path):
    run_dir = tmp_path / "slow"
    assert run_script("train", *SMALL_RUN, "--learning_rate=1e-5", "--epochs=2", "--log_every_steps=4",
                      f"--run_dir={run_dir}").returncode == 0
    improved = run_script("improve", f"--run_dir={run_dir}", "--rounds=2", f"--study_dir={tmp_path / 'study'}")
    assert improved.returncode == 0, improved.stderr
    outcome = json.loads((tmp_path / "study" / "improve.json").read_text())
    first = outcome["rounds"][0]
    assert first["finding"] == "learning_rate_low" and first["flags"] == {"learning_rate": 1e-4} and first["kept"]
    assert outcome["after"]["validation"] > outcome["before"]["validation"] + 0.3
    kept = [trial for trial in outcome["rounds"] if trial["kept"]]
    assert outcome["after"]["run_dir"] == kept[-1]["run_dir"]
    for trial in outcome["rounds"]:  # Trials never score the test split: only the final run is, at the end.
        assert json.loads((tmp_path / "study" / f"round_{trial['round']}" / trial["finding"] /
                           "results.json").read_text())["test"] is None
    assert outcome["after"]["test"] > outcome["before"]["test"] and "| round 1 | learning_rate_low |" in improved.stdout
    assert (tmp_path / "study" / "best.flags").read_text() == (tmp_path / kept[-1]["run_dir"] / "flags.txt").read_text()
    again = run_script("improve", f"--run_dir={run_dir}", "--rounds=2", f"--study_dir={tmp_path / 'study'}")
    assert again.returncode == 0 and json.loads((tmp_path / "study" / "improve.json").read_text()) == outcome
