"""--dataset=tfrecord: streamed splits, their epochs and resume, evaluation order, damaged shards."""

import dataclasses
import json
import shutil
import signal
import time

import numpy as np
import pytest
import tensorflow as tf

from data import diagnostics, image_folder, pipeline, sources, streaming
from tests.helpers import SMALL_RUN, checkpointed_step, make_config, run_script, start_script
from tests.test_loop import checkpoint_values
from trainer import loop
from settings.errors import TapeloopError


def tfrecord_config(root, *flags):
    return make_config(root / "run", "--dataset=tfrecord", f"--data_dir={root / 'shards'}", "--image_size=28",
                       "--channels=1", *flags)


def stored_order_paths(root):
    return np.load(root / "shards" / "index-train.npz")["paths"]


@pytest.mark.slow  # Decodes the synthetic image folder (2,560 PNGs) in memory or probes it.
def test_streamed_images_decode_to_the_pixels_of_the_in_memory_image_folder(synthetic_shards, tmp_path):
    config = tfrecord_config(synthetic_shards)
    spec, splits = sources.load(config)
    images, labels = splits["train"]
    assert isinstance(images, streaming.StreamedImages) and images.shape == (len(labels), 28, 28)
    folder_spec, folder_splits = image_folder.load(synthetic_shards / "images", config, tmp_path / "cache")
    by_path = dict(zip(image_folder.stored_paths(synthetic_shards / "images", config, tmp_path / "cache")["train"],
                       folder_splits["train"][0]))
    chosen = np.array([3, 100, 1500])
    np.testing.assert_array_equal(images[chosen].decoded(),
                                  np.stack([by_path[path] for path in stored_order_paths(synthetic_shards)[chosen]]))
    assert spec.class_names == folder_spec.class_names and spec.mean == pytest.approx(folder_spec.mean, abs=0.02)
    with pytest.raises(ValueError, match="increasing"):
        images[np.array([5, 2])]


def epoch_positions(data, config, epoch, skip=0, replica_shard=(0, 1, 1)):
    """The stored index of every example of the epoch's batches, read back from example weights set to it."""
    weights = data.train[0].positions.astype(np.float32)
    return [batch[2].numpy().astype(int) for batch in pipeline.train_batches(
        data.train, weights, data.spec, config, epoch, skip, replica_shard)]


def test_an_epoch_is_each_training_example_once_drawn_by_seed_and_epoch_and_a_resume_skips_exactly(synthetic_shards):
    config = tfrecord_config(synthetic_shards, "--batch_size=64", "--validation_split=0.1")
    data = pipeline.prepare_data(config)
    first = epoch_positions(data, config, epoch=0)
    seen = np.concatenate(first)
    assert len(first) == len(data.train[1]) // 64 and len(np.unique(seen)) == len(seen)
    assert set(seen) <= set(data.train[0].positions) and not set(seen) & set(data.validation[0].positions)
    assert [list(batch) for batch in epoch_positions(data, config, epoch=0)] == [list(batch) for batch in first]
    assert [list(batch) for batch in epoch_positions(data, config, 0, skip=5)] == [list(batch) for batch in first[5:]]
    assert not np.array_equal(np.concatenate(epoch_positions(data, config, epoch=1)), seen)
    halves = [epoch_positions(data, config, 0, replica_shard=(replica, 1, 2)) for replica in (0, 1)]
    assert [list(np.concatenate(pair)) for pair in zip(*halves)] == [list(batch) for batch in first]


def test_evaluation_batches_are_every_example_in_stored_order_with_its_label(synthetic_shards):
    config = tfrecord_config(synthetic_shards, "--eval_batch_size=100")
    data = pipeline.prepare_data(config)
    labels = np.concatenate([batch_labels.numpy() for _, batch_labels in pipeline.eval_batches(
        data.validation, data.spec, config)])
    np.testing.assert_array_equal(labels, data.validation[1])
    report = diagnostics.preflight(data, config)
    assert report.lines[1].startswith("streamed from disk: pixels checked on a sample of up to 1024")


@pytest.mark.slow
def test_a_streamed_run_resumed_mid_epoch_ends_as_an_uninterrupted_one(synthetic_shards, tmp_path):
    flags = ("--model=mlp", "--dropout=0", "--epochs=2", "--augment_shift=0.1", "--mixup_alpha=0.4")
    loop.train(dataclasses.replace(tfrecord_config(synthetic_shards, *flags, "--max_steps=40"),
                                   run_dir=str(tmp_path / "whole")))
    for steps in (19, 40):  # Stopped mid-epoch (28 steps an epoch), then resumed.
        loop.train(dataclasses.replace(tfrecord_config(synthetic_shards, *flags, f"--max_steps={steps}"),
                                       run_dir=str(tmp_path / "resumed")))
    whole_values = checkpoint_values(tmp_path / "whole" / "checkpoints")
    resumed_values = checkpoint_values(tmp_path / "resumed" / "checkpoints")
    for name, value in whole_values.items():
        np.testing.assert_allclose(resumed_values[name], value, rtol=1e-5, atol=1e-6, err_msg=name)


