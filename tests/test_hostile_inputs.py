"""Hostile and faulty inputs through the public scripts: each ends in the paragraph (or a
recovery), runs no code from a data file, never hangs, and loses nothing on disk."""

import gzip
import json
import os
import pickle
import re
import resource
import shutil
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from data import catalog, pipeline, shards, sources, streaming
from tests.data_service_processes import DataServiceProcesses
from tests.helpers import (REPO, SMALL_RUN, assert_one_paragraph_error, checkpointed_step, copy_run,
                           idx_bytes, make_config, run_script, start_script, write_image_folder, write_idx_dataset)
from trainer import conversion
from settings.errors import TapeloopError




@pytest.fixture(autouse=True)
def private_cache(tmp_path, monkeypatch):
    """Decoded image folders are cached under $XDG_CACHE_HOME: keep each test's apart (scripts inherit it)."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))


def snapshot(folder) -> dict[str, bytes]:
    """Every file under `folder` (relative path -> contents), to prove nothing on disk changed."""
    return {os.path.relpath(os.path.join(parent, name), folder): open(os.path.join(parent, name), "rb").read()
            for parent, _, names in os.walk(folder) for name in names if name != ".lock"}


def trained_run(tmp_path, *flags, name="run"):
    run_dir = tmp_path / name
    result = run_script("train", *SMALL_RUN, f"--run_dir={run_dir}", *flags)
    assert result.returncode == 0, result.stderr
    return run_dir


# Code execution.

class Payload:
    """Unpickling this runs a shell command that creates `marker`: what a crafted batch would do."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


def write_crafted_cifar(folder, marker):
    folder.mkdir(parents=True)
    for names in catalog.CIFAR10.files.values():
        for name in names:
            (folder / name).write_bytes(pickle.dumps({b"data": Payload(marker), b"labels": [0]}, protocol=2))
    return folder


@pytest.mark.slow
def test_a_crafted_cifar_batch_is_refused_and_its_payload_never_runs(tmp_path):
    marker = tmp_path / "payload-ran"
    folder = write_crafted_cifar(tmp_path / "cifar", marker)
    result = run_script("train", "--dataset=cifar10", f"--data_dir={folder}", f"--run_dir={tmp_path / 'run'}")
    assert_one_paragraph_error(result, 1, "[data]", "is not a readable CIFAR batch",
                               "refused to load posix.system", "never load a pickle")
    assert not marker.exists()
    assert not (tmp_path / "run").exists()


@pytest.mark.slow
def test_evaluate_on_a_strangers_run_pointing_at_crafted_batches_runs_no_code(tmp_path):
    marker = tmp_path / "payload-ran"
    folder = write_crafted_cifar(tmp_path / "cifar", marker)
    run_dir = tmp_path / "strangers_run"
    run_dir.mkdir()
    (run_dir / "flags.txt").write_text(f"--dataset=cifar10\n--data_dir={folder}\n")
    result = run_script("evaluate", f"--run_dir={run_dir}")
    assert_one_paragraph_error(result, 1, "is not a readable CIFAR batch", "refused to load")
    assert not marker.exists()


# Silent data loss and whole runs thrown away.

@pytest.mark.slow
@pytest.mark.parametrize("damage", ["delete", "garbage"])
def test_a_missing_or_damaged_checkpoint_state_file_still_resumes(tmp_path, damage, synthetic_run):
    run_dir = copy_run(synthetic_run, tmp_path)
    state = run_dir / "checkpoints" / "checkpoint"
    state.unlink() if damage == "delete" else state.write_text("}}} not a state file {{{")
    result = run_script("train", *SMALL_RUN, f"--run_dir={run_dir}", "--epochs=2")
    assert result.returncode == 0, result.stderr
    assert "rebuilt from the files" in result.stderr
    assert "Resuming from" in result.stderr and "ckpt-28 at step 28" in result.stderr
    assert '"steps": 56' in (run_dir / "results.json").read_text()


@pytest.mark.slow
def test_a_rerun_that_would_start_over_on_a_finished_run_refuses_and_keeps_its_results(tmp_path, synthetic_run):
    run_dir = copy_run(synthetic_run, tmp_path)
    shutil.rmtree(run_dir / "checkpoints")
    before = snapshot(run_dir)
    result = run_script("train", *SMALL_RUN, f"--run_dir={run_dir}", "--epochs=1")
    assert_one_paragraph_error(result, 1, "[run directory]", "holds an earlier run's results but no checkpoint",
                               "results.json, saved_model, best/ckpt-28", "pass a new --run_dir")
    assert snapshot(run_dir) == before


@pytest.mark.slow
def test_a_run_directory_with_glob_characters_is_refused_before_training(tmp_path):
    result = run_script("train", *SMALL_RUN, f"--run_dir={tmp_path / 'lr[0.1]'}")
    assert_one_paragraph_error(result, 2, "[flags]", "--run_dir must not contain", "runs/lr_0.1")
    assert not (tmp_path / "lr[0.1]").exists()


