"""Shared test helpers: small configs, IDX writers, the script runner, TensorBoard event readers."""

import atexit
import gzip
import os
import shutil
import socket
import struct
import subprocess
from pathlib import Path

import numpy as np
import tensorflow as tf
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from data import catalog
from data.sources import load_dataset
from tests.forked_scripts import ForkedProcess, ScriptForker
from trainer.checkpoints import checkpoint_step, latest_checkpoint
from trainer.checks import StageChecks
from trainer.flags import parse_config

REPO = Path(__file__).resolve().parent.parent
UNIT_RANGE_CHECKS = StageChecks("standard", image_shape=(28, 28, 1), value_range=(0.0, 1.0), num_classes=10)
IDX_TYPE_CODES = {np.dtype("u1"): 0x08, np.dtype(">i4"): 0x0C, np.dtype(">f4"): 0x0D}


# A small synthetic run through train.py (28 steps per epoch): the shared `synthetic_run` fixture's flags.
# Float32 (not --mixed_precision=auto) in the tests' runs, so that they compute the same numbers on every kind of CPU.
SMALL_RUN = ("--dataset=synthetic", "--model_width=8", "--batch_size=64", "--progress=log", "--log_every_steps=5",
             "--mixed_precision=none")


def make_config(run_dir, *args: str):
    """A TrainConfig on the synthetic dataset, small and fast, with extra flags applied; in float32
    (not --mixed_precision=auto), so that a test computes the same numbers on every kind of CPU."""
    return parse_config([*SMALL_RUN, "--epochs=1", f"--run_dir={run_dir}", *args])


def idx_bytes(array: np.ndarray) -> bytes:
    """Encodes `array` in the IDX format (big-endian header and data)."""
    big_endian = array.astype(array.dtype.newbyteorder(">"))
    header = bytes([0, 0, IDX_TYPE_CODES[big_endian.dtype], array.ndim])
    return header + struct.pack(f">{array.ndim}I", *array.shape) + big_endian.tobytes()


def write_idx(path: Path, array: np.ndarray, compress: bool = True) -> Path:
    data = idx_bytes(array)
    path.write_bytes(gzip.compress(data) if compress else data)
    return path


def write_idx_dataset(folder: Path, train_size: int = 40, test_size: int = 20, seed: int = 0) -> Path:
    """Writes a tiny MNIST-shaped dataset as the four gzip IDX files."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    for prefix, size in (("train", train_size), ("t10k", test_size)):
        write_idx(folder / f"{prefix}-images-idx3-ubyte.gz", rng.integers(0, 256, (size, 28, 28), dtype=np.uint8))
        write_idx(folder / f"{prefix}-labels-idx1-ubyte.gz", rng.integers(0, 10, size, dtype=np.uint8))
    return folder


def write_mnist_subset(folder: Path, mnist_dir: str, train_size: int, test_size: int) -> Path:
    """Writes the first `train_size` training and `test_size` test examples of real MNIST (from
    `mnist_dir`) as the four gzip IDX files: real digits, for a test that runs a whole recipe quickly."""
    folder.mkdir(parents=True, exist_ok=True)
    splits = load_dataset(catalog.MNIST, mnist_dir)
    for prefix, split, size in (("train", "train", train_size), ("t10k", "test", test_size)):
        images, labels = splits[split]
        write_idx(folder / f"{prefix}-images-idx3-ubyte.gz", np.asarray(images[:size]))
        write_idx(folder / f"{prefix}-labels-idx1-ubyte.gz", np.asarray(labels[:size]))
    return folder


def write_image_folder(folder: Path, splits: dict, class_names) -> Path:
    """Writes {split: (uint8 images [N, H, W(, C)], labels)} as FOLDER/<split>/<class>/<index>.png."""
    for split, (images, labels) in splits.items():
        for name in class_names:
            (folder / split / name).mkdir(parents=True, exist_ok=True)
        for index, (image, label) in enumerate(zip(images, labels)):
            pixels = image[..., None] if image.ndim == 2 else image
            tf.io.write_file(str(folder / split / class_names[label] / f"{index:05d}.png"), tf.io.encode_png(pixels))
    return folder


def checkpointed_step(run_dir: Path) -> int:
    """The step of the newest checkpoint in RUN/checkpoints (0 if none)."""
    path = latest_checkpoint(str(run_dir / "checkpoints"))
    return checkpoint_step(path) if path else 0


SCRIPTS = ScriptForker()
atexit.register(SCRIPTS.close)


def run_script(name: str, *args: str, env: dict | None = None, timeout: int = 600) -> subprocess.CompletedProcess:
    """Runs scripts/<name>.py as a user would, in a process of its own, capturing its output.

    The process is forked from one that has imported TensorFlow already (tests/forked_scripts.py):
    the same script, flags, environment and exit code, without the ten seconds of imports.
    """
    return SCRIPTS.run(REPO / "scripts" / f"{name}.py", list(args), {**os.environ, **(env or {})}, timeout)


def start_script(name: str, *args: str, env: dict | None = None, cwd: Path = REPO, stdout=subprocess.DEVNULL,
                 stderr=subprocess.DEVNULL) -> ForkedProcess:
    """Starts scripts/<name>.py as `subprocess.Popen([python, script, *args], ...)` would, forked as
    run_script's are; its stdout and stderr as Popen takes them (text streams for PIPE), or a path.
    `env` replaces the environment, as Popen's does."""
    return SCRIPTS.start(REPO / "scripts" / f"{name}.py", list(args), dict(os.environ if env is None else env),
                         cwd, stdout, stderr)


