import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image  # Pillow comes with matplotlib; TensorFlow cannot write BMP or GIF.

from data import image_folder, sources
from tests.helpers import make_config, run_script
from settings.errors import TapeloopError

COLOURS = {"red": (220, 30, 30), "green": (30, 200, 40), "blue": (40, 50, 230)}


@pytest.fixture(autouse=True)
def private_cache(tmp_path, monkeypatch):
    """Decoded folders are cached under $XDG_CACHE_HOME: keep each test's apart (scripts inherit it)."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))


def save(path, pixels: np.ndarray):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels).save(path)
    return path


def make_folder(root, per_class: int = 12, corrupt: bool = True):
    """Three colour classes; mixed sizes, RGB and grayscale, PNG, JPEG, BMP and GIF; one corrupt file."""
    rng = np.random.default_rng(0)
    suffixes = (".png", ".jpg", ".bmp", ".gif")
    for name, colour in COLOURS.items():
        for index in range(per_class):
            height, width = rng.integers(12, 40, 2)
            pixels = np.clip(np.array(colour) + rng.normal(0, 20, (height, width, 3)), 0, 255).astype(np.uint8)
            if index % 5 == 4:
                pixels = pixels.mean(axis=-1).astype(np.uint8)  # A grayscale file.
            save(root / name / f"{index:03d}{suffixes[index % len(suffixes)]}", pixels)
    if corrupt:
        (root / "red" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really a png")
    return root


def folder_config(tmp_path, root, *flags):
    return make_config(tmp_path / "run", "--dataset=image_folder", f"--data_dir={root}", "--image_size=16",
                       *flags)


def test_read_image_pads_or_crops_keeping_the_aspect_ratio_and_converts_channels(tmp_path):
    wide = np.full((10, 20, 3), 200, np.uint8)
    path = save(tmp_path / "wide.png", wide)
    padded = image_folder.read_image(path, (16, 16), 3, "pad")
    assert padded.shape == (16, 16, 3) and padded.dtype == np.uint8
    assert (padded[:3] == 0).all() and (padded[-3:] == 0).all() and (padded[5:11] == 200).all()
    cropped = image_folder.read_image(path, (16, 16), 3, "crop")
    assert (cropped == 200).all()
    gray = image_folder.read_image(save(tmp_path / "gray.png", np.full((16, 16), 90, np.uint8)), (16, 16), 3, "pad")
    assert gray.shape == (16, 16, 3) and (gray == 90).all()
    rgb = image_folder.read_image(save(tmp_path / "rgb.png", np.full((16, 16, 3), (255, 0, 0), np.uint8)),
                                  (16, 16), 1, "pad")
    assert rgb.shape == (16, 16, 1) and abs(int(rgb[0, 0, 0]) - 76) <= 1  # ITU-R 601 luma of pure red.


def test_an_image_too_thin_to_pad_is_named_as_such_and_crop_keeps_it(tmp_path):
    thin = save(tmp_path / "thin.png", np.full((1, 4000, 3), 200, np.uint8))
    images, readable, bad = image_folder.read_images([thin], (16, 16), 3, "pad")
    assert readable == [] and bad == [f"{thin} (decodes as 1x4000: padded to 16x16, a side would be under one "
                                      "pixel; --image_resize=crop keeps its middle)"]
    images, readable, bad = image_folder.read_images([thin], (16, 16), 3, "crop")
    assert readable == [0] and bad == [] and np.all(images[0] == 200)


def test_a_corrupt_file_is_named_and_stops_the_run_unless_skipped(tmp_path, caplog):
    root = make_folder(tmp_path / "images")
    with pytest.raises(TapeloopError) as error:
        sources.load(folder_config(tmp_path, root))
    message = error.value.paragraph()
    assert "broken.png" in message and "--skip_bad_images" in message and "1 of 37" in message
    caplog.set_level("WARNING", logger="absl")
    spec, splits = sources.load(folder_config(tmp_path, root, "--skip_bad_images"))
    assert "broken.png" in caplog.text
    assert spec.class_names == ("blue", "green", "red") and spec.image_shape == (16, 16, 3)
    assert sum(len(labels) for _, labels in splits.values()) == 36
    assert len(splits["test"][1]) == round(37 * 0.2)  # Held out from the folder, before decoding.


def test_train_and_test_folders_are_used_as_given_and_grayscale_has_no_channel_axis(tmp_path):
    root = tmp_path / "images"
    make_folder(root / "train", corrupt=False)
    make_folder(root / "test", per_class=4, corrupt=False)
    spec, splits = sources.load(folder_config(tmp_path, root, "--channels=1"))
    assert len(splits["train"][1]) == 36 and len(splits["test"][1]) == 12
    assert splits["train"][0].shape == (36, 16, 16) and spec.image_shape == (16, 16, 1)
    np.testing.assert_array_equal(np.bincount(splits["test"][1]), [4, 4, 4])


def test_decoded_images_are_cached_until_a_file_changes(tmp_path, monkeypatch):
    root = make_folder(tmp_path / "images", corrupt=False)
    config = folder_config(tmp_path, root)
    first = sources.load(config)[1]
    monkeypatch.setattr(image_folder, "read_image", lambda *args: pytest.fail("decoded again"))
    again = sources.load(config)[1]
    np.testing.assert_array_equal(again["train"][0], first["train"][0])
    save(root / "red" / "extra.png", np.zeros((20, 20, 3), np.uint8))
    with pytest.raises(pytest.fail.Exception, match="decoded again"):
        sources.load(config)


def test_each_stored_example_names_the_file_it_was_decoded_from_also_from_the_cache(tmp_path, monkeypatch):
    root = make_folder(tmp_path / "images")
    config = folder_config(tmp_path, root, "--skip_bad_images")
    spec, splits = sources.load(config)
    decoded = image_folder.read_image
    monkeypatch.setattr(image_folder, "read_image", lambda *args: pytest.fail("decoded again"))
    read_from_cache, npz_item = [], np.lib.npyio.NpzFile.__getitem__
    monkeypatch.setattr(np.lib.npyio.NpzFile, "__getitem__",
                        lambda cached, key: read_from_cache.append(key) or npz_item(cached, key))
    paths = sources.stored_paths(config)
    assert sorted(read_from_cache) == ["p_test", "p_train"]  # Not the images.
    assert sorted(paths["train"] + paths["test"]) == sorted(
        str(path) for path in root.glob("*/*") if path.name != "broken.png")
    for split, (images, labels) in splits.items():
        assert len(paths[split]) == len(labels)
        for image, label, path in zip(images, labels, paths[split]):
            assert spec.class_names[label] == Path(path).parent.name
            np.testing.assert_array_equal(image, decoded(path, (16, 16), 3, "pad"))
    assert sources.stored_paths(make_config(tmp_path / "run", "--dataset=synthetic")) is None


def test_a_changed_folder_replaces_its_cache_entry_and_other_settings_keep_theirs(tmp_path):
    root = make_folder(tmp_path / "images", corrupt=False)
    cache_dir = tmp_path / "cache" / "tapeloop" / "image_folder"
    sources.load(folder_config(tmp_path, root))
    sources.load(folder_config(tmp_path, root, "--image_size=8"))
    before = set(cache_dir.glob("*.npz"))
    assert len(before) == 2
    save(root / "red" / "extra.png", np.zeros((20, 20, 3), np.uint8))
    changed = sources.load(folder_config(tmp_path, root))[1]
    after = set(cache_dir.glob("*.npz"))
    assert len(after) == 2 and len(after - before) == 1  # The 16x16 entry replaced, the 8x8 one kept.
    assert len(changed["train"][1]) + len(changed["test"][1]) == 37


def test_a_folder_without_class_folders_says_how_to_arrange_it(tmp_path):
    save(tmp_path / "flat" / "one.png", np.zeros((8, 8, 3), np.uint8))
    with pytest.raises(TapeloopError, match="FOLDER/<class>/<image>"):
        sources.load(folder_config(tmp_path, tmp_path / "flat"))
    with pytest.raises(TapeloopError, match="--image_size"):
        sources.load(make_config(tmp_path, "--dataset=image_folder", f"--data_dir={tmp_path}"))


@pytest.mark.slow
def test_train_evaluate_and_predict_on_an_image_folder(tmp_path):
    root = make_folder(tmp_path / "images", per_class=40)
    run_dir = tmp_path / "run"
    trained = run_script("train", "--dataset=image_folder", f"--data_dir={root}", "--image_size=16",
                         "--skip_bad_images", "--model_width=8", "--batch_size=16", "--epochs=10",
                         "--augment_flip", "--augment_shift=0.1", f"--run_dir={run_dir}")
    assert trained.returncode == 0, trained.stderr
    results = json.loads((run_dir / "results.json").read_text())
    assert results["test"]["accuracy"] > 0.9 and set(results["test"]["per_class"]) == set(COLOURS)
    evaluated = json.loads(run_script("evaluate", f"--run_dir={run_dir}", "--output=-").stdout)
    assert evaluated["accuracy"] == pytest.approx(results["test"]["accuracy"])

    files = [str(root / name / "001.jpg") for name in COLOURS] + [str(root / "green" / "003.gif")]
    predicted = run_script("predict", f"--run_dir={run_dir}", "--top_k=2", "--output=-", *files)
    assert predicted.returncode == 0, predicted.stderr
    predictions = json.loads(predicted.stdout)
    assert [prediction["top"][0]["class"] for prediction in predictions] == [*COLOURS, "green"]
    for prediction in predictions:
        assert len(prediction["top"]) == 2 and prediction["top"][0]["probability"] >= prediction["top"][1]["probability"]
    text = run_script("predict", f"--run_dir={run_dir}", files[0]).stdout
    assert text.startswith(f"{files[0]}: red ")
    folder = json.loads(run_script("predict", f"--run_dir={run_dir}", "--output=-", str(root / "blue")).stdout)
    assert len(folder) == 40 and all(prediction["file"].startswith(str(root / "blue")) for prediction in folder)
    refused = run_script("predict", f"--run_dir={run_dir}", str(root / "red" / "broken.png"))
    assert refused.returncode == 1 and "broken.png" in refused.stderr

    diagnosed = run_script("diagnose", f"--run_dir={run_dir}", "--label_issues=test", "--output=-")
    assert diagnosed.returncode == 0, diagnosed.stderr
    report = json.loads(diagnosed.stdout)
    test_files = sources.stored_paths(folder_config(tmp_path, root, "--skip_bad_images"))["test"]
    assert report["paths"]["label_issues"]["test"] == [test_files[index] for index in report["label_issues"]["test"]]
    assert report["paths"]["duplicates"] == []  # No file of the folder is a copy of another.


@pytest.mark.slow
def test_an_exported_catalog_dataset_reads_back_pixel_for_pixel(tmp_path):
    exported = run_script("export_image_folder", "--dataset=synthetic", f"--output_dir={tmp_path / 'png'}")
    assert exported.returncode == 0, exported.stderr
    spec, splits = sources.load(folder_config(tmp_path, tmp_path / "png", "--image_size=28", "--channels=1"))
    stored = sources.synthetic_splits(sources.get_spec("synthetic"))
    assert spec.class_names == tuple(sorted(stored_name for stored_name in sources.get_spec("synthetic").class_names))
    for split in ("train", "test"):
        images, labels = splits[split]
        stored_images, stored_labels = stored[split]
        for class_id in range(10):  # Each class folder holds its images in stored order.
            np.testing.assert_array_equal(images[labels == class_id], stored_images[stored_labels == class_id])