@pytest.mark.slow
def test_a_streamed_run_killed_with_sigkill_and_resumed_ends_as_an_uninterrupted_one(synthetic_shards, tmp_path):
    args = [*SMALL_RUN, "--model=mlp", "--dropout=0", "--dataset=tfrecord", f"--data_dir={synthetic_shards / 'shards'}",
            "--image_size=28", "--channels=1", "--max_steps=50", "--checkpoint_every_steps=5"]
    assert run_script("train", *args, f"--run_dir={tmp_path / 'whole'}").returncode == 0
    killed = start_script("train", *args, f"--run_dir={tmp_path / 'resumed'}")
    deadline = time.monotonic() + 300
    while checkpointed_step(tmp_path / "resumed") < 10 and killed.poll() is None and time.monotonic() < deadline:
        time.sleep(0.2)
    killed.send_signal(signal.SIGKILL)
    killed.wait()
    assert 10 <= checkpointed_step(tmp_path / "resumed") < 50
    assert run_script("train", *args, f"--run_dir={tmp_path / 'resumed'}").returncode == 0
    whole_values = checkpoint_values(tmp_path / "whole" / "checkpoints")
    resumed_values = checkpoint_values(tmp_path / "resumed" / "checkpoints")
    for name, value in whole_values.items():
        np.testing.assert_allclose(resumed_values[name], value, rtol=1e-5, atol=1e-6, err_msg=name)


def damaged_copy(synthetic_shards, tmp_path, damage):
    root = tmp_path / "copy"
    shutil.copytree(synthetic_shards / "shards", root / "shards")
    shard = sorted((root / "shards").glob("train-*.tfrecord"))[1]
    data = shard.read_bytes()
    shard.write_bytes(damage(data))
    return root, shard


