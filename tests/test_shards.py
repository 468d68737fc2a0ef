"""make_shards: an image folder to TFRecord shards, its description, reruns, and unreadable images."""

import json
import os
import shutil

import numpy as np
import pytest
import tensorflow as tf

from data import shards
from tests.helpers import run_script, write_image_folder
from settings.errors import TapeloopError


def small_folder(root, count=40, classes=("cat", "dog")):
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (count, 12, 20, 3), dtype=np.uint8)
    return write_image_folder(root, {"train": (images, np.arange(count) % 2), "test": (images[:8], np.arange(8) % 2)},
                              classes)


def records(path):
    return [tf.train.Example.FromString(record.numpy()) for record in tf.data.TFRecordDataset(str(path))]


def test_the_shards_hold_every_image_as_encoded_with_its_label_and_the_description_counts_them(tmp_path):
    folder = small_folder(tmp_path / "images")
    description = shards.make_shards(folder, tmp_path / "shards", shard_mb=0.002, test_split=0.2,
                                     skip_bad_images=False, workers=2)
    train = description["splits"]["train"]
    assert description["class_names"] == ["cat", "dog"] and train["examples"] == 40 and len(train["shards"]) > 2
    assert train["class_counts"] == [20, 20] and train["image_height"] == {"min": 12, "median": 12.0, "max": 12}
    assert train["image_channels"] == {"3": 40}
    index = np.load(tmp_path / "shards" / "index-train.npz")
    stored = [example for shard in train["shards"] for example in records(tmp_path / "shards" / shard["file"])]
    assert [shard["first"] for shard in train["shards"]] == list(np.cumsum([0] + [s["examples"] for s in train["shards"]])[:-1])
    for example, path, label in zip(stored, index["paths"], index["labels"]):
        assert example.features.feature["image"].bytes_list.value[0] == open(path, "rb").read()
        assert example.features.feature["label"].int64_list.value[0] == label == ("dog" in path)
    assert sorted(index["paths"]) == sorted(str(path) for path in (folder / "train").rglob("*.png"))
    assert list(index["paths"]) != sorted(index["paths"])  # A fixed permutation: shards mix the classes.
    assert json.loads((tmp_path / "shards" / "shards.json").read_text()) == description


def test_a_rerun_keeps_finished_shards_and_rewrites_those_whose_files_changed(tmp_path):
    folder = small_folder(tmp_path / "images")
    output = tmp_path / "shards"
    first = shards.make_shards(folder, output, 0.002, 0.2, False, 2)
    shard_files = [output / shard["file"] for shard in first["splits"]["train"]["shards"]]
    times = {path: path.stat().st_mtime_ns for path in shard_files}
    changed_image = np.load(output / "index-train.npz")["paths"][0]  # In the first shard.
    os.utime(changed_image, ns=(0, 10**18))  # Edited (the same size, so the same plan).
    stale = output / "train-00099-of-00100.tfrecord"  # A shard of an earlier plan, with its sidecar.
    stale.write_bytes(b"from a plan of before")
    shutil.copyfile(shard_files[1].with_name(shard_files[1].name + ".done.npz"), f"{stale}.done.npz")
    again = shards.make_shards(folder, output, 0.002, 0.2, False, 2)
    assert again == first
    assert shard_files[0].stat().st_mtime_ns != times[shard_files[0]]
    assert all(path.stat().st_mtime_ns == times[path] for path in shard_files[1:])
    assert not stale.exists() and not os.path.exists(f"{stale}.done.npz")  # This tool's, not in this plan: removed.


def test_unreadable_images_are_named_by_path_or_skipped_and_no_description_is_written_until_it_holds(tmp_path):
    folder = small_folder(tmp_path / "images")
    (folder / "train" / "cat" / "broken.png").write_bytes(b"not an image")
    os.mkfifo(folder / "train" / "dog" / "pipe.png")
    with pytest.raises(TapeloopError, match="2 of 50 image files cannot be read") as raised:
        shards.make_shards(folder, tmp_path / "shards", 0.002, 0.2, False, 2)
    assert "broken.png" in raised.value.found and "pipe.png (a named pipe" in raised.value.found
    assert "--skip_bad_images" in raised.value.fix and not (tmp_path / "shards" / "shards.json").exists()
    description = shards.make_shards(folder, tmp_path / "shards", 0.002, 0.2, True, 2)
    assert description["splits"]["train"]["examples"] == 40


def test_make_shards_script_prints_the_splits_and_the_training_flags(tmp_path):
    folder = small_folder(tmp_path / "images")
    result = run_script("make_shards", f"--data_dir={folder}", f"--output_dir={tmp_path / 'shards'}")
    assert result.returncode == 0, result.stderr
    assert "train: 40 images in 1 shards" in result.stdout and "height 12-12, width 20-20" in result.stdout
    assert f"--dataset=tfrecord --data_dir={tmp_path / 'shards'}" in result.stdout
    missing = run_script("make_shards", f"--data_dir={tmp_path / 'nowhere'}", f"--output_dir={tmp_path / 'out'}")
    assert missing.returncode == 1 and missing.stderr.splitlines()[-1].startswith("tapeloop: error: [data]")
    shutil.rmtree(tmp_path / "out", ignore_errors=True)
