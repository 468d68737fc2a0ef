"""The tests' way of starting scripts (tests/forked_scripts.py): several at once, each seen to end by
poll as a subprocess.Popen's is, with its exit code, output and signals."""

import os
import signal
import subprocess
import time

from tests.helpers import SCRIPTS

SLEEPER = "import sys, time\nprint('started', flush=True)\ntime.sleep(float(sys.argv[1]))\nsys.exit(int(sys.argv[2]))\n"


def test_scripts_run_at_once_and_poll_sees_each_end_with_its_exit_code(tmp_path):
    script = tmp_path / "sleeper.py"
    script.write_text(SLEEPER)
    slow = SCRIPTS.start(script, ["60", "0"], dict(os.environ), stdout=subprocess.PIPE)
    quick = SCRIPTS.start(script, ["0", "3"], dict(os.environ), stdout=subprocess.PIPE)
    assert slow.stdout.readline() == quick.stdout.readline() == "started\n"
    deadline = time.monotonic() + 30
    while quick.poll() is None:
        assert time.monotonic() < deadline, "poll never saw the quick script end"
        time.sleep(0.02)
    assert quick.returncode == 3 and slow.poll() is None
    quick.send_signal(signal.SIGINT)  # It has ended: nothing to signal, and no error.
    slow.kill()
    assert slow.wait(30) == -signal.SIGKILL