def test_a_truncated_shard_is_named_before_training_or_left_out_with_skip_bad_images(synthetic_shards, tmp_path):
    root, shard = damaged_copy(synthetic_shards, tmp_path, lambda data: data[: len(data) // 2])
    with pytest.raises(TapeloopError, match="cannot be read or brought to the size") as raised:
        sources.load(tfrecord_config(root))
    assert f"{shard} (" in raised.value.found and "cut short or changed" in raised.value.found
    _, splits = sources.load(tfrecord_config(root, "--skip_bad_images"))
    whole = np.load(root / "shards" / "index-train.npz")["labels"]
    held = [entry for entry in streaming.read_description(root / "shards")["splits"]["train"]["shards"]
            if str(root / "shards" / entry["file"]) == str(shard)][0]
    assert len(splits["train"][1]) == len(whole) - held["examples"]


def flip_bytes(data):
    middle = len(data) // 2
    return data[:middle] + bytes(255 - byte for byte in data[middle:middle + 64]) + data[middle + 64:]


def test_a_shard_with_flipped_bytes_is_named_at_the_start_or_left_out_with_skip_bad_images(synthetic_shards,
                                                                                           tmp_path):
    root, shard = damaged_copy(synthetic_shards, tmp_path, flip_bytes)  # Same size: its records' checksums fail.
    with pytest.raises(TapeloopError, match="cannot be read or brought to the size") as raised:
        sources.load(tfrecord_config(root))
    assert f"{shard} (a damaged record" in raised.value.found
    _, splits = sources.load(tfrecord_config(root, "--skip_bad_images"))
    held = [entry for entry in streaming.read_description(root / "shards")["splits"]["train"]["shards"]
            if str(root / "shards" / entry["file"]) == str(shard)][0]
    assert len(splits["train"][1]) == len(np.load(root / "shards" / "index-train.npz")["labels"]) - held["examples"]


def test_a_record_damaged_after_the_start_stops_the_run_with_the_shard_named(synthetic_shards, tmp_path):
    root, shard = damaged_copy(synthetic_shards, tmp_path, lambda data: data)
    data = pipeline.prepare_data(tfrecord_config(root))
    shard.write_bytes(flip_bytes(shard.read_bytes()))  # The same size, after the start.
    with pytest.raises(TapeloopError, match=f"{shard} was damaged or removed while the run read it") as raised:
        with streaming.damaged_records_named(data.train, data.validation, data.test):
            for _ in pipeline.eval_batches(data.train, data.spec, tfrecord_config(root)):
                pass
    assert "rerun make_shards.py" in raised.value.fix and "resumes from the last checkpoint" in raised.value.fix


def test_a_folder_that_is_not_finished_shards_is_refused(tmp_path):
    (tmp_path / "shards").mkdir()
    with pytest.raises(TapeloopError, match="is not a usable shard folder") as raised:
        sources.load(tfrecord_config(tmp_path))
    assert "make_shards.py" in raised.value.fix


def test_an_image_too_thin_for_the_size_is_named_from_the_index_without_decoding(synthetic_shards, tmp_path):
    root = tmp_path / "copy"
    shutil.copytree(synthetic_shards / "shards", root / "shards")
    index = dict(np.load(root / "shards" / "index-train.npz"))
    index["heights"][7], index["widths"][7] = 100000, 1
    np.savez(root / "shards" / "index-train.npz", **index)
    with pytest.raises(TapeloopError) as raised:
        sources.load(tfrecord_config(root))
    assert f"{index['paths'][7]} (decodes as 100000x1" in raised.value.found


@pytest.mark.slow
def test_a_streamed_run_is_scored_by_evaluate_three_ways_and_diagnosed_without_the_all_image_findings(
        synthetic_shards, tmp_path):
    run_dir = tmp_path / "run"
    args = [*SMALL_RUN, "--dataset=tfrecord", f"--data_dir={synthetic_shards / 'shards'}", "--image_size=28",
            "--channels=1", "--epochs=1", f"--run_dir={run_dir}"]
    trained = run_script("train", *args)
    assert trained.returncode == 0, trained.stderr
    test_accuracy = json.loads((run_dir / "results.json").read_text())["test"]["accuracy"]
    for weights in ("best", "saved_model"):
        evaluated = run_script("evaluate", f"--run_dir={run_dir}", f"--weights={weights}", "--output=-")
        assert evaluated.returncode == 0, evaluated.stderr
        assert json.loads(evaluated.stdout)["accuracy"] == pytest.approx(test_accuracy, abs=2e-3)
    diagnosed = run_script("diagnose", f"--run_dir={run_dir}", "--output=-")
    assert diagnosed.returncode == 0, diagnosed.stderr
    report = json.loads(diagnosed.stdout)
    assert any("label issues and leakage are not sought" in note for note in report["notes"])
    assert report["duplicates"] == [] and report["split"] == "validation"


def folder_config(root, *flags):
    return make_config(root / "run", "--dataset=image_folder", f"--data_dir={root / 'images'}", "--image_size=28",
                       "--channels=1", *flags)


@pytest.mark.slow  # Decodes the synthetic image folder (2,560 PNGs) in memory or probes it.
def test_an_image_folder_above_max_memory_streams_the_very_batches_it_would_gather_in_memory(synthetic_shards,
                                                                                              monkeypatch, tmp_path):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    # Unstandardized: the streamed spec's mean and std come from a sample, not from every image.
    flags = ("--batch_size=64", "--augment_shift=0.1", "--mixup_alpha=0.4", "--eval_batch_size=300", "--nostandardize")
    in_memory = pipeline.prepare_data(folder_config(synthetic_shards, *flags))
    config = folder_config(synthetic_shards, *flags, "--max_memory_gb=0.001")  # 2,560 images of 784 bytes: 2 MB.
    streamed = pipeline.prepare_data(config)
    assert isinstance(streamed.train[0], streaming.FileImages) and not isinstance(in_memory.train[0],
                                                                                 streaming.StreamedImages)
    np.testing.assert_array_equal(streamed.train[1], in_memory.train[1])
    weights = np.arange(len(streamed.train[1]), dtype=np.float32)
    for epoch, skip in ((0, 0), (1, 7)):
        pairs = zip(pipeline.train_batches(in_memory.train, weights, in_memory.spec, config, epoch, skip),
                    pipeline.train_batches(streamed.train, weights, streamed.spec, config, epoch, skip))
        for expected, actual in pairs:
            for expected_part, actual_part in zip(expected, actual):
                np.testing.assert_allclose(actual_part.numpy(), expected_part.numpy(), atol=1e-6)
    for expected, actual in zip(pipeline.eval_batches(in_memory.test, in_memory.spec, config),
                                pipeline.eval_batches(streamed.test, streamed.spec, config)):
        np.testing.assert_array_equal(actual[1].numpy(), expected[1].numpy())
    assert sources.stored_paths(config)["train"] == sources.stored_paths(folder_config(synthetic_shards))["train"]


@pytest.mark.slow  # Decodes the synthetic image folder (2,560 PNGs) in memory or probes it.
def test_a_streamed_image_folder_names_files_that_do_not_decode_or_are_too_thin(synthetic_shards, monkeypatch,
                                                                                 tmp_path):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    root = tmp_path / "copy"
    shutil.copytree(synthetic_shards / "images", root / "images")
    (root / "images" / "train" / "pattern_0" / "broken.png").write_bytes(b"not a png")
    tf.io.write_file(str(root / "images" / "train" / "pattern_1" / "thin.png"), tf.io.encode_png(np.zeros((9000, 1, 1), np.uint8)))
    with pytest.raises(TapeloopError, match="2 of 2562 image files") as raised:
        sources.load(folder_config(root, "--max_memory_gb=0.001"))
    assert "broken.png (" in raised.value.found and "thin.png (decodes as 9000x1" in raised.value.found
    _, splits = sources.load(folder_config(root, "--max_memory_gb=0.001", "--skip_bad_images"))
    assert len(splits["train"][1]) + len(splits["test"][1]) == 2560
