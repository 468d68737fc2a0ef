"""Runs scripts/NAME.py for the tests in processes forked from one that has imported TensorFlow
and tapeloop already, so a run starts in a fraction of a second instead of about ten seconds of
imports.

Each run is still a process of its own, as `python scripts/NAME.py ARGS` would be: the script
runs as `__main__` with fresh flags, its own environment, working directory, stdin (empty),
stdout and stderr, its own exit code, signals and interpreter teardown. Several may run at once
(the servers of a cluster, a worker killed beside another). The parent never runs a TensorFlow op
(forking once the runtime has started its threads is unsafe), so each child starts the runtime
itself. Started as a program, this module is that parent: over a Unix socket it takes one request
a message, with the child's stdout and stderr as file descriptors, and answers "started PID", then
"ended PID EXIT_CODE" once that child has ended.
"""

import atexit
import json
import os
import runpy
import select
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import traceback
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
MESSAGE_BYTES = 1 << 20  # A request carries the child's whole environment.
REAP_SECONDS = 0.05  # How often the parent looks for ended children between requests.


def serve(channel: socket.socket) -> None:
    """The parent: imports what the scripts import, then forks one child a request and reports each
    child's end. Once the tests' side closes the channel, children it left running are killed."""
    from trainer import cli  # noqa: F401  (first: TensorFlow's environment, as the scripts have it)
    import keras  # noqa: F401  (imported here so that the children need not)
    import tensorflow  # noqa: F401

    from diagnosis import report  # noqa: F401
    from trainer import checkpoints, evaluation, flags, loop, run_inputs  # noqa: F401
    running: set[int] = set()
    while True:
        if select.select([channel], [], [], REAP_SECONDS)[0]:
            message, descriptors, _, _ = socket.recv_fds(channel, MESSAGE_BYTES, 2)
            if not message:
                for child in running:
                    os.kill(child, signal.SIGKILL)
                return
            child = os.fork()
            if child == 0:
                channel.close()
                run_in_child(json.loads(message), *descriptors)
            for descriptor in descriptors:
                os.close(descriptor)
            running.add(child)
            channel.send(f"started {child}".encode())
        report_ended_children(channel, running)


def report_ended_children(channel: socket.socket, running: set[int]) -> None:
    """Reaps the children that have ended and sends each one's exit code."""
    while running:
        child, status = os.waitpid(-1, os.WNOHANG)
        if child == 0:
            return
        running.discard(child)
        channel.send(f"ended {child} {os.waitstatus_to_exitcode(status)}".encode())


def run_in_child(request: dict, stdout: int, stderr: int) -> None:
    """Becomes `python SCRIPT ARGS` in the forked child; ends the process, never returns."""
    os.chdir(request["cwd"])
    os.environ.clear()
    os.environ.update(request["env"])
    os.dup2(os.open(os.devnull, os.O_RDONLY), 0)
    for target, descriptor in ((1, stdout), (2, stderr)):
        os.dup2(descriptor, target)
        os.close(descriptor)
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


class ForkedProcess:
    """A script started through the parent, with the part of subprocess.Popen's interface the tests
    use: pid, stdout and stderr (text streams where PIPE was asked for), poll, wait and signals."""

    def __init__(self, forker: "ScriptForker", pid: int, args: list[str], stdout, stderr):
        self.forker, self.pid, self.args = forker, pid, args
        self.stdout, self.stderr = stdout, stderr
        self.returncode: int | None = None

    def poll(self) -> int | None:
        if self.returncode is None:
            self.returncode = self.forker.exit_code(self.pid, timeout=0)
        return self.returncode

    def wait(self, timeout: float | None = None) -> int:
        if self.returncode is None:
            self.returncode = self.forker.exit_code(self.pid, timeout)
            if self.returncode is None:
                raise subprocess.TimeoutExpired(self.args, timeout)
        return self.returncode

    def communicate(self, timeout: float | None = None) -> tuple[str | None, str | None]:
        """(stdout, stderr): what the pipes among them hold until the process closes them, not yet read
        through the streams; then waits for its end (as Popen's)."""
        deadline = None if timeout is None else time.monotonic() + timeout
        pipes = [stream for stream in (self.stdout, self.stderr) if stream is not None]
        read = {stream.fileno(): bytearray() for stream in pipes}
        while pipes:
            remaining = None if deadline is None else max(deadline - time.monotonic(), 0)
            ready = select.select(pipes, [], [], remaining)[0]
            if not ready:
                raise subprocess.TimeoutExpired(self.args, timeout)
            for stream in ready:
                chunk = os.read(stream.fileno(), 1 << 16)
                read[stream.fileno()] += chunk
                if not chunk:
                    pipes.remove(stream)
        self.wait(None if deadline is None else max(deadline - time.monotonic(), 0))
        return tuple(None if stream is None else read[stream.fileno()].decode(errors="replace")
                     for stream in (self.stdout, self.stderr))

    def send_signal(self, signal_number: int) -> None:
        if self.poll() is None:
            try:
                os.kill(self.pid, signal_number)
            except ProcessLookupError:  # It ended and was reaped since: its exit code is on the way.
                pass

    def kill(self) -> None:
        self.send_signal(signal.SIGKILL)

    def terminate(self) -> None:
        self.send_signal(signal.SIGTERM)