@pytest.mark.slow
def test_a_damaged_index_file_is_damage_and_the_run_falls_back_to_the_one_before(tmp_path):
    run_dir = trained_run(tmp_path, "--epochs=2", "--keep_checkpoints=2")
    (run_dir / "checkpoints" / "ckpt-56.index").write_bytes(b"not an sstable" * 20)
    result = run_script("train", *SMALL_RUN, f"--run_dir={run_dir}", "--epochs=3", "--keep_checkpoints=2")
    assert result.returncode == 0, result.stderr
    assert "ckpt-56 is damaged; trying the one before" in " ".join(result.stderr.split())
    assert "does not fit the model" not in result.stderr
    assert "ckpt-28 at step 28" in result.stderr


@pytest.mark.slow
def test_a_damaged_flags_txt_is_one_paragraph_in_every_script_that_reads_a_run(tmp_path, synthetic_run):
    run_dir = copy_run(synthetic_run, tmp_path)  # Empty and other damage: test_flags, on the reader alone.
    (run_dir / "flags.txt").write_bytes(b"\x00\xffbinary\x80")
    for script, *arguments in (("diagnose",), ("evaluate",), ("predict", str(tmp_path / "image.png"))):
        assert_one_paragraph_error(run_script(script, f"--run_dir={run_dir}", *arguments), 1,
                                   f"[run directory] {run_dir / 'flags.txt'} is damaged")
    assert_one_paragraph_error(run_script("train", *SMALL_RUN, f"--run_dir={tmp_path / 'warm'}",
                                          f"--init_from={run_dir}"), 1, "[init_from]", "bytes that are not text")


@pytest.mark.slow
def test_evaluate_falls_back_from_a_damaged_checkpoint_and_reports_one_that_does_not_fit(tmp_path):
    run_dir = trained_run(tmp_path, "--epochs=2", "--keep_checkpoints=2")
    data = run_dir / "checkpoints" / "ckpt-56.data-00000-of-00001"
    data.write_bytes(data.read_bytes()[:-40] + bytes(40))
    result = run_script("evaluate", f"--run_dir={run_dir}", "--weights=latest")
    assert result.returncode == 0, result.stderr
    assert "ckpt-56 is damaged" in result.stderr and "ckpt-28" in result.stdout
    with open(run_dir / "flags.txt", "a") as flags_file:
        flags_file.write("--model_width=16\n")
    assert_one_paragraph_error(run_script("evaluate", f"--run_dir={run_dir}", "--weights=latest"), 1,
                               "does not fit the model built from these flags")


# Memory and hangs.

def write_npz(folder, **arrays):
    folder.mkdir(parents=True, exist_ok=True)
    np.savez(folder / "data.npz", **arrays)
    return folder


def npz_arrays(train=64, test=16, size=8, seed=0):
    rng = np.random.default_rng(seed)
    return {"x_train": rng.integers(0, 256, (train, size, size), dtype=np.uint8),
            "y_train": np.arange(train) % 2, "x_test": rng.integers(0, 256, (test, size, size), dtype=np.uint8),
            "y_test": np.arange(test) % 2}


@pytest.mark.slow
def test_one_absurd_label_value_is_refused_before_any_allocation(tmp_path):
    arrays = npz_arrays()
    arrays["y_train"][3] = 1_000_000_000
    folder = write_npz(tmp_path / "npz", **arrays)
    result = run_script("train", "--dataset=npz", f"--data_dir={folder}", "--model=mlp", f"--run_dir={tmp_path / 'run'}")
    assert_one_paragraph_error(result, 1, "is beyond the classes", "found the label 1000000000",
                               "save their names as class_names")


@pytest.mark.slow
def test_a_gzip_bomb_stops_at_the_size_its_header_promises(tmp_path):
    folder = write_idx_dataset(tmp_path / "data")
    labels = folder / "train-labels-idx1-ubyte.gz"
    labels.write_bytes(gzip.compress(idx_bytes(np.zeros(40, np.uint8)) + bytes(200 << 20), compresslevel=1))
    result = run_script("train", "--dataset=mnist", f"--data_dir={folder}", f"--run_dir={tmp_path / 'run'}")
    assert_one_paragraph_error(result, 1, f"{labels} is not a valid IDX file: it has trailing bytes",
                               "40 data bytes for shape (40,)", "more bytes than that")


@pytest.mark.slow
def test_a_header_promising_more_than_the_memory_is_refused(tmp_path):
    folder = write_idx_dataset(tmp_path / "data")
    images = folder / "train-images-idx3-ubyte.gz"
    images.write_bytes(gzip.compress(bytes([0, 0, 0x08, 3]) + np.array([2**31, 2**16, 2**16], ">u4").tobytes()))
    result = run_script("train", "--dataset=mnist", f"--data_dir={folder}", f"--run_dir={tmp_path / 'run'}")
    assert_one_paragraph_error(result, 1, "promises more data than this machine can hold",
                               "at most", "GiB (half the memory)")


def save_png(path, value):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((8, 8), value, np.uint8)).save(path)


def two_class_folder(root, per_class=40):
    for index in range(per_class):
        save_png(root / "dark" / f"{index:03d}.png", 20 + index % 10)
        save_png(root / "light" / f"{index:03d}.png", 220 - index % 10)
    return root


FOLDER_RUN = ("--dataset=image_folder", "--image_size=8", "--model=mlp", "--batch_size=16", "--epochs=1",
              "--progress=log")


