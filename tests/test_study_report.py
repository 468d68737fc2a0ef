"""The study's summary: one row a counted trial (pruned ones with their last report, re-queued
ones standing in for the failed original), markdown and CSV, the best complete trial, and
best.flags without the trial's own run directory."""

import csv
import io

import optuna
import pytest
from optuna.distributions import CategoricalDistribution, FloatDistribution

from tests.test_studies import opened, settings_for
from tuning import study_report
from trainer.flags import parse_config

DISTRIBUTIONS = {"learning_rate": FloatDistribution(1e-3, 1e-2, log=True),
                 "optimizer": CategoricalDistribution(["adam", "sgd"])}


def add(study, state, rate, run_dir, value=None, intermediate=None, system_attrs=None):
    study.add_trial(optuna.create_trial(
        state=state, value=value, params={"learning_rate": rate, "optimizer": "adam"}, distributions=DISTRIBUTIONS,
        user_attrs={"run_dir": str(run_dir), "steps": 56, "seconds": 7.4}, intermediate_values=intermediate,
        system_attrs=system_attrs or {}))


@pytest.fixture
def study_and_settings(tmp_path):
    settings = settings_for(tmp_path, search="learning_rate=log:1e-3:1e-2,optimizer=adam|sgd", trials=4)
    study, _ = opened(settings)
    states = optuna.trial.TrialState
    add(study, states.COMPLETE, 0.002, tmp_path / "trial_0", value=0.91, intermediate={1: 0.8, 2: 0.91})
    add(study, states.PRUNED, 0.0011, tmp_path / "trial_1", intermediate={1: 0.5})
    add(study, states.FAIL, 0.005, tmp_path / "trial_2")
    add(study, states.COMPLETE, 0.005, tmp_path / "trial_2", value=0.95,
        system_attrs={"failed_trial": 2, "retry_history": [2]})
    (tmp_path / "trial_2").mkdir()
    (tmp_path / "trial_2" / "flags.txt").write_text(
        f"--dataset=synthetic\n--learning_rate=0.005\n--noscore_test\n--run_dir={tmp_path}/trial_2\n--seed=0\n")
    return study, settings


def test_rows_count_pruned_trials_and_let_a_retry_stand_in_for_its_failed_original(study_and_settings):
    study, settings = study_and_settings
    rows = study_report.trial_rows(study, settings)
    assert [(row["trial"], row["state"]) for row in rows] == [(0, "complete"), (1, "pruned"),
                                                              (3, "complete (retry of 2)")]
    assert rows[1]["validation accuracy"] == "0.5000 (epoch 1)" and rows[0]["learning_rate"] == "0.002"
    assert rows[0]["steps"] == 56 and rows[0]["seconds"] == "7"


def test_markdown_and_csv_hold_the_same_rows(study_and_settings):
    rows = study_report.trial_rows(*study_and_settings)
    table = study_report.markdown_table(rows).splitlines()
    assert table[0] == "| trial | state | learning_rate | optimizer | validation accuracy | steps | seconds |"
    assert len(table) == 2 + len(rows)
    assert list(csv.DictReader(io.StringIO(study_report.csv_text(rows)))) == [
        {key: str(value) for key, value in row.items()} for row in rows]


def test_best_flags_reproduce_the_best_complete_trial_with_the_test_split_on(study_and_settings, tmp_path):
    study, settings = study_and_settings
    best = study_report.best_trial(study)
    assert best.number == 3
    path = study_report.write_best_flags(settings, best)
    text = open(path).read()
    assert text.startswith("# Trial 3 of study study: validation accuracy 0.950000.")
    assert "--run_dir" not in text.replace("--run_dir=RUN", "") and "--noscore_test" not in text
    config = parse_config([f"--flagfile={path}"])
    assert config.learning_rate == 0.005 and config.score_test and config.run_dir is None


def test_a_summary_before_any_trial_completes_says_so(tmp_path):
    settings = settings_for(tmp_path)
    study, _ = opened(settings)
    add(study, optuna.trial.TrialState.PRUNED, 0.002, tmp_path / "trial_0", intermediate={1: 0.5})
    text = study_report.write_summary(study, settings, complete=False)
    assert text.endswith("No trial has completed yet.") and (tmp_path / "trials.csv").exists()
