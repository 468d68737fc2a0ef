"""Fixtures shared by the test modules (helpers live in tests/helpers.py)."""

import os
from pathlib import Path

import pytest

from trainer import cli  # noqa: F401  (first: TensorFlow's environment, as the scripts have it)
from data import catalog, shards, sources
from tests.helpers import REPO, SMALL_RUN, run_script, write_image_folder


def pytest_configure():
    """Under pytest-xdist, each of the N worker processes, and every script and server it starts,
    computes on cpu_count / N threads: N processes each spreading every operation over all the cores
    contend for them (measured: the slow tests of three files took 10% longer on two cores). Read by
    TensorFlow when a process runs its first operation, which none has done yet."""
    workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
    if workers > 1:
        os.environ.setdefault("TF_NUM_INTRAOP_THREADS", str(max(1, (os.cpu_count() or 1) // workers)))


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
    session for the tests that only inspect it; a test that changes it works on a copy (copy_run).
    Its flags.txt is the one an earlier release of tapeloop wrote for the same flags, so that every test
    that diagnoses, evaluates, exports or resumes this run also shows such a file still works."""
    run_dir = tmp_path_factory.mktemp("shared") / "synthetic_run"
    result = run_script("train", *SMALL_RUN, "--epochs=1", f"--run_dir={run_dir}")
    assert result.returncode == 0, result.stderr
    earlier = (REPO / "tests" / "data" / "flags_of_an_earlier_release.txt").read_text()
    (run_dir / "flags.txt").write_text(earlier.replace("RUN_DIR", str(run_dir)))
    return run_dir


@pytest.fixture(scope="session")
def synthetic_shards(tmp_path_factory) -> Path:
    """The synthetic dataset as an image folder of PNGs (images/) and its shards (shards/, several per
    split), made once per session; a test that changes them works on a copy."""
    root = tmp_path_factory.mktemp("shared_shards")
    spec = catalog.get_spec("synthetic")
    write_image_folder(root / "images", sources.synthetic_splits(spec), spec.class_names)
    shards.make_shards(root / "images", root / "shards", shard_mb=0.2, test_split=0.2, skip_bad_images=False,
                       workers=2)
    return root


def pytest_collection_modifyitems(items):
    """The slow tier first, each tier in file order: spread over cores, a long test started last
    would leave the other cores idle at the end."""
    items.sort(key=lambda item: item.get_closest_marker("slow") is None)