def train_on_folder(tmp_path, root, *flags, **options):
    return run_script("train", *FOLDER_RUN, f"--data_dir={root}", f"--run_dir={tmp_path / 'run'}", *flags,
                      timeout=120, **options)


@pytest.mark.slow
def test_a_named_pipe_among_the_images_is_named_not_waited_on(tmp_path):
    root = two_class_folder(tmp_path / "images")
    os.mkfifo(root / "dark" / "pipe.png")
    result = train_on_folder(tmp_path, root)
    assert_one_paragraph_error(result, 1, "1 of 81 image files cannot be read", "pipe.png (a named pipe",
                               "--skip_bad_images")
    skipped = train_on_folder(tmp_path, root, "--skip_bad_images")
    assert skipped.returncode == 0, skipped.stderr


@pytest.mark.slow
def test_links_that_loop_or_lead_nowhere_and_undecodable_names_in_an_image_folder(tmp_path):
    root = two_class_folder(tmp_path / "images")
    os.symlink("loop.png", root / "dark" / "loop.png")
    os.symlink("missing.png", root / "dark" / "dangling.png")
    os.symlink("..", root / "light" / "parent")  # A folder loop: not followed.
    save_png(root / "light" / os.fsdecode(b"caf\xe9-latin1.png"), 200)
    result = train_on_folder(tmp_path, root)
    assert_one_paragraph_error(result, 1, "2 of 83 image files cannot be read", "loop.png (a symbolic link loop)",
                               "dangling.png (a link that leads nowhere)")
    skipped = train_on_folder(tmp_path, root, "--skip_bad_images")
    assert skipped.returncode == 0, skipped.stderr
    warning = " ".join(skipped.stderr.split())
    assert "skipping 2 of 83 image files" in warning and "latin1" not in warning  # Its name is no obstacle.


@pytest.mark.slow
def test_an_unwritable_cache_is_a_warning_and_training_goes_on(tmp_path):
    root = two_class_folder(tmp_path / "images")
    blocker = tmp_path / "not_a_folder"
    blocker.write_text("a file where the cache folder should be")
    result = train_on_folder(tmp_path, root, env={"XDG_CACHE_HOME": str(blocker)})
    assert result.returncode == 0, result.stderr
    assert "the decoded images cannot be cached in" in result.stderr and "NotADirectoryError" in result.stderr


# Signals.

def start_training(run_dir, *flags):
    """train.py in the background, returned once it has logged training steps."""
    process = start_script("train", *SMALL_RUN, f"--run_dir={run_dir}", "--epochs=50", *flags, stdout=None,
                           stderr=subprocess.PIPE)
    lines = []
    for line in process.stderr:
        lines.append(line)
        if re.search(r" step \d+/", line):
            return process, lines
    raise AssertionError("training never logged a step:\n" + "".join(lines))


# SIGTERM (what schedulers send) end to end; SIGINT takes the same path (test_interrupts checks
# that both are recorded and exit 128 + their number; the test below sends real SIGINTs).
@pytest.mark.slow
@pytest.mark.parametrize("signal_number, exit_code", [(signal.SIGTERM, 143)])
def test_a_signal_finishes_the_step_saves_a_checkpoint_and_the_rerun_resumes(tmp_path, signal_number, exit_code):
    run_dir = tmp_path / "run"
    process, lines = start_training(run_dir)
    process.send_signal(signal_number)
    stderr = "".join(lines) + process.stderr.read()
    assert process.wait(timeout=60) == exit_code
    last = stderr.strip().splitlines()[-1]
    name = signal.Signals(signal_number).name
    assert last.startswith(f"tapeloop: stopped: {name} at step ") and "Resume: rerun the same command." in last
    step = int(last.split(" at step ")[1].split()[0])
    assert (run_dir / "checkpoints" / f"ckpt-{step}.index").exists()
    assert "Traceback" not in stderr
    resumed = run_script("train", *SMALL_RUN, f"--run_dir={run_dir}", "--epochs=1")
    assert f"at step {step}." in resumed.stderr


@pytest.mark.slow
def test_a_second_ctrl_c_exits_at_once(tmp_path):
    process, lines = start_training(tmp_path / "run", "--model=cnn", "--model_width=32")
    process.send_signal(signal.SIGINT)
    for line in process.stderr:  # Python runs the handler between compiled steps: wait for it.
        lines.append(line)
        if "SIGINT received" in line:
            break
    while process.poll() is None:
        process.send_signal(signal.SIGINT)  # Signals sent together arrive as one: keep sending.
        time.sleep(0.02)
    stderr = "".join(lines) + process.stderr.read()
    assert process.returncode == 130
    assert "a second SIGINT: exiting at once" in stderr and "Traceback" not in stderr


# Write errors.

def limit_file_size(limit_bytes):
    def apply():  # In the child: writes past the limit fail with EFBIG, like a full disk.
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit_bytes, limit_bytes))
    return apply


