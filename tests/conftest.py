"""Fixtures shared by the test modules (helpers live in tests/helpers.py)."""

import os
from pathlib import Path

import pytest

from tests.helpers import SMALL_RUN, run_script


@pytest.fixture
def mnist_dir() -> str:
    """Folder of real MNIST IDX files, from $TAPELOOP_MNIST_DIR (scripts/test.sh sets it)."""
    folder = os.environ.get("TAPELOOP_MNIST_DIR")
    if not folder or not Path(folder, "train-images-idx3-ubyte.gz").exists():
        pytest.skip("real MNIST not found: set TAPELOOP_MNIST_DIR to a folder of its IDX files")
    return folder


@pytest.fixture(scope="session")
def synthetic_run(tmp_path_factory) -> Path:
    """One finished run (train.py, SMALL_RUN, one epoch: checkpoints at step 28), trained once per
    session for the tests that only inspect it; a test that changes it works on a copy (copy_run)."""
    run_dir = tmp_path_factory.mktemp("shared") / "synthetic_run"
    result = run_script("train", *SMALL_RUN, "--epochs=1", f"--run_dir={run_dir}")
    assert result.returncode == 0, result.stderr
    return run_dir
