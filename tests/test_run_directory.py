import os
import subprocess
import sys

import pytest

from tests.helpers import REPO, assert_one_paragraph_error, copy_run, run_script
from trainer import run_directory
from settings.errors import TapeloopError


def test_a_claimed_directory_is_refused_to_a_second_claim_until_released(tmp_path):
    with run_directory.claim(str(tmp_path / "run")):
        with pytest.raises(TapeloopError) as raised:
            with run_directory.claim(str(tmp_path / "run")):
                pass
        message = str(raised.value)
        assert "[run directory]" in message and "is in use by another tapeloop process" in message
        assert f"pid {os.getpid()}" in message and "pass another --run_dir" in message
    with run_directory.claim(str(tmp_path / "run")):  # Released: free again.
        pass


@pytest.mark.slow
def test_a_killed_process_leaves_no_stuck_lock(tmp_path):
    killer = ("import os, sys; from trainer import run_directory\n"
              f"with run_directory.claim({str(tmp_path / 'run')!r}):\n    os.kill(os.getpid(), 9)\n")
    result = subprocess.run([sys.executable, "-c", killer], cwd=REPO, capture_output=True)
    assert result.returncode == -9 and (tmp_path / "run" / ".lock").exists()
    with run_directory.claim(str(tmp_path / "run")):
        pass


@pytest.mark.slow
def test_a_second_training_process_on_a_run_directory_in_use_is_refused(tmp_path):
    with run_directory.claim(str(tmp_path / "run")):
        result = run_script("train", "--dataset=synthetic", f"--run_dir={tmp_path / 'run'}")
    assert result.returncode == 1 and "is in use by another tapeloop process" in result.stderr
    assert "Traceback" not in result.stderr and not (tmp_path / "run" / "checkpoints").exists()


def test_an_unwritable_run_directory_fails_before_training(tmp_path):
    (tmp_path / "a_file").write_text("")
    with pytest.raises(TapeloopError, match=r"cannot write to --run_dir=.*NotADirectoryError"):
        with run_directory.claim(str(tmp_path / "a_file" / "run")):
            pass


def test_starting_over_is_refused_only_where_an_earlier_run_left_results(tmp_path):
    run_directory.refuse_to_start_over(str(tmp_path))  # Empty: a new run may start.
    (tmp_path / "train").mkdir()
    run_directory.refuse_to_start_over(str(tmp_path))  # Logs alone are no results.
    (tmp_path / "results.json").write_text("{}")
    (tmp_path / "best").mkdir()
    (tmp_path / "best" / "ckpt-40.index").write_text("")
    with pytest.raises(TapeloopError, match="holds an earlier run's results but no checkpoint") as error:
        run_directory.refuse_to_start_over(str(tmp_path))
    assert "results.json, best/ckpt-40" in str(error.value)


def test_a_flags_file_of_another_name_is_written_and_its_changed_flags_named(tmp_path, caplog):
    from tests.helpers import make_config

    run_directory.write_flags_file(make_config(tmp_path, "--epochs=2"), str(tmp_path), "base.flags")
    assert "--epochs=2" in (tmp_path / "base.flags").read_text() and not (tmp_path / "flags.txt").exists()
    run_directory.write_flags_file(make_config(tmp_path, "--epochs=3"), str(tmp_path), "base.flags")
    assert "Resuming with changed flags: --epochs=3" in caplog.text


@pytest.mark.slow
def test_diagnosing_a_run_that_is_still_training_is_refused_and_writes_nothing(tmp_path, synthetic_run):
    run_dir = copy_run(synthetic_run, tmp_path)
    with run_directory.claim(str(run_dir)):
        result = run_script("diagnose", f"--run_dir={run_dir}", "--label_issues=off")
    assert_one_paragraph_error(result, 1, f"{run_dir} is in use by another tapeloop process",
                               f"pid {os.getpid()}")
    assert not (run_dir / "diagnosis").exists()
