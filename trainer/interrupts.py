"""SIGINT (Ctrl-C) and SIGTERM (what schedulers and preemptible machines send) during a run.

The first signal only sets a flag: the loop finishes the step it is in, saves a checkpoint
and stops with RunStopped, which the entry points turn into one line and the exit code
128 + the signal number (130, 143). A second signal exits at once; the checkpoints already
written are complete, as TensorFlow writes each one before naming it in the state file.
"""

import contextlib
import os
import signal
import threading

HANDLED_SIGNALS = (signal.SIGINT, signal.SIGTERM)


class StopRequest:
    """Records the first SIGINT or SIGTERM received while `installed`; the loop polls `signal_number`."""

    def __init__(self):
        self.signal_number: int | None = None

    @contextlib.contextmanager
    def installed(self):
        """Handles the signals inside the block (main thread only: Python delivers signals there)."""
        if threading.current_thread() is not threading.main_thread():
            yield self
            return
        previous = {number: signal.signal(number, self._handle) for number in HANDLED_SIGNALS}
        try:
            yield self
        finally:
            for number, handler in previous.items():
                signal.signal(number, handler)

    def _handle(self, number: int, frame) -> None:
        name = signal.Signals(number).name
        if self.signal_number is not None:
            _say(f"tapeloop: stopped: a second {name}: exiting at once (the checkpoints written so far are kept).")
            os._exit(128 + number)
        self.signal_number = number
        _say(f"tapeloop: {name} received: finishing the current step, then saving a checkpoint "
             "(send it again to exit at once).")


def _say(line: str) -> None:
    """Writes to stderr without Python's buffered streams, which a signal handler may have interrupted."""
    os.write(2, f"\n{line}\n".encode())