class ScriptForker:
    """The tests' side: starts the parent on first use and runs scripts through it."""

    def __init__(self):
        self.parent: subprocess.Popen | None = None
        self.channel: socket.socket | None = None
        self.started: list[int] = []
        self.exit_codes: dict[int, int] = {}

    def start(self, script: Path, args: list[str], env: dict, cwd: Path = REPO, stdout=subprocess.DEVNULL,
              stderr=subprocess.DEVNULL) -> ForkedProcess:
        """Starts `python SCRIPT ARGS`; stdout and stderr as subprocess.Popen takes them (DEVNULL, PIPE
        for a text stream, None for this process's own), or a path to write to."""
        if self.parent is None or self.parent.poll() is not None:
            self.start_parent()
        descriptors, streams = zip(self.output_for(stdout, 1), self.output_for(stderr, 2))
        request = {"script": str(script), "args": list(args), "env": env, "cwd": str(cwd)}
        socket.send_fds(self.channel, [json.dumps(request).encode()], list(descriptors))
        for descriptor in descriptors:
            os.close(descriptor)
        deadline = time.monotonic() + 120
        while not self.started:
            if time.monotonic() > deadline:
                raise subprocess.TimeoutExpired([str(script), *args], 120)
            self.read_replies(deadline - time.monotonic())
        return ForkedProcess(self, self.started.pop(0), [str(script), *args], *streams)

    @staticmethod
    def output_for(target, inherited: int) -> tuple[int, object]:
        """(the descriptor the child writes to, the text stream the test reads, if any); None: this
        process's descriptor `inherited`."""
        if target == subprocess.PIPE:
            read, write = os.pipe()
            return write, open(read, encoding="utf-8", errors="replace")
        if target is None:
            return os.dup(inherited), None
        if target == subprocess.DEVNULL:
            return os.open(os.devnull, os.O_WRONLY), None
        return os.open(target, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644), None

    def start_parent(self) -> None:
        parent_end, self.channel = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        # Its stdout a pipe (it writes nothing there), as a script's usually is: the children inherit
        # its sys.stdout, which would otherwise take their pipes for a seekable file.
        self.parent = subprocess.Popen([sys.executable, __file__, str(parent_end.fileno())], cwd=REPO,
                                       pass_fds=[parent_end.fileno()], stdin=subprocess.DEVNULL,
                                       stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
        parent_end.close()
        self.started, self.exit_codes = [], {}

    def run(self, script: Path, args: list[str], env: dict, timeout: float) -> subprocess.CompletedProcess:
        """Runs the script to its end, capturing its output (as subprocess.run with capture_output)."""
        with tempfile.TemporaryDirectory() as folder:
            stdout, stderr = Path(folder, "stdout"), Path(folder, "stderr")
            process = self.start(script, args, env, stdout=stdout, stderr=stderr)
            try:
                exit_code = process.wait(timeout)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(60)
                raise subprocess.TimeoutExpired(process.args, timeout, stdout.read_text(), stderr.read_text())
            return subprocess.CompletedProcess(process.args, exit_code, stdout.read_text(), stderr.read_text())

    def exit_code(self, pid: int, timeout: float | None) -> int | None:
        """The exit code of child `pid`, waiting up to `timeout` seconds (None: for ever) for its end;
        None if it still runs."""
        deadline = None if timeout is None else time.monotonic() + timeout
        self.read_replies(0)
        while pid not in self.exit_codes:
            remaining = None if deadline is None else deadline - time.monotonic()
            if remaining is not None and remaining <= 0:
                return None
            self.read_replies(remaining)
        return self.exit_codes.pop(pid)

    def read_replies(self, timeout: float | None) -> None:
        """Reads the parent's replies that arrive within `timeout` seconds (at least one is waited for)."""
        if not select.select([self.channel], [], [], None if timeout is None else max(timeout, 0))[0]:
            return
        while select.select([self.channel], [], [], 0)[0]:
            reply = self.channel.recv(256).decode().split()
            if not reply:
                raise RuntimeError(f"the script parent ended (exit code {self.parent.wait()})")
            if reply[0] == "started":
                self.started.append(int(reply[1]))
            else:
                self.exit_codes[int(reply[1])] = int(reply[2])

    def close(self) -> None:
        if self.parent is not None:
            self.channel.close()
            self.parent.wait(timeout=60)


if __name__ == "__main__":
    sys.path[0] = str(REPO)
    serve(socket.socket(fileno=int(sys.argv[1])))
