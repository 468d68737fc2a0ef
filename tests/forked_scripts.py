"""Runs scripts/NAME.py for the tests in processes forked from one that has imported TensorFlow
and tapeloop already, so a run starts in a fraction of a second instead of about four.

Each run is still a process of its own, as `python scripts/NAME.py ARGS` would be: the script
runs as `__main__` with fresh flags, its own environment, working directory, stdin (empty),
stdout and stderr, its own exit code, signals and interpreter teardown. The parent never runs a
TensorFlow op (forking once the runtime has started its threads is unsafe), so each child starts
the runtime itself. Started as a program, this module is that parent: it reads one JSON request
a line on stdin and answers with the child's pid, then its exit code, one line each.
"""

import atexit
import json
import os
import runpy
import select
import subprocess
import sys
import tempfile
import threading
import traceback
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def serve(requests, replies: int) -> None:
    """The parent: imports what the scripts import, then forks one child a request."""
    from trainer import cli  # noqa: F401  (first: TensorFlow's environment, as the scripts have it)
    import keras  # noqa: F401  (imported here so that the children need not)
    import tensorflow  # noqa: F401

    from diagnosis import report  # noqa: F401
    from trainer import checkpoints, evaluation, flags, loop, run_inputs  # noqa: F401
    for line in requests:
        request = json.loads(line)
        child = os.fork()
        if child == 0:
            run_in_child(request)
        os.write(replies, f"{child}\n".encode())
        _, status = os.waitpid(child, 0)
        os.write(replies, f"{os.waitstatus_to_exitcode(status)}\n".encode())


def run_in_child(request: dict) -> None:
    """Becomes `python SCRIPT ARGS` in the forked child; ends the process, never returns."""
    os.chdir(request["cwd"])
    os.environ.clear()
    os.environ.update(request["env"])
    os.dup2(os.open(os.devnull, os.O_RDONLY), 0)
    for descriptor, path in ((1, request["stdout"]), (2, request["stderr"])):
        os.dup2(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644), descriptor)
    sys.argv = [request["script"], *request["args"]]
    sys.path[0] = os.path.dirname(request["script"])
    try:
        runpy.run_path(request["script"], run_name="__main__")
        exit_code = 0
    except SystemExit as exit_request:  # As Python reads sys.exit's argument.
        exit_code = exit_request.code if isinstance(exit_request.code, int) or exit_request.code is None else 1
        if exit_code == 1 and not isinstance(exit_request.code, int):
            print(exit_request.code, file=sys.stderr)
    except BaseException:  # As an uncaught exception ends a script: the traceback, exit code 1.
        traceback.print_exc()
        exit_code = 1
    end_like_the_interpreter(exit_code or 0)


def end_like_the_interpreter(exit_code: int) -> None:
    """Ends the child as Python ends a script (its threads joined, its exit functions run, its output
    flushed), without the interpreter's teardown of every module, which takes over a second with
    TensorFlow loaded and is most of a short script's time."""
    threading._shutdown()  # What the interpreter does first: wait for the non-daemon threads.
    atexit._run_exitfuncs()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(exit_code)


class ScriptForker:
    """The tests' side: starts the parent on first use and runs scripts through it, one at a time."""

    def __init__(self):
        self.parent = None

    def run(self, script: Path, args: list[str], env: dict, timeout: float) -> subprocess.CompletedProcess:
        if self.parent is None or self.parent.poll() is not None:
            self.parent = subprocess.Popen([sys.executable, __file__], cwd=REPO, stdin=subprocess.PIPE,
                                           stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, bufsize=0)
        with tempfile.TemporaryDirectory() as folder:
            stdout, stderr = Path(folder, "stdout"), Path(folder, "stderr")
            request = {"script": str(script), "args": list(args), "env": env, "cwd": str(REPO),
                       "stdout": str(stdout), "stderr": str(stderr)}
            self.parent.stdin.write((json.dumps(request) + "\n").encode())
            child = int(self.reply(timeout=120))
            try:
                exit_code = int(self.reply(timeout))
            except subprocess.TimeoutExpired:
                os.kill(child, 9)
                self.reply(timeout=60)
                raise subprocess.TimeoutExpired([str(script), *args], timeout, stdout.read_text(), stderr.read_text())
            return subprocess.CompletedProcess([str(script), *args], exit_code, stdout.read_text(),
                                               stderr.read_text())

    def reply(self, timeout: float) -> str:
        """One line from the parent (the replies are short and come one at a time)."""
        line = b""
        while not line.endswith(b"\n"):
            ready, _, _ = select.select([self.parent.stdout], [], [], timeout)
            if not ready:
                raise subprocess.TimeoutExpired("forked script", timeout)
            chunk = os.read(self.parent.stdout.fileno(), 64)
            if not chunk:
                raise RuntimeError(f"the script parent ended (exit code {self.parent.wait()})")
            line += chunk
        return line.decode()

    def close(self) -> None:
        if self.parent is not None:
            self.parent.stdin.close()
            self.parent.wait(timeout=60)


if __name__ == "__main__":
    sys.path[0] = str(REPO)
    serve(sys.stdin, sys.stdout.fileno())