@pytest.mark.slow
def test_a_full_disk_during_a_checkpoint_is_a_paragraph_and_earlier_checkpoints_are_untouched(tmp_path):
    flags = ("--model=mlp", "--model_width=64", "--image_summary_every_steps=0")
    run_dir = trained_run(tmp_path, "--epochs=1", *flags)
    before = {name: content for name, content in snapshot(run_dir).items()
              if name.startswith(("checkpoints", "best"))}
    result = subprocess.run([sys.executable, str(REPO / "scripts" / "train.py"), *SMALL_RUN, f"--run_dir={run_dir}",
                             "--epochs=2", *flags], cwd=REPO, capture_output=True, text=True, timeout=300,
                            preexec_fn=limit_file_size(300_000))
    assert_one_paragraph_error(result, 1, "[checkpoint] could not write the checkpoint of step 56",
                               "File too large", "rerun the same command: it resumes from")
    after = {name: content for name, content in snapshot(run_dir).items() if name.startswith(("checkpoints", "best"))}
    assert {name: content for name, content in after.items() if name in before} == before
    assert not [name for name in after if "ckpt-56" in name]  # The partial files are gone.


@pytest.mark.slow
def test_a_damaged_saved_model_is_a_paragraph_in_evaluate_and_predict(tmp_path, synthetic_run):
    run_dir = copy_run(synthetic_run, tmp_path)
    (run_dir / "saved_model" / "saved_model.pb").write_bytes(b"\x08\x01 damaged")
    image = tmp_path / "digit.png"
    save_png(image, 128)
    for result in (run_script("evaluate", f"--run_dir={run_dir}", "--weights=saved_model"),
                   run_script("predict", f"--run_dir={run_dir}", str(image))):
        assert_one_paragraph_error(result, 1, "[checkpoint] the SavedModel at", "is damaged or not tapeloop's",
                                   "--weights=final")


@pytest.mark.slow
def test_output_pointing_at_a_folder_is_refused_before_the_work(tmp_path):
    result = run_script("evaluate", f"--run_dir={tmp_path}", f"--output={tmp_path}")
    assert_one_paragraph_error(result, 1, f"--output={tmp_path} is a folder", "--output=results.json")


# Tracebacks that became paragraphs.

@pytest.mark.parametrize("change, phrases", [
    (lambda arrays: arrays.update(y_train=np.array([{"label": 1}] * 64, object)),
     ("holds an object array (y_train)", "never objects")),
    (lambda arrays: arrays.update(x_test=arrays["x_test"][:0], y_test=arrays["y_test"][:0]),
     ("have unusable shapes", "neither empty", "x_test [0, 8, 8]")),
    (lambda arrays: arrays.update(y_train=np.array(["cat", "dog"] * 32)),
     ("y_train in", "is not class ids", "dtype <U3", "['cat', 'dog', 'cat']")),
    (lambda arrays: arrays.update(y_train=np.zeros(64, np.int64), y_test=np.zeros(16, np.int64)),
     ("fewer than two classes", "only class 0")),
])
@pytest.mark.slow
def test_unusable_npz_contents_are_explained(tmp_path, change, phrases):
    arrays = npz_arrays()
    change(arrays)
    folder = tmp_path / "npz"
    folder.mkdir()
    np.savez(folder / "data.npz", **arrays)  # allow_pickle is on when writing: a user's object array.
    result = run_script("diagnose", "--dataset=npz", f"--data_dir={folder}", "--model=mlp", "--batch_size=16")
    assert_one_paragraph_error(result, 1, *phrases)


@pytest.mark.slow
def test_images_too_small_for_the_model_are_refused_naming_the_depth(tmp_path):
    folder = write_npz(tmp_path / "npz", **npz_arrays(size=4))
    result = run_script("diagnose", "--dataset=npz", f"--data_dir={folder}", "--model=cnn", "--model_depth=3",
                        "--batch_size=16")
    assert_one_paragraph_error(result, 1, "[model] the images are too small for --model=cnn with --model_depth=3",
                               "at least 8x8", "found images of 4x4", "lower --model_depth to 2")


@pytest.mark.slow
def test_an_infinite_learning_rate_is_a_flag_error():
    result = run_script("train", "--dataset=synthetic", "--learning_rate=inf", "--run_dir=/tmp/never")
    assert_one_paragraph_error(result, 2, "[flags]", "--learning_rate must be a finite number")


# Silently wrong data, now warned about.

@pytest.mark.slow
def test_an_empty_class_folder_and_a_class_only_in_test_are_warned_about(tmp_path):
    root = two_class_folder(tmp_path / "images" / "train")
    two_class_folder(tmp_path / "images" / "test", per_class=5)
    (root / "empty").mkdir()
    save_png(tmp_path / "images" / "test" / "grey" / "000.png", 128)
    result = run_script("diagnose", "--dataset=image_folder", "--image_size=8", "--model=mlp", "--batch_size=16",
                        f"--data_dir={tmp_path / 'images'}")
    assert result.returncode == 0, result.stderr
    report = " ".join(result.stdout.split())
    assert "1 classes have examples in another split but none in train" in report and "of grey" in report
    assert "1 classes have no examples in any split" in report and "no examples of empty" in report


