"""improve.py: the keep rule, and rounds of trials on a run whose learning rate is far too low."""

import json
import signal
import time

import numpy as np
import pytest

from data import pipeline
from diagnosis.findings import Finding
from tests.documented_outputs import assert_documented
from tests.helpers import SMALL_RUN, checkpointed_step, make_config, run_script, start_script
from tuning import cross_validation, improvement
from tuning.compute_budget import ComputeBudget


def outcomes(right: int, fixed: int, broken: int, total: int = 1000) -> tuple[np.ndarray, np.ndarray]:
    """Per-example results of a best run right on `right` of `total` examples, and of a trial that gets
    `fixed` of its mistakes right and `broken` of its right answers wrong."""
    best = np.arange(total) < right
    tried = best.copy()
    tried[right:right + fixed] = True
    tried[:broken] = False
    return best, tried


ACCURACY = improvement.Judge("accuracy", np.arange(1000) % 10)


@pytest.mark.parametrize("fixed, broken, kept", [
    (40, 10, True),    # +3 points; only the 50 examples that changed vary: noise 2 sqrt(50) / 1000 = 1.4 points.
    (15, 5, True),     # +1 point beyond 0.9: a paired test sees what two independent scores could not.
    (30, 25, False),   # +0.5 points among 55 changes: chance.
    (1, 0, False),     # One example never decides.
])
def test_a_trial_is_kept_only_beyond_the_noise_of_the_paired_difference(fixed, broken, kept):
    gain, noise = ACCURACY.compare(*outcomes(900, fixed, broken))
    assert gain == pytest.approx((fixed - broken) / 1000)
    assert noise == pytest.approx(max(1 / 1000, 2 * (fixed + broken) ** 0.5 / 1000))
    assert (gain > noise) == kept


def test_balanced_accuracy_weighs_each_example_by_its_class():
    """A long tail: 9 classes of 100 validation examples and one of 5. Fixing 2 of the rare class gains
    2/5 of its recall, 4 points of balanced accuracy; the same 2 in a large class gain 0.2 points."""
    labels = np.r_[np.repeat(np.arange(9), 100), np.full(5, 9)]
    judge = improvement.Judge("balanced_accuracy", labels)
    best = np.ones(905, bool)
    best[[900, 901]] = False  # Two of the rare class wrong.
    rare_fixed = np.ones(905, bool)
    gain, noise = judge.compare(best, rare_fixed)
    assert gain == pytest.approx(2 / (10 * 5)) and noise == pytest.approx(2 * (2 * (1 / 50) ** 2) ** 0.5)
    best[[0, 1]] = False
    common_fixed = best.copy()
    common_fixed[[0, 1]] = True
    assert judge.compare(best, common_fixed)[0] == pytest.approx(2 / (10 * 100))


def test_a_validation_split_too_coarse_for_the_metric_is_judged_by_cross_validation(tmp_path):
    """A long tail: the rarest class has a handful of validation examples, each worth points of balanced accuracy."""
    config = make_config(tmp_path, "--class_imbalance=50", "--early_stopping_metric=balanced_accuracy")
    data = pipeline.prepare_data(config)
    judging, notes = improvement.judging_for("auto", config, data, str(tmp_path / "study"))
    examples = len(data.train[1]) + len(data.validation[1])
    assert judging.rule == "cross_validation" and notes == [] and judging.judge.metric == "balanced_accuracy"
    assert "judges balanced_accuracy coarsely" in judging.reason and "in its smallest class" in judging.reason
    assert len(judging.judge.labels) == examples and f"of the run's {examples:,} training" in judging.reason
    assert judging.record() == {"rule": "cross_validation", "reason": judging.reason, "examples": examples,
                                "folds": judging.trainings_per_trial}
    kept, notes = improvement.judging_for("split", config, data, str(tmp_path / "study"))
    assert kept.rule == "split" and len(kept.judge.labels) == len(data.validation[1])
    assert len(notes) == 1 and "--judge=cross_validation judges every training example once" in notes[0]
    balanced = make_config(tmp_path)  # 10% of 2,048 judges accuracy finely enough.
    judging, notes = improvement.judging_for("auto", balanced, pipeline.prepare_data(balanced), str(tmp_path))
    assert judging.rule == "split" and notes == [] and judging.trainings_per_trial == 1


@pytest.mark.parametrize("rarest, folds", [(59, 3), (30, 3), (25, 5), (21, 10), (5, 10)])
def test_more_folds_when_the_rarest_class_is_small(rarest, folds):
    labels = np.r_[np.zeros(500, int), np.ones(rarest, int)]
    assert cross_validation.fold_count(labels) == folds


def test_fold_models_of_the_run_being_improved_and_of_its_trials_go_to_the_study_folder(tmp_path):
    judging = cross_validation.CrossValidation(None, str(tmp_path / "study"))
    assert judging.runs_folder(str(tmp_path / "run")) == str(tmp_path / "study" / "folds" / "start")
    assert judging.runs_folder(str(tmp_path / "study" / "round_1" / "class_imbalance")) == str(
        tmp_path / "study" / "folds" / "round_1" / "class_imbalance")


