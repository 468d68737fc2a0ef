"""scripts/bootstrap.sh: it never installs this checkout into another checkout's environment."""

import shutil
import subprocess

from tests.helpers import REPO


def test_a_copy_of_the_tree_linking_a_checkouts_environment_is_refused_before_anything_is_installed(tmp_path):
    """A copy of the tree (a snapshot for a long measurement) whose .venv links the checkout's: an editable
    install from the copy would point the checkout's imports at the copy."""
    environment = tmp_path / "checkout" / ".venv"
    (environment / "bin").mkdir(parents=True)
    python = environment / "bin" / "python"
    python.write_text('#!/bin/sh\ntouch "$(dirname "$0")/../installed"\n')  # Records any call.
    python.chmod(0o755)
    copy = tmp_path / "copy"
    (copy / "scripts").mkdir(parents=True)
    shutil.copy(REPO / "scripts" / "bootstrap.sh", copy / "scripts")
    shutil.copy(REPO / "pyproject.toml", copy)
    (copy / ".venv").symlink_to(environment)
    result = subprocess.run(["bash", str(copy / "scripts" / "bootstrap.sh")], capture_output=True, text=True,
                            timeout=60)
    assert result.returncode == 1
    assert (f"{copy.resolve() / '.venv'} is a link to {environment.resolve()}, another checkout's environment"
            in result.stderr)
    assert "Fix: run scripts/bootstrap.sh in the checkout that owns it, or remove the link" in result.stderr
    assert not (environment / "installed").exists()