def read_tensors(folder) -> dict[str, list]:
    events = EventAccumulator(str(folder), size_guidance={"tensors": 0})  # 0: keep every event.
    events.Reload()
    return {tag: [(event.step, tf.make_ndarray(event.tensor_proto)) for event in events.Tensors(tag)]
            for tag in events.Tags()["tensors"]}


def read_scalars(folder) -> dict[str, list[tuple[int, float]]]:
    """Every scalar in a TensorBoard log folder: tag -> [(step, value), ...]."""
    return {tag: [(step, float(value)) for step, value in events]
            for tag, events in read_tensors(folder).items()
            if events[0][1].ndim == 0 and events[0][1].dtype != object}


def read_texts(folder) -> dict[str, list[tuple[int, str]]]:
    """Every text summary in a TensorBoard log folder: tag -> [(step, text), ...]."""
    return {tag: [(step, value.item().decode()) for step, value in events]
            for tag, events in read_tensors(folder).items()
            if events[0][1].ndim == 0 and events[0][1].dtype == object}


def copy_run(run_dir: Path, folder: Path) -> Path:
    """A private copy of a run directory, for a test that damages or extends it."""
    return Path(shutil.copytree(run_dir, folder / "run", ignore=shutil.ignore_patterns(".lock")))


def numpy_conv_same(images: np.ndarray, kernel: np.ndarray, stride: int = 1) -> np.ndarray:
    """A 'same' convolution (cross-correlation, as TensorFlow computes it, padding the end more
    when the padding is odd), written out: images [B, H, W, C], kernel [K, K, C, D]."""
    size = kernel.shape[0]
    height, width = images.shape[1:3]
    out_height, out_width = -(-height // stride), -(-width // stride)
    pad_height = max((out_height - 1) * stride + size - height, 0)
    pad_width = max((out_width - 1) * stride + size - width, 0)
    padded = np.pad(images, ((0, 0), (pad_height // 2, pad_height - pad_height // 2),
                             (pad_width // 2, pad_width - pad_width // 2), (0, 0)))
    return sum(np.einsum("bhwc,cd->bhwd", padded[:, dy:dy + stride * out_height:stride,
                                                 dx:dx + stride * out_width:stride], kernel[dy, dx])
               for dy in range(size) for dx in range(size))


def random_weights(model, images: np.ndarray, seed: int):
    """Builds `model` on `images` and sets every trainable variable to standard-normal values."""
    model(images)
    rng = np.random.default_rng(seed)
    for variable in model.trainable_variables:
        variable.assign(rng.normal(size=variable.shape).astype(np.float32))
    return model


def assert_one_paragraph_error(result, exit_code: int, *phrases: str):
    """A script's failure as the contract says: the exit code, one paragraph as the last thing on
    stderr, no traceback, and each phrase in it (whitespace folded)."""
    assert result.returncode == exit_code, result.stderr
    assert "Traceback" not in result.stderr, result.stderr[-4000:]
    error = result.stderr[result.stderr.index("tapeloop: error:"):]
    assert "\n\n" not in error.strip()
    assert result.stderr.strip().splitlines()[-1].startswith("tapeloop: error:")  # Always the last line.
    flat = " ".join(error.split())
    for phrase in phrases:
        assert phrase in flat


def checkpoint_values(folder, prefixes: tuple[str, ...]) -> dict[str, np.ndarray]:
    """The newest checkpoint's tensors in `folder` whose names start with one of `prefixes`."""
    path = tf.train.latest_checkpoint(str(folder))
    reader = tf.train.load_checkpoint(path)
    return {name: reader.get_tensor(name) for name, _ in tf.train.list_variables(path) if name.startswith(prefixes)}


def free_ports(count: int) -> list[int]:
    """`count` distinct loopback ports nothing listens on (all bound at once, then released)."""
    sockets = [socket.socket() for _ in range(count)]
    for sock in sockets:
        sock.bind(("127.0.0.1", 0))
    ports = [sock.getsockname()[1] for sock in sockets]
    for sock in sockets:
        sock.close()
    return ports
