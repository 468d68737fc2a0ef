"""tune.py's study: storage refused or opened, a changed search refused, trials counted and
re-queued when their worker dies, pruning, several workers on one SQLite file, a killed study
continued, and best.flags reproducing the best trial."""

import contextlib
import json
import os
import re
import signal
import sqlite3
import time
import types

import optuna
import sqlalchemy
import pytest
from absl import flags

from tests.helpers import SMALL_RUN, assert_one_paragraph_error, run_script, start_script
from tuning import studies
from settings.errors import TapeloopError
from settings.command_line import define_flags
from trainer.flags import parse_config, serialize_config
from tuning.search_space import parse_space

FLAG_VALUES = flags.FlagValues()
define_flags(FLAG_VALUES)
FAST = (*SMALL_RUN, "--epochs=2")  # Two evaluations a trial.


def settings_for(folder, search="learning_rate=log:1e-3:1e-2", trials=2, prune=False, heartbeat_seconds=60):
    folder.mkdir(parents=True, exist_ok=True)
    settings = studies.StudySettings(name="study", folder=str(folder), storage_url=studies.default_storage_url(str(folder)),
                                    space=parse_space(search, FLAG_VALUES), trials=trials, metric="accuracy",
                                    prune=prune, heartbeat_seconds=heartbeat_seconds)
    (folder / "base.flags").write_text(serialize_config(parse_config(list(FAST))))
    return settings


def opened(settings):
    storage = studies.open_storage(settings)
    return studies.open_study(settings, storage), storage


@pytest.mark.parametrize("url", ["journal:///tmp/study.log", "redis://localhost/0", "study.db"])
def test_a_storage_without_heartbeats_is_refused(tmp_path, url):
    settings = studies.StudySettings("s", str(tmp_path), url, (), 1, "accuracy", False, 60)
    with pytest.raises(TapeloopError, match=r"\[search\] --storage=.* is not a relational database URL"):
        studies.open_storage(settings)


def test_an_unreachable_database_is_the_paragraph(tmp_path):
    settings = studies.StudySettings("s", str(tmp_path), f"sqlite:///{tmp_path}/missing/folder/x.db", (), 1,
                                    "accuracy", False, 60)
    with pytest.raises(TapeloopError, match=r"cannot open --storage=sqlite"):
        opened(settings)


@pytest.mark.parametrize("url", ["sqlite://", "sqlite:///:memory:"])
def test_an_in_memory_database_is_refused(tmp_path, url):
    settings = studies.StudySettings("s", str(tmp_path), url, (), 1, "accuracy", False, 60)
    with pytest.raises(TapeloopError, match=rf"\[search\] --storage={re.escape(url)} is an in-memory database"):
        studies.open_storage(settings)


@pytest.mark.parametrize("content, found", [("table", "another program's tables (customers)"),
                                            ("text", "no SQLite database")])
def test_a_file_that_is_not_a_studys_database_is_refused_and_left_as_it_was(tmp_path, content, found):
    path = tmp_path / "study.db"
    if content == "table":
        with contextlib.closing(sqlite3.connect(path)) as database, database:
            database.execute("CREATE TABLE customers (name TEXT)")
    else:
        path.write_text("someone's notes")
    before = path.read_bytes()
    settings = studies.StudySettings("s", str(tmp_path), studies.default_storage_url(str(tmp_path)), (), 1,
                                    "accuracy", False, 60)
    with pytest.raises(TapeloopError) as refused:
        studies.open_storage(settings)
    assert f"{path} is not a study's database" in str(refused.value) and found in str(refused.value)
    assert path.read_bytes() == before and sorted(os.listdir(tmp_path)) == ["study.db"]


def test_a_study_to_read_must_exist_and_is_not_created(tmp_path):
    settings = studies.StudySettings("s", str(tmp_path), studies.default_storage_url(str(tmp_path)), (), 1,
                                    "accuracy", False, 60)
    with pytest.raises(TapeloopError, match=rf"there is no study in {re.escape(str(tmp_path / 'study.db'))}"):
        studies.open_storage(settings, must_exist=True)
    assert os.listdir(tmp_path) == []


