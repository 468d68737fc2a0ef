"""What a path is before reading it, and bounded reads."""

import io
import os

import pytest

from data import files
from settings.errors import TapeloopError


def test_a_regular_file_and_a_link_to_one_are_readable(tmp_path):
    (tmp_path / "image.png").write_bytes(b"x")
    os.symlink("image.png", tmp_path / "link.png")
    assert files.unreadable_reason(tmp_path / "image.png") is None
    assert files.unreadable_reason(tmp_path / "link.png") is None


def test_pipes_folders_devices_and_broken_links_are_named(tmp_path):
    os.mkfifo(tmp_path / "pipe")
    os.symlink("nowhere", tmp_path / "dangling")
    os.symlink("loop", tmp_path / "loop")
    assert files.unreadable_reason(tmp_path / "pipe").startswith("a named pipe")
    assert files.unreadable_reason(tmp_path) == "a folder, not a file"
    assert files.unreadable_reason("/dev/null") == "a device, not a file"
    assert files.unreadable_reason(tmp_path / "dangling") == "a link that leads nowhere"
    assert files.unreadable_reason(tmp_path / "loop") == "a symbolic link loop"
    assert files.unreadable_reason(tmp_path / "absent") == "No such file or directory"


def test_read_at_most_stops_at_the_size_and_at_the_end():
    assert files.read_at_most(io.BytesIO(b"abcdef"), 4, chunk_size=3) == b"abcd"
    assert files.read_at_most(io.BytesIO(b"ab"), 10) == b"ab"


def test_a_promise_beyond_half_the_memory_is_refused(tmp_path):
    limit = files.allocation_limit_bytes()
    files.refuse_oversized(tmp_path / "f", limit, "exactly the limit")
    with pytest.raises(TapeloopError, match="promises more data than this machine can hold"):
        files.refuse_oversized(tmp_path / "f", limit + 1, "one byte more")
