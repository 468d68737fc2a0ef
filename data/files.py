"""What a user's path is before tapeloop reads it, and how much reading it may allocate.

Reading a named pipe waits for a writer that may never come, a device may never end,
and a link may lead nowhere or to itself: every reader asks `unreadable_reason` first
and names what it found instead of hanging. Sizes promised by file headers are checked
against `allocation_limit_bytes` before anything that large is allocated.
"""

import errno
import os
import stat

from settings.errors import TapeloopError

ALLOCATION_FRACTION = 0.5  # Of the machine's memory: the most one array read from a file may take.


def unreadable_reason(path: str | os.PathLike) -> str | None:
    """None for a regular file (or a link to one); else what the path is, for a message."""
    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError:
        return "a link that leads nowhere" if os.path.islink(path) else "No such file or directory"
    except OSError as error:
        if error.errno == errno.ELOOP:
            return "a symbolic link loop"
        return f"not readable ({error.strerror})"
    if stat.S_ISREG(mode):
        return None
    if stat.S_ISFIFO(mode):
        return "a named pipe, not a file (reading it would wait for a writer)"
    if stat.S_ISDIR(mode):
        return "a folder, not a file"
    if stat.S_ISSOCK(mode):
        return "a socket, not a file"
    return "a device, not a file"


def memory_bytes() -> int:
    """This machine's physical memory."""
    return os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")


def allocation_limit_bytes() -> int:
    """The largest array tapeloop allocates for one file's contents: half the machine's memory."""
    return int(memory_bytes() * ALLOCATION_FRACTION)


def read_at_most(stream, size: int, chunk_size: int = 1 << 20) -> bytes:
    """Up to `size` bytes from `stream`, read in chunks, so a header's promise is not allocated up front."""
    chunks, remaining = [], size
    while remaining > 0:
        chunk = stream.read(min(remaining, chunk_size))
        if not chunk:
            break
        chunks.append(chunk)
        remaining -= len(chunk)
    return b"".join(chunks)


def refuse_oversized(path: str | os.PathLike, size: int, promised: str) -> None:
    """Refuses a file whose header promises an array larger than allocation_limit_bytes."""
    limit = allocation_limit_bytes()
    if size > limit:
        raise TapeloopError(
            stage="data", problem=f"{path} promises more data than this machine can hold",
            expected=f"at most {limit / 2**30:.1f} GiB (half the memory) in one array",
            found=f"{promised}: {size / 2**30:.1f} GiB",
            fix=f"check that {path} is the file you meant (a damaged or crafted header); "
                "data this large has to be streamed, not loaded whole")