def test_a_study_is_continued_only_with_the_search_it_was_created_with(tmp_path):
    opened(settings_for(tmp_path))
    opened(settings_for(tmp_path))  # The same search: loaded.
    with pytest.raises(TapeloopError, match="study 'study' exists with another search"):
        opened(settings_for(tmp_path, search="learning_rate=log:1e-4:1e-2"))


def test_a_trial_whose_heartbeat_stops_is_re_queued_with_its_parameters_and_run_directory(tmp_path):
    settings = settings_for(tmp_path, trials=1, heartbeat_seconds=1)
    study, storage = opened(settings)
    trial, done = studies.next_trial(study, settings)
    rate = settings.space[0].suggest(trial)
    run_dir = studies.trial_run_dir(settings, trial)
    storage.record_heartbeat(trial._trial_id)  # Then the worker "dies".
    assert studies.next_trial(study, settings) == (None, False)  # Running elsewhere: wait, not done.
    time.sleep(3.5)  # Past the grace period (twice the heartbeat; SQLite keeps whole seconds).
    retry, done = studies.next_trial(study, settings)
    assert retry.number == 1 and not done
    assert settings.space[0].suggest(retry) == rate and studies.trial_run_dir(settings, retry) == run_dir
    trials = study.get_trials()
    assert trials[0].state == studies.FAIL and [t.number for t in studies.counted_trials(trials)] == [1]


def test_an_idle_worker_reads_the_study_again_within_seconds_whatever_the_heartbeat(tmp_path, monkeypatch):
    settings = settings_for(tmp_path, trials=1, heartbeat_seconds=60)
    study, storage = opened(settings)
    elsewhere, _ = studies.next_trial(study, settings)  # The one trial, running in another worker.
    slept = []

    def sleep(seconds):
        slept.append(seconds)
        study.tell(elsewhere, 0.5)  # That worker finishes meanwhile.

    monkeypatch.setattr(studies.time, "sleep", sleep)
    assert studies.run_worker(study, settings, storage) == 0
    assert slept == [studies.IDLE_POLL_SECONDS]


@pytest.mark.slow
def test_pruning_stops_a_bad_trial_after_its_first_evaluation_and_keeps_its_files(tmp_path):
    settings = settings_for(tmp_path, search="learning_rate=1e-2|1e-7", trials=4, prune=True)
    study, storage = opened(settings)
    choices = optuna.distributions.CategoricalDistribution(settings.space[0].choices)
    for _ in range(studies.PRUNER_STARTUP_TRIALS):  # Finished good trials, as other workers record them.
        study.add_trial(optuna.trial.create_trial(params={"learning_rate": 1e-2},
                                                  distributions={"learning_rate": choices}, value=0.95,
                                                  intermediate_values={1: 0.9, 2: 0.95}))
    study.enqueue_trial({"learning_rate": 1e-7})  # Then one that cannot learn, trained here.
    assert studies.run_worker(study, settings, storage) == 1
    states = [trial.state.name for trial in study.get_trials()]
    assert states == ["COMPLETE", "COMPLETE", "COMPLETE", "PRUNED"]
    bad = study.trials[3]
    assert list(bad.intermediate_values) == [1] and bad.user_attrs["steps"] == 1843 // 64  # One epoch of two.
    run_dir = tmp_path / "trial_3"
    results = json.loads((run_dir / "results.json").read_text())
    assert results["stopped_by_caller"] and results["test"] is None  # The search never saw test.
    assert json.loads((run_dir / "trial.json").read_text())["state"] == "PRUNED"
    assert (run_dir / "checkpoints").is_dir() and (run_dir / "saved_model").is_dir()