def test_a_compute_budget_leaves_out_the_fixes_that_train_longer_or_wider(tmp_path):
    """--max_compute=1, as for a recipe made for a time budget: more epochs (2x) or width (8 to 16
    channels: convolutions' FLOPs grow with their square) are noted, not tried; a rate is free."""
    config = make_config(tmp_path, "--epochs=2")
    data = pipeline.prepare_data(config)
    findings = [Finding("too_few_epochs", 0.05, "rising", "train longer", {"epochs": 4}),
                Finding("underfitting", 0.04, "train = validation", "wider", {"model_width": 16}),
                Finding("learning_rate_low", 0.03, "slow", "raise the rate", {"learning_rate": 0.01})]
    budget = ComputeBudget.of(1.0, config, data)
    assert budget.factor(config, {"epochs": 4}) == pytest.approx(2.0)
    assert budget.factor(config, {"model_width": 16}) > 2.5
    kept, notes = budget.affordable(findings, config)
    assert kept == findings[2:] and len(notes) == 2
    assert notes[0] == ("too_few_epochs (--epochs=4) was not tried: it would train 2.00x the starting run's "
                        "compute, over --max_compute=1")
    assert notes[1].startswith("underfitting (--model_width=16) was not tried")
    assert ComputeBudget.of(2.0, config, data).affordable(findings, config)[0] == findings[::2]
    assert ComputeBudget.of(None, config, data).affordable(findings, config) == (findings, [])
    judged = ComputeBudget.of(4.0, config, data, trainings_per_trial=3)  # Each trial and its 3 fold models.
    assert judged.factor(config, {"epochs": 4}) == pytest.approx(6.0)
    assert judged.affordable(findings[:1], config)[1] == [
        "too_few_epochs (--epochs=4) was not tried: it would train 6.00x the starting run's compute, its 3 fold "
        "models included, over --max_compute=4"]
    capped = make_config(tmp_path, "--epochs=2", "--max_steps=20")  # More epochs, the same 20 steps.
    assert ComputeBudget.of(1.0, capped, data).factor(capped, {"epochs": 4}) == pytest.approx(1.0)


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
    assert_documented("improve.json", outcome)
    assert outcome["judge"]["rule"] == "split" and "Judged by the validation split: " in improved.stdout
    first = outcome["rounds"][0]
    assert first["finding"] == "learning_rate_low" and first["flags"] == {"learning_rate": 0.000548} and first["kept"]
    assert outcome["after"]["validation"] > outcome["before"]["validation"] + 0.3
    kept = [trial for trial in outcome["rounds"] if trial["kept"]]
    assert outcome["after"]["run_dir"] == kept[-1]["run_dir"]
    for trial in outcome["rounds"]:  # Trials never score the test split: only the final run is, at the end.
        trial_dir = tmp_path / "study" / f"round_{trial['round']}" / trial["finding"]
        assert json.loads((trial_dir / "results.json").read_text())["test"] is None
        recorded = json.loads((trial_dir / "trial.json").read_text())  # A trial of the round's tune.py study.
        assert_documented("trial.json", recorded)
        assert recorded["study"] == f"improve_round_{trial['round']}" and recorded["state"] == "COMPLETE"
    assert outcome["after"]["test"] > outcome["before"]["test"] and "| round 1 | learning_rate_low |" in improved.stdout
    assert (tmp_path / "study" / "best.flags").read_text() == (tmp_path / kept[-1]["run_dir"] / "flags.txt").read_text()
    again = run_script("improve", *improve_args)  # Every trial finished: read back, none retrained.
    assert again.returncode == 0 and json.loads((tmp_path / "study" / "improve.json").read_text()) == outcome


def killed_in_a_trial(improve_args: list[str], trial_dir) -> int:
    """Runs improve.py and kills it (SIGKILL) once `trial_dir` has a checkpoint and no results; returns
    the checkpoint's step."""
    process = start_script("improve", *improve_args)
    deadline = time.monotonic() + 600
    while (checkpointed_step(trial_dir) == 0 and process.poll() is None and time.monotonic() < deadline):
        time.sleep(0.05)
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert not (trial_dir / "results.json").exists(), "the trial finished before it could be killed"
    return checkpointed_step(trial_dir)


@pytest.mark.slow
def test_a_long_tail_run_is_judged_by_cross_validation_on_every_training_example(tmp_path):
    run_dir = tmp_path / "tail"
    assert run_script("train", *SMALL_RUN, "--learning_rate=1e-5", "--epochs=2", "--class_imbalance=5",
                      "--early_stopping_metric=balanced_accuracy", f"--run_dir={run_dir}").returncode == 0
    improved = run_script("improve", f"--run_dir={run_dir}", "--rounds=1", "--trials_per_round=1", "--workers=2",
                          f"--study_dir={tmp_path / 'study'}")  # Trials and fold models on tune.py workers.
    assert improved.returncode == 0, improved.stderr
    outcome = json.loads((tmp_path / "study" / "improve.json").read_text())
    judged = outcome["judge"]
    assert judged["rule"] == "cross_validation" and "judges balanced_accuracy coarsely" in judged["reason"]
    assert f"Judged by cross-validation: {judged['reason']}." in improved.stdout
    trial = outcome["rounds"][0]
    folds = [f"fold_{fold}" for fold in range(judged["folds"])]
    for runs in (tmp_path / "study" / "folds" / "start", tmp_path / "study" / "folds" / "round_1" / trial["finding"]):
        assert sorted(path.name for path in runs.iterdir()) == folds
        for fold in folds:  # Each fold model a trial of the round's fold study, scored on its own fold.
            recorded = json.loads((runs / fold / "trial.json").read_text())
            assert recorded["study"] == "improve_round_1_folds" and recorded["state"] == "COMPLETE"
            assert recorded["value"] == json.loads((runs / fold / "results.json").read_text())["test"]["accuracy"]
    assert judged["folds"] == 3 and judged["examples"] > 900 and trial["gain"] > trial["noise"] and trial["kept"]
    assert outcome["after"]["test"] > outcome["before"]["test"]
