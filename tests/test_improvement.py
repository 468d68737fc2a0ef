"""improve.py: the keep rule, and rounds of trials on a run whose learning rate is far too low."""

import json
import signal
import subprocess
import sys
import time

import pytest

from tests.helpers import REPO, SMALL_RUN, checkpointed_step, run_script
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
                      "--checkpoint_every_steps=8", f"--run_dir={run_dir}").returncode == 0
    improve_args = [f"--run_dir={run_dir}", "--rounds=2", f"--study_dir={tmp_path / 'study'}"]
    killed_trial = tmp_path / "study" / "round_1" / "learning_rate_low"
    killed_at = killed_in_a_trial(improve_args, killed_trial)
    improved = run_script("improve", *improve_args, "--workers=2")  # Two tune.py workers train each round.
    assert improved.returncode == 0, improved.stderr
    assert improved.stdout.count("worker 0 ran") == improved.stdout.count("worker 1 ran") >= 1
    assert f"Resuming from {killed_trial / 'checkpoints'}" in improved.stderr  # Not retrained: resumed ...
    assert f"ckpt-{killed_at}" in improved.stderr  # ... from where it was killed.
    outcome = json.loads((tmp_path / "study" / "improve.json").read_text())
    first = outcome["rounds"][0]
    assert first["finding"] == "learning_rate_low" and first["flags"] == {"learning_rate": 0.000548} and first["kept"]
    assert outcome["after"]["validation"] > outcome["before"]["validation"] + 0.3
    kept = [trial for trial in outcome["rounds"] if trial["kept"]]
    assert outcome["after"]["run_dir"] == kept[-1]["run_dir"]
    for trial in outcome["rounds"]:  # Trials never score the test split: only the final run is, at the end.
        trial_dir = tmp_path / "study" / f"round_{trial['round']}" / trial["finding"]
        assert json.loads((trial_dir / "results.json").read_text())["test"] is None
        recorded = json.loads((trial_dir / "trial.json").read_text())  # A trial of the round's tune.py study.
        assert recorded["study"] == f"improve_round_{trial['round']}" and recorded["state"] == "COMPLETE"
    assert outcome["after"]["test"] > outcome["before"]["test"] and "| round 1 | learning_rate_low |" in improved.stdout
    assert (tmp_path / "study" / "best.flags").read_text() == (tmp_path / kept[-1]["run_dir"] / "flags.txt").read_text()
    again = run_script("improve", *improve_args)  # Every trial finished: read back, none retrained.
    assert again.returncode == 0 and json.loads((tmp_path / "study" / "improve.json").read_text()) == outcome


def killed_in_a_trial(improve_args: list[str], trial_dir) -> int:
    """Runs improve.py and kills it (SIGKILL) once `trial_dir` has a checkpoint and no results; returns
    the checkpoint's step."""
    process = subprocess.Popen([sys.executable, str(REPO / "scripts" / "improve.py"), *improve_args], cwd=REPO,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 600
    while (checkpointed_step(trial_dir) == 0 and process.poll() is None and time.monotonic() < deadline):
        time.sleep(0.05)
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert not (trial_dir / "results.json").exists(), "the trial finished before it could be killed"
    return checkpointed_step(trial_dir)
