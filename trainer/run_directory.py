"""Claiming a run directory (writable, used by one process at a time, never silently restarted),
writing its text files (flags.txt, results.json) whole, and reading flags.txt back.

The claim is an exclusive `flock` on RUN/.lock. The operating system drops it
when the process ends, however it ends (kill -9 included), so a crashed run
never leaves the directory locked; a second process finds it taken and is
refused with the first one's pid. (flock is local to one machine: on network
filesystems, two machines are not kept apart.)
"""

import contextlib
import fcntl
import os
import socket
import sys
import time

from absl import flags, logging

from trainer.checkpoints import checkpoint_prefixes
from settings.config import TrainConfig
from settings.errors import TapeloopError

MAX_FLAGS_FILE_BYTES = 1 << 20  # A run's flags.txt is a few KiB.
from trainer.flags import parse_config, serialize_config

LOCK_FILE = ".lock"


@contextlib.contextmanager
def claim(run_dir: str):
    """Creates `run_dir` if needed and holds its lock for the duration of the `with` block."""
    _make_writable(run_dir)
    path = os.path.join(run_dir, LOCK_FILE)
    with open(path, "a+") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            lock.seek(0)
            holder = lock.read().strip() or "another process"
            raise TapeloopError(
                stage="run directory", problem=f"{run_dir} is in use by another tapeloop process",
                expected="one process per run directory", found=f"its lock held by {holder}",
                fix="wait for that run to finish (or stop it), or pass another --run_dir") from None
        lock.seek(0)
        lock.truncate()
        lock.write(f"{os.path.basename(sys.argv[0]) or 'python'} pid {os.getpid()} on {socket.gethostname()} "
                   f"since {time.strftime('%Y-%m-%d %H:%M:%S')}\n")
        lock.flush()
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def _make_writable(run_dir: str) -> None:
    """Creates the directory and proves it writable, so that a bad --run_dir fails before training."""
    probe = os.path.join(run_dir, f".write-test-{os.getpid()}")
    try:
        os.makedirs(run_dir, exist_ok=True)
        with open(probe, "w") as stream:
            stream.write("ok")
        os.remove(probe)
    except OSError as error:
        raise TapeloopError(
            stage="run directory", problem=f"cannot write to --run_dir={run_dir}",
            expected="a directory this user can create files in",
            found=f"{type(error).__name__}: {error.strerror or error}",
            fix="pick a writable --run_dir, or fix the directory's permissions") from None


def refuse_to_start_over(run_dir: str) -> None:
    """Called when `run_dir` has no checkpoint to resume from: refuses to train from step 0 if an
    earlier run's outputs are there, since the new run would overwrite them."""
    found = [name for name in ("results.json", "saved_model") if os.path.exists(os.path.join(run_dir, name))]
    found += [f"best/{os.path.basename(path)}" for path in checkpoint_prefixes(os.path.join(run_dir, "best"))]
    if found:
        raise TapeloopError(
            stage="run directory", problem=f"{run_dir} holds an earlier run's results but no checkpoint to resume from",
            expected="checkpoints/ckpt-N files to resume from, or an empty run directory",
            found=f"{', '.join(found)}, and no checkpoints/ckpt-*.index",
            fix="pass a new --run_dir to train afresh; to keep training this run, restore its checkpoints/ "
                "folder (evaluate.py and predict.py still read best/ and saved_model/)")


def write_flags_file(config: TrainConfig, folder: str, file_name: str = "flags.txt") -> None:
    """Writes `folder`/`file_name`; on a resume with other flags, says which ones changed."""
    path = os.path.join(folder, file_name)
    text = serialize_config(config)
    if os.path.exists(path):
        with open(path, errors="replace") as stream:  # A damaged file is rewritten whole below.
            before = set(stream.read().splitlines())
        changed = sorted(set(text.splitlines()) - before)
        if changed:
            logging.warning("Resuming with changed flags: %s", " ".join(changed))
    write_text_atomic(path, text)


def write_text_atomic(path: str, text: str | bytes) -> None:
    """Writes `text` (or bytes) to `path` so that readers see the old or the new file, never a partial one."""
    partial = f"{path}.partial"
    with open(partial, "wb" if isinstance(text, bytes) else "w") as stream:
        stream.write(text)
    os.replace(partial, path)


def flags_file_damage(path: str) -> str | None:
    """What is wrong with a run's flags.txt for reading it back (None: nothing)."""
    with open(path, "rb") as stream:
        content = stream.read(MAX_FLAGS_FILE_BYTES + 1)
    if len(content) > MAX_FLAGS_FILE_BYTES:
        return f"a file over {MAX_FLAGS_FILE_BYTES // 1024} KiB (tapeloop writes a few)"
    try:
        text = content.decode("utf-8")
    except UnicodeDecodeError as error:
        return f"bytes that are not text (byte {error.start} is 0x{content[error.start]:02x})"
    if not any(line.startswith("--") for line in text.splitlines()):
        return "an empty file" if not text.strip() else "text with no --flag line"
    return None


def load_run_config(run_dir: str) -> TrainConfig:
    """The TrainConfig a run was trained with, from RUN/flags.txt."""
    path = os.path.join(run_dir, "flags.txt")
    if not os.path.isfile(path):
        raise TapeloopError(
            stage="run directory", problem=f"{run_dir} is not a tapeloop run directory",
            expected=f"{path}, written by scripts/train.py", found="no such file",
            fix="pass the --run_dir that scripts/train.py was given")
    damage = flags_file_damage(path)
    if damage:  # Never read as "all defaults": that would be another run's model.
        raise TapeloopError(
            stage="run directory", problem=f"{path} is damaged", expected="the flagfile scripts/train.py wrote "
            "(text, one --flag=value a line)", found=damage, fix="restore the file from the command that started "
            "the run (every flag it was given), or from a copy of the run directory")
    try:
        return parse_config([f"--flagfile={path}", f"--run_dir={run_dir}"])
    except flags.Error as error:
        raise TapeloopError(
            stage="run directory", problem=f"{path} does not parse", expected="a flagfile of tapeloop flags",
            found=str(error), fix="restore the file from the command that started the run") from None