def tune_arguments(folder, *extra):
    return (*FAST, "--study=study", f"--study_dir={folder}", "--search=learning_rate=log:1e-3:3e-2", *extra)


@pytest.mark.slow
def test_two_workers_share_one_sqlite_file_and_best_flags_reproduce_the_best_trial(tmp_path):
    folder = tmp_path / "study"
    result = run_script("tune", *tune_arguments(folder, "--trials=3", "--workers=2", "--deterministic", "--epochs=1"))
    assert result.returncode == 0, result.stderr[-3000:]
    study = optuna.load_study(study_name="study", storage=studies.default_storage_url(str(folder)))
    trials = study.get_trials()
    assert sorted(trial.number for trial in trials) == [0, 1, 2]
    assert {trial.state.name for trial in trials} == {"COMPLETE"}
    assert sorted(os.listdir(folder)) == sorted(["base.flags", "best.flags", "study.db", "trials.md", "trials.csv",
                                                  ".next-trial.lock", *[f"trial_{n}" for n in range(3)],
                                                  *[name for name in os.listdir(folder) if name.startswith("events")]])
    assert "Best: trial" in result.stdout and result.stdout.count("Test accuracy of trial") == 1
    reproduced = run_script("train", f"--flagfile={folder}/best.flags", f"--run_dir={tmp_path}/again")
    assert reproduced.returncode == 0, reproduced.stderr[-2000:]
    again = json.loads((tmp_path / "again" / "results.json").read_text())
    best = json.loads((folder / f"trial_{study.best_trial.number}" / "results.json").read_text())
    assert again["eval"]["accuracy"] == study.best_value == best["eval"]["accuracy"]
    assert again["eval"]["loss"] == best["eval"]["loss"] and again["test"] is not None
    summary = run_script("tune", "--study=study", f"--study_dir={folder}", "--summary")
    test_line = [line for line in result.stdout.splitlines() if line.startswith("Test accuracy")]
    assert summary.returncode == 0 and test_line[0] in summary.stdout  # Measured once, printed again.