@pytest.mark.slow
def test_a_label_seen_in_one_split_but_never_in_the_other_is_warned_about(tmp_path):
    arrays = npz_arrays()
    arrays["y_train"][:5] = 2  # Class 2 exists only in training: its test recall cannot be measured.
    folder = write_npz(tmp_path / "npz", **arrays)
    result = run_script("diagnose", "--dataset=npz", f"--data_dir={folder}", "--model=mlp", "--batch_size=16")
    assert result.returncode == 0, result.stderr
    assert "none in test" in result.stdout and "no test examples of 2" in result.stdout


@pytest.mark.slow
def test_an_empty_idx_split_is_refused(tmp_path):
    folder = write_idx_dataset(tmp_path / "data", test_size=0)
    result = run_script("diagnose", "--dataset=mnist", f"--data_dir={folder}", "--batch_size=8")
    assert_one_paragraph_error(result, 1, "the test split in", "is empty", "at least one image")


# Shards, converted models and study folders (unit tier: no training).

def small_image_folder(root, classes=("circle", "square", "stripe")):
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (48, 12, 20, 3), dtype=np.uint8)
    labels = np.arange(48) % len(classes)
    return write_image_folder(root, {"train": (images, labels), "test": (images[:12], labels[:12])}, classes)


def small_shards(tmp_path):
    """A three-class image folder (images/) and its shards (shards/, several a split)."""
    folder = small_image_folder(tmp_path / "images")
    shards.make_shards(folder, tmp_path / "shards", shard_mb=0.004, test_split=0.2, skip_bad_images=False, workers=2)
    return tmp_path / "shards"


def shard_config(folder, *flags):
    return make_config(folder.parent / "run", "--dataset=tfrecord", f"--data_dir={folder}", "--image_size=12,20",
                       "--channels=3", *flags)


def refusal(call) -> TapeloopError:
    with pytest.raises(TapeloopError) as raised:
        call()
    return raised.value


def rewrite_records(path, change):
    """Rewrites a shard's records through `change(example)` (as another tool would), keeping its size
    out of the question by updating shards.json's byte count for it."""
    examples = [tf.train.Example.FromString(record.numpy()) for record in tf.data.TFRecordDataset(str(path))]
    with tf.io.TFRecordWriter(str(path)) as writer:
        for example in examples:
            change(example)
            writer.write(example.SerializeToString())
    manifest_path = path.parent / "shards.json"
    manifest = json.loads(manifest_path.read_text())
    for split in manifest["splits"].values():
        for shard in split["shards"]:
            if shard["file"] == path.name:
                shard["bytes"] = path.stat().st_size
    manifest_path.write_text(json.dumps(manifest))


def test_make_shards_never_deletes_a_users_own_tfrecord_files(tmp_path):
    output = tmp_path / "shards"
    output.mkdir()
    theirs = {name: f"the user's {name}".encode() for name in
              ("vacation-00000-of-00002.tfrecord", "vacation-00001-of-00002.tfrecord", "notes.txt")}
    for name, content in theirs.items():
        (output / name).write_bytes(content)
    folder = small_image_folder(tmp_path / "images")
    for _ in range(2):  # A rerun too.
        shards.make_shards(folder, output, shard_mb=0.004, test_split=0.2, skip_bad_images=False, workers=2)
    assert {name: (output / name).read_bytes() for name in theirs} == theirs


def test_make_shards_refuses_to_write_over_a_file_it_did_not_write(tmp_path):
    output = tmp_path / "shards"
    output.mkdir()
    (output / "train-00000-of-00001.tfrecord").write_bytes(b"another tool's shard")
    (output / "shards.json").write_text('{"made by": "another tool"}')
    before = snapshot(output)
    error = refusal(lambda: shards.make_shards(small_image_folder(tmp_path / "images"), output, 64, 0.2, False, 2))
    assert "make_shards.py did not write" in error.problem and "shards.json" in error.found
    assert "train-00000-of-00001.tfrecord" in error.found and "nothing was written" in error.fix
    assert snapshot(output) == before


@pytest.mark.parametrize("output", ["images/shards", "images", "."])
def test_make_shards_refuses_an_output_folder_inside_the_image_folder_or_holding_it(tmp_path, output):
    folder = small_image_folder(tmp_path / "images")
    error = refusal(lambda: shards.make_shards(folder, tmp_path / output, 64, 0.2, False, 2))
    assert error.stage == "flags" and "overlap" in error.problem and "one more class" in error.expected
    assert not (tmp_path / "images" / "shards").exists() and not (tmp_path / "shards.json").exists()


def test_make_shards_refuses_a_class_folder_without_images(tmp_path):
    folder = small_image_folder(tmp_path / "images")
    (folder / "train" / "zzz_notes").mkdir()
    (folder / "train" / "zzz_notes" / "readme.txt").write_text("not an image")
    error = refusal(lambda: shards.make_shards(folder, tmp_path / "shards", 64, 0.2, False, 2))
    assert "hold no image files" in error.problem and "zzz_notes" in error.found
    assert not (tmp_path / "shards").exists()


def test_make_shards_refuses_an_output_dir_that_is_a_file_and_leaves_it(tmp_path):
    (tmp_path / "shards").write_bytes(b"a user's file")
    error = refusal(lambda: shards.make_shards(small_image_folder(tmp_path / "images"), tmp_path / "shards", 64, 0.2,
                                               False, 2))
    assert "is a file" in error.problem and (tmp_path / "shards").read_bytes() == b"a user's file"


