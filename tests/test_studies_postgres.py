"""tune.py's study on a real PostgreSQL server (tests/postgres_server.py): two workers in separate
processes, one killed inside a trial, its trial re-queued by the heartbeat and finished by the other;
the server going away mid-study, and the study resuming when it is back."""

import json
import os
import signal
import subprocess
import threading
import time

import optuna
import pytest

from tests import postgres_server
from tests.helpers import SMALL_RUN, assert_one_paragraph_error, run_script, start_script
from tuning import studies

pytestmark = pytest.mark.slow  # Each test starts a server and trains.
TRIAL_FLAGS = (*SMALL_RUN, "--epochs=2", "--checkpoint_every_steps=10", "--heartbeat_seconds=2",
               "--search=learning_rate=log:1e-3:3e-2")


@pytest.fixture(scope="module")
def server():
    reason = postgres_server.why_unavailable()
    if reason:
        pytest.skip(reason)
    started = postgres_server.PostgresServer()
    yield started
    started.remove()


class Worker:
    """A tune.py worker process whose stderr is collected as it comes (its "Trial K (" lines say which
    trials it runs)."""

    def __init__(self, folder, study: str, url: str, trials: int, cwd):
        self.process = start_script("tune", *TRIAL_FLAGS, f"--study={study}", f"--study_dir={folder}",
                                    f"--storage={url}", f"--trials={trials}", cwd=cwd, stdout=subprocess.PIPE,
                                    stderr=subprocess.PIPE)
        self.lines: list[str] = []
        self.reader = threading.Thread(target=lambda: self.lines.extend(self.process.stderr), daemon=True)
        self.reader.start()

    def runs(self, trial: int) -> bool:
        return any(f"Trial {trial} (" in line for line in list(self.lines))

    def finish(self, seconds: float = 600) -> tuple[int, str, str]:
        out = self.process.stdout.read()
        self.process.wait(timeout=seconds)
        self.reader.join()
        return self.process.returncode, out, "".join(self.lines)


def wait_for(path, worker: Worker, seconds: float = 300) -> None:
    deadline = time.monotonic() + seconds
    while not path.exists() and worker.process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    assert path.exists(), "".join(worker.lines)[-3000:]


def test_a_worker_killed_inside_a_trial_has_its_trial_re_queued_and_finished_by_the_other(server, tmp_path):
    folder = tmp_path / "study"
    workers = [Worker(folder, "killed", server.url, 3, tmp_path) for _ in range(2)]
    checkpoint = folder / "trial_0" / "checkpoints" / "checkpoint"
    wait_for(checkpoint, workers[0])
    killed, other = workers if workers[0].runs(0) else workers[::-1]
    os.kill(killed.process.pid, signal.SIGKILL)
    killed.finish()
    assert not (folder / "trial_0" / "results.json").exists(), "trial 0 finished before it could be killed"
    code, out, err = other.finish()
    assert code == 0, err[-3000:]
    trials = optuna.load_study(study_name="killed", storage=server.url).get_trials()
    assert trials[0].state == studies.FAIL and len(studies.counted_trials(trials)) == 3
    retry = next(trial for trial in trials if trial.system_attrs.get("failed_trial") == 0)
    assert retry.state.name == "COMPLETE" and retry.user_attrs["run_dir"] == str(folder / "trial_0")
    assert "Resuming from" in err and "Best: trial" in out
    reproduced = run_script("train", f"--flagfile={folder}/best.flags", f"--run_dir={tmp_path}/best")
    assert reproduced.returncode == 0, reproduced.stderr[-2000:]


def test_a_server_that_goes_away_ends_the_workers_with_the_paragraph_and_a_restart_resumes(server, tmp_path):
    folder = tmp_path / "study"
    running = Worker(folder, "outage", server.url, 2, tmp_path)
    wait_for(folder / "trial_0" / "checkpoints" / "checkpoint", running)
    server.stop("immediate")
    stopped_at = time.monotonic()
    try:
        code, out, err = running.finish(seconds=120)
    finally:
        server.start()
    assert time.monotonic() - stopped_at < 60
    assert_one_paragraph_error(subprocess.CompletedProcess([], code, out, err), 1,
                               "[search] the study's database stopped answering",
                               "bring the database back and rerun the same command")
    time.sleep(2 * 2 + 1)  # Past the heartbeat's grace: the interrupted trial is stale.
    code, out, err = Worker(folder, "outage", server.url, 2, tmp_path).finish()
    assert code == 0, err[-3000:]
    trials = optuna.load_study(study_name="outage", storage=server.url).get_trials()
    retry = next(trial for trial in trials if trial.system_attrs.get("failed_trial") == 0)
    assert retry.state.name == "COMPLETE" and "Resuming from" in err
    assert len(studies.counted_trials(trials)) == 2


def test_improve_on_the_server_with_two_workers_gives_what_it_gives_on_sqlite(server, tmp_path):
    run_dir = tmp_path / "slow"
    assert run_script("train", *SMALL_RUN, "--learning_rate=1e-5", "--epochs=2", "--deterministic",
                      f"--run_dir={run_dir}").returncode == 0
    outcomes = {}
    for name, storage in (("sqlite", ()), ("postgresql", (f"--storage={server.url}",))):
        improved = run_script("improve", f"--run_dir={run_dir}", "--rounds=1", "--workers=2",
                              f"--study_dir={tmp_path / name}", *storage)
        assert improved.returncode == 0, improved.stderr[-3000:]
        assert improved.stdout.count("worker 0 ran") == improved.stdout.count("worker 1 ran") == 1
        outcomes[name] = json.loads((tmp_path / name / "improve.json").read_text())

    def judged(outcome):
        return ([(trial["finding"], trial["flags"], trial["kept"], trial["validation"]) for trial in outcome["rounds"]],
                outcome["after"]["validation"], outcome["after"]["test"])
    assert judged(outcomes["postgresql"]) == judged(outcomes["sqlite"])
    assert outcomes["sqlite"]["rounds"] and outcomes["sqlite"]["rounds"][0]["kept"]