@pytest.mark.slow
def test_a_study_killed_mid_trial_continues_on_restart_resuming_that_trial(tmp_path):
    folder = tmp_path / "study"
    arguments = tune_arguments(folder, "--trials=2", "--heartbeat_seconds=1", "--epochs=2",
                               "--checkpoint_every_steps=10")
    worker = start_script("tune", *arguments, cwd=tmp_path)
    checkpoint_state = folder / "trial_0" / "checkpoints" / "checkpoint"
    deadline = time.monotonic() + 300
    while not checkpoint_state.exists() and worker.poll() is None and time.monotonic() < deadline:
        time.sleep(0.2)
    os.kill(worker.pid, signal.SIGKILL)
    worker.wait()
    assert checkpoint_state.exists() and not (folder / "trial_0" / "results.json").exists()
    result = run_script("tune", *arguments)
    assert result.returncode == 0, result.stderr[-3000:]
    study = optuna.load_study(study_name="study", storage=studies.default_storage_url(str(folder)))
    trials = study.get_trials()
    assert trials[0].state == studies.FAIL
    retry = next(trial for trial in trials if trial.system_attrs.get("failed_trial") == 0)
    assert retry.state.name == "COMPLETE", (retry.user_attrs.get("error"), result.stderr[-3000:])
    assert retry.user_attrs["run_dir"] == str(folder / "trial_0")
    assert len(studies.counted_trials(trials)) == 2 and "Resuming from" in result.stderr
    assert json.loads((folder / "trial_0" / "results.json").read_text())["steps"] == 2 * (1843 // 64)
    assert "0 | fail" not in (folder / "trials.md").read_text()  # The re-queued trial stands in for it.


def test_a_run_dir_is_refused_pointing_at_the_study_dir(tmp_path):
    result = run_script("tune", *FAST, "--study=s", f"--study_dir={tmp_path}/s", "--search=dropout=0:0.5",
                        f"--run_dir={tmp_path}/run")
    assert_one_paragraph_error(result, 2, "[flags]", "--run_dir is not for tune.py", "pass --study_dir")
    assert not (tmp_path / "s").exists() and not (tmp_path / "run").exists()


@pytest.mark.slow
def test_a_study_whose_every_trial_failed_exits_non_zero_with_the_first_failure(tmp_path):
    folder = tmp_path / "study"
    result = run_script("tune", *FAST, "--study=study", f"--study_dir={folder}", "--trials=2",
                        "--search=learning_rate=log:1e4:1e5")  # Every trial diverges.
    assert_one_paragraph_error(result, 1, "[search] every trial of study 'study' failed", "2 failed trials; the first: [",
                               "diverged")
    assert "No trial has completed yet." in result.stdout  # The summary still comes first.


def test_summary_of_a_study_that_does_not_exist_creates_nothing(tmp_path):
    result = run_script("tune", "--study=nowhere", f"--study_dir={tmp_path}/nowhere", "--summary")
    assert_one_paragraph_error(result, 1, "[search] there is no study in")
    assert not (tmp_path / "nowhere").exists()


@pytest.mark.parametrize("search, message", [
    ("learning_rat=log:1e-4:1e-2", "unknown flag 'learning_rat' (did you mean learning_rate?)"),
    ("dropout=0.5:0.1", "empty range"),
    ("batch_size=0.5:2", "'0.5' is not a value of --batch_size"),
])
def test_a_bad_spec_is_refused_before_any_trial(tmp_path, search, message):
    result = run_script("tune", *FAST, "--study=s", f"--study_dir={tmp_path}/s", f"--search={search}")
    assert result.returncode == 2
    assert result.stderr.splitlines()[-1].startswith("tapeloop: error: [flags]") and message in result.stderr
    assert not (tmp_path / "s").exists()


def test_a_space_the_fixed_flags_make_invalid_is_refused_before_any_trial(tmp_path):
    result = run_script("tune", *FAST, "--lr_schedule=cosine", "--learning_rate=1e-2", "--min_learning_rate=1e-3", "--study=s",
                        f"--study_dir={tmp_path}/s", "--search=learning_rate=log:1e-4:1e-2")
    assert result.returncode == 1
    assert "[search] --search allows --learning_rate=0.0001, which the fixed flags make invalid" in result.stderr
    assert not any(name.startswith("trial_") for name in os.listdir(tmp_path / "s"))


class RefusingStorage:
    """A study database that went away: every heartbeat fails as SQLAlchemy reports a lost server."""

    def record_heartbeat(self, trial_id):
        raise sqlalchemy.exc.OperationalError("UPDATE trial_heartbeats", {}, Exception("server closed the connection"))

    def get_heartbeat_interval(self):
        return 1


def test_a_refused_heartbeat_stops_the_training_as_sigterm_does_and_says_the_database_went_away():
    received = []
    previous = signal.signal(signal.SIGTERM, lambda number, frame: received.append(number))
    try:
        with studies.Heartbeat(RefusingStorage(), types.SimpleNamespace(_trial_id=7, number=4)) as beating:
            deadline = time.monotonic() + 10
            while not received and time.monotonic() < deadline:
                time.sleep(0.01)
    finally:
        signal.signal(signal.SIGTERM, previous)
    assert received == [signal.SIGTERM] and isinstance(beating.lost, sqlalchemy.exc.OperationalError)
    settings = studies.StudySettings("s", "/tmp", "postgresql://tapeloop:secret@dbhost/studies", (), 1, "accuracy",
                                     False, 60)
    paragraph = studies.storage_lost(settings, beating.lost).paragraph()
    assert "[search] the study's database stopped answering (postgresql://tapeloop:***@dbhost/studies)" in paragraph
    assert "OperationalError" in paragraph and "secret" not in paragraph and "rerun the same command" in paragraph
