"""The stop-request mechanism alone, in a child process (its second signal ends the process)."""

import subprocess
import sys

from tests.helpers import REPO

CHILD = """
import os, signal, time
from trainer.interrupts import StopRequest
with StopRequest().installed() as stop:
    os.kill(os.getpid(), signal.{name})
    time.sleep(0.05)  # The handler runs here, at the next bytecode.
    print("after the first:", stop.signal_number, flush=True)
    os.kill(os.getpid(), signal.{name})
    time.sleep(0.05)
    print("still running", flush=True)
"""


def run_child(signal_name: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", CHILD.format(name=signal_name)], cwd=REPO,
                          capture_output=True, text=True, timeout=60)


def test_the_first_signal_is_recorded_and_the_second_exits_at_once_with_128_plus_its_number():
    for name, number in (("SIGINT", 2), ("SIGTERM", 15)):
        child = run_child(name)
        assert child.returncode == 128 + number
        assert f"after the first: {number}" in child.stdout and "still running" not in child.stdout
        assert f"{name} received: finishing the current step" in child.stderr
        assert f"a second {name}: exiting at once" in child.stderr


def test_outside_the_block_the_previous_handlers_are_back():
    code = ("import signal\nfrom trainer.interrupts import StopRequest\nbefore = signal.getsignal(signal.SIGTERM)\n"
            "with StopRequest().installed():\n    inside = signal.getsignal(signal.SIGTERM)\n"
            "print(inside is not before, signal.getsignal(signal.SIGTERM) is before)")
    child = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=60)
    assert child.stdout.split() == ["True", "True"]