def test_a_sidecar_cut_short_by_kill_9_is_redone_on_the_rerun(tmp_path):
    output = small_shards(tmp_path)
    first = json.loads((output / "shards.json").read_text())
    sidecar = sorted(output.glob("train-*.done.npz"))[0]
    sidecar.write_bytes(sidecar.read_bytes()[:100])  # As kill -9 left a sidecar written in place.
    (output / "shards.json").unlink()
    again = shards.make_shards(tmp_path / "images", output, 0.004, 0.2, False, 2)
    assert again == first and np.load(sidecar)["labels"].size > 0


def test_a_shard_with_flipped_bytes_is_named_when_loading_and_skipped_with_skip_bad_images(tmp_path):
    output = small_shards(tmp_path)
    shard = sorted(output.glob("train-*.tfrecord"))[1]
    data = bytearray(shard.read_bytes())
    data[len(data) // 2:len(data) // 2 + 32] = bytes(255 - byte for byte in data[len(data) // 2:len(data) // 2 + 32])
    shard.write_bytes(bytes(data))
    error = refusal(lambda: sources.load(shard_config(output)))
    assert f"{shard} (a damaged record" in error.found and "--skip_bad_images" in error.fix
    _, splits = sources.load(shard_config(output, "--skip_bad_images"))
    held = json.loads((output / "shards.json").read_text())["splits"]["train"]
    assert len(splits["train"][1]) == held["examples"] - held["shards"][1]["examples"]


@pytest.mark.parametrize("label, phrase", [(7, "label 7, index"), (None, "record labels differ from the index")])
def test_record_labels_out_of_range_or_unlike_the_index_are_named_never_trained_on(tmp_path, label, phrase):
    output = small_shards(tmp_path)
    shard = sorted(output.glob("train-*.tfrecord"))[0]

    def relabel(example):
        values = example.features.feature["label"].int64_list.value
        values[0] = label if label is not None else (values[0] + 1) % 3

    rewrite_records(shard, relabel)
    error = refusal(lambda: sources.load(shard_config(output)))
    assert str(shard) in error.found and phrase in error.found


@pytest.mark.parametrize("edit, phrase", [
    (lambda manifest: manifest["splits"]["test"].update(examples=0, shards=[]), "the test split lists 0 examples"),
    (lambda manifest: [shard.update(examples=shard["examples"] + 7, first=shard["first"] + 7 * number)
                       for number, shard in enumerate(manifest["splits"]["train"]["shards"])]
     and manifest["splits"]["train"].update(examples=sum(shard["examples"] for shard in
                                                         manifest["splits"]["train"]["shards"])),
     "where shards.json lists"),
    (lambda manifest: manifest["splits"]["train"]["shards"][0].update(file="../../images/escape.tfrecord"),
     "is not a shard name"),
    (lambda manifest: manifest["splits"].update(validation=manifest["splits"]["test"]), "splits ['test', 'train', "),
])
def test_an_edited_shards_json_is_a_paragraph_before_any_record_is_trained_on(tmp_path, edit, phrase):
    output = small_shards(tmp_path)
    manifest = json.loads((output / "shards.json").read_text())
    edit(manifest)
    (output / "shards.json").write_text(json.dumps(manifest))
    error = refusal(lambda: sources.load(shard_config(output)))
    assert error.stage == "data" and phrase in error.found


def test_a_shards_json_nested_past_any_parser_is_a_paragraph(tmp_path):
    output = small_shards(tmp_path)
    (output / "shards.json").write_text("[" * 1_000_000)
    error = refusal(lambda: sources.load(shard_config(output)))
    assert "is not a usable shard folder" in error.problem and "RecursionError" in error.found


@pytest.mark.parametrize("damage, phrase", [
    (lambda path: path.unlink(), "No such file"),
    (lambda path: np.savez(path, labels=np.array([{"label": 1}], object), heights=np.zeros(1), widths=np.zeros(1),
                           paths=np.array(["x"])), "Object arrays cannot be loaded"),
])
def test_a_missing_or_pickled_index_is_a_paragraph(tmp_path, damage, phrase):
    output = small_shards(tmp_path)
    damage(output / "index-train.npz")
    error = refusal(lambda: sources.load(shard_config(output)))
    assert "index" in error.problem and phrase in error.found and "make_shards.py again" in error.fix


def test_a_shuffle_buffer_larger_than_the_memory_is_refused(tmp_path):
    error = refusal(lambda: sources.load(shard_config(small_shards(tmp_path), "--shuffle_buffer=2000000000")))
    assert "--shuffle_buffer=2000000000 would not fit in memory" in error.problem


@pytest.mark.parametrize("kind, content, written, phrase", [
    ("tflite", b"garbage, not a model", None, "no TFLite identifier"),
    ("tflite", b"\x1c\x00\x00\x00TFL3" + bytes(40), "0" * 64, "not the ones export.py wrote"),
    ("onnx", b"\x1c\x00\x00\x00TFL3" + bytes(40), None, "a TFLite file"),
])
def test_a_converted_file_that_is_not_its_format_names_the_file_and_the_export_command(tmp_path, kind, content,
                                                                                       written, phrase):
    path = tmp_path / f"model.{kind}"
    path.write_bytes(content)
    (tmp_path / f"model.{kind}.json").write_text(json.dumps(
        {"format": kind, "input": {"shape": [None, 28, 28]}, "output": {"class_names": ["a", "b"]},
         **({"file": {"bytes": 44, "sha256": written}} if written else {})}))
    error = refusal(lambda: conversion.converted_model(str(path), kind))
    assert str(path) in error.problem and phrase in error.found and f"--format={kind}" in error.fix


def test_a_contract_with_an_absurd_input_shape_is_not_usable(tmp_path):
    (tmp_path / "model.tflite").write_bytes(b"\x1c\x00\x00\x00TFL3")
    (tmp_path / "model.tflite.json").write_text(json.dumps(
        {"format": "tflite", "input": {"shape": [None, 10**9, 10**9]}, "output": {"class_names": ["a", "b"]}}))
    error = refusal(lambda: conversion.converted_model(str(tmp_path / "model.tflite"), "tflite"))
    assert "no usable input contract" in error.problem and "sizes up to 16384" in error.found


def test_a_converted_file_given_as_another_format_is_named_by_its_contract(tmp_path):
    path = tmp_path / "model.onnx"
    path.write_bytes(b"an onnx file")
    (tmp_path / "model.onnx.json").write_text(json.dumps(
        {"format": "onnx", "input": {"shape": [None, 28, 28]}, "output": {"class_names": ["a", "b"]}}))
    error = refusal(lambda: conversion.converted_model(str(path), "tflite"))
    assert "says format 'onnx'" in error.found


@pytest.mark.slow  # improve.py's imports (Optuna) take seconds.
def test_improve_refuses_a_study_dir_that_is_a_file_before_any_work(tmp_path):
    (tmp_path / "study.db").write_bytes(b"SQLite format 3\x00 a user's database")
    (tmp_path / "run").mkdir()  # The check comes before the run is read.
    result = run_script("improve", f"--run_dir={tmp_path / 'run'}", f"--study_dir={tmp_path / 'study.db'}")
    assert_one_paragraph_error(result, 1, "[flags]", "cannot hold the trials", "a file (left as it is)")
    assert (tmp_path / "study.db").read_bytes() == b"SQLite format 3\x00 a user's database"
    assert "Diagnos" not in result.stdout


@pytest.mark.slow
def test_export_never_replaces_a_file_without_overwrite(tmp_path, synthetic_run):
    run_dir = copy_run(synthetic_run, tmp_path)
    assert run_script("export", f"--run_dir={run_dir}", "--format=tflite").returncode == 0
    contract = run_dir / "export" / "model.tflite.json"
    contract.write_text(contract.read_text().replace('"uint8"', '"uint8" ', 1))  # The user's edit.
    edited = snapshot(run_dir / "export")
    again = run_script("export", f"--run_dir={run_dir}", "--format=tflite")
    assert_one_paragraph_error(again, 1, "[output]", "model.tflite.json exist", "--overwrite")
    assert snapshot(run_dir / "export") == edited
    theirs = tmp_path / "report.pdf"
    theirs.write_bytes(b"a user's report")
    elsewhere = run_script("export", f"--run_dir={run_dir}", "--format=tflite", f"--output={theirs}")
    assert_one_paragraph_error(elsewhere, 1, f"{theirs} exists already")
    assert theirs.read_bytes() == b"a user's report"
    replaced = run_script("export", f"--run_dir={run_dir}", "--format=tflite", "--overwrite")
    assert replaced.returncode == 0 and "Replacing" in replaced.stderr


@pytest.mark.slow
def test_predict_names_a_garbage_or_missing_converted_model(tmp_path, synthetic_run):
    run_dir = copy_run(synthetic_run, tmp_path)
    assert run_script("export", f"--run_dir={run_dir}", "--format=tflite").returncode == 0
    image = tmp_path / "digit.png"
    Image.fromarray(np.zeros((28, 28), np.uint8)).save(image)
    (run_dir / "export" / "model.tflite").write_bytes(b"garbage")
    result = run_script("predict", f"--run_dir={run_dir}", "--weights=tflite", str(image))
    assert_one_paragraph_error(result, 1, "[export]", "model.tflite is not a usable tflite model", "--format=tflite")
    assert run_script("export", f"--run_dir={run_dir}", "--format=tflite", "--overwrite").returncode == 0
    model = run_dir / "export" / "model.tflite"
    model.write_bytes(model.read_bytes()[:len(model.read_bytes()) // 2])  # Cut short: the interpreter would crash.
    result = run_script("predict", f"--run_dir={run_dir}", "--weights=tflite", str(image))
    assert_one_paragraph_error(result, 1, "not the ones export.py wrote")
    contract = json.loads((run_dir / "export" / "model.tflite.json").read_text())
    del contract["file"]  # As a contract written by hand: the file is opened in a child process first.
    (run_dir / "export" / "model.tflite.json").write_text(json.dumps(contract))
    result = run_script("predict", f"--run_dir={run_dir}", "--weights=tflite", str(image))
    assert_one_paragraph_error(result, 1, "the TFLite interpreter")
    result = run_script("predict", f"--run_dir={run_dir}", "--weights=onnx", str(image))
    assert_one_paragraph_error(result, 1, "[export]", "no onnx file at", "export.py")


@pytest.mark.slow
def test_a_data_service_address_where_nothing_listens_is_a_paragraph_within_the_timeout(tmp_path):
    started = time.monotonic()
    result = run_script("train", *SMALL_RUN, f"--run_dir={tmp_path / 'run'}", "--data_service=grpc://localhost:1",
                        "--data_service_timeout=3", timeout=120)
    assert_one_paragraph_error(result, 1, "[data]", "grpc://localhost:1 does not serve batches", "no answer within 3 s",
                               "--role=dispatcher")
    assert time.monotonic() - started < 60 and not (tmp_path / "run").exists()


def test_a_shard_removed_while_the_run_reads_it_is_named(tmp_path):
    output = small_shards(tmp_path)
    config = shard_config(output, "--batch_size=8")
    data = pipeline.prepare_data(config)
    shard = sorted(output.glob("test-*.tfrecord"))[0]
    shard.unlink()
    with pytest.raises(TapeloopError) as raised:
        with streaming.damaged_records_named(data.train, data.validation, data.test):
            for _ in pipeline.eval_batches(data.test, data.spec, config):
                pass
    assert f"{shard} was damaged or removed while the run read it" in raised.value.problem
    assert "NotFoundError" in raised.value.found and "resumes from the last checkpoint" in raised.value.fix


def test_a_path_the_file_system_refuses_is_the_file_system_paragraph(tmp_path):
    result = run_script("make_shards", f"--data_dir={small_image_folder(tmp_path / 'images')}",
                        f"--output_dir={tmp_path / ('x' * 300)}")
    assert_one_paragraph_error(result, 1, "[file system]", "could not be used: File name too long", "errno 36")


def test_make_shards_on_a_full_disk_is_a_paragraph_and_a_rerun_with_room_resumes(tmp_path, monkeypatch):
    folder = small_image_folder(tmp_path / "images")
    real_write = shards.write_shard
    calls = []

    def disk_full_after_two(plan):
        calls.append(plan)
        if len(calls) > 2:
            raise OSError(28, "No space left on device", str(plan.path))
        return real_write(plan)

    monkeypatch.setattr(shards, "write_shard", disk_full_after_two)
    error = refusal(lambda: shards.make_shards(folder, tmp_path / "shards", 0.004, 0.2, False, 1))
    assert error.stage == "output" and "No space left on device" in error.found and "rerun" in error.fix
    assert not (tmp_path / "shards" / "shards.json").exists()
    monkeypatch.setattr(shards, "write_shard", real_write)
    shards.make_shards(folder, tmp_path / "shards", 0.004, 0.2, False, 1)
    assert (tmp_path / "shards" / "shards.json").exists()


@pytest.mark.slow
@pytest.mark.parametrize("killed, found, restarted", [("dispatcher", "no answer within 2 s", True),
                                                      ("worker0", "no worker served a batch", False)],
                         ids=["dispatcher", "worker"])
def test_a_data_service_that_dies_mid_training_stops_it_with_the_paragraph_and_the_checkpoint(tmp_path, killed, found,
                                                                                             restarted):
    """The dispatcher, or the only worker, killed mid-run; after the service's restart the same command
    resumes (a worker restarted while the run waits: tests/test_data_service.py)."""
    service = DataServiceProcesses(workers=1)
    run_dir = tmp_path / "run"
    args = [*SMALL_RUN, "--epochs=3", f"--run_dir={run_dir}", f"--data_service={service.url}",
            "--data_service_timeout=2"]
    training = start_script("train", *args, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 120
        while checkpointed_step(run_dir) < 28 and time.monotonic() < deadline:  # An epoch saved.
            time.sleep(0.2)
        service.kill(killed)
        killed_at = time.monotonic()
        _, stderr = training.communicate(timeout=90)
        assert time.monotonic() - killed_at < 60
        result = subprocess.CompletedProcess(training.args, training.returncode, "", stderr)
        assert_one_paragraph_error(result, 1, "[data]", "which no longer serves", found, "resumes from the last")
        saved = checkpointed_step(run_dir)
        assert 28 <= saved < 84
        if not restarted:
            return
        service.start("dispatcher")
        service.kill("worker0")  # A running worker would re-register at its next heartbeat, in up to 30 s.
        service.start("worker0")
        resumed = run_script("train", *args, timeout=300)
        assert resumed.returncode == 0, resumed.stderr
        assert f"at step {saved}" in resumed.stderr and json.loads((run_dir / "results.json").read_text())["steps"] == 84
    finally:
        training.kill()
        service.kill_all()


def test_a_shard_left_without_its_sidecar_by_kill_9_between_the_renames_is_written_again(tmp_path):
    output = small_shards(tmp_path)
    first = json.loads((output / "shards.json").read_text())
    sidecar = sorted(output.glob("train-*.done.npz"))[0]
    sidecar.rename(shards.partial_npz(sidecar))  # The shard took its name; its sidecar had not yet.
    (output / "shards.json").unlink()
    assert shards.make_shards(tmp_path / "images", output, 0.004, 0.2, False, 2) == first
    assert sidecar.exists()
