import numpy as np
import pytest
import tensorflow as tf

from data import catalog, pipeline
from tests.helpers import make_config


def labelled_images(count: int):
    """Images whose every pixel equals the example's index, so pairing can be checked after batching."""
    indices = np.arange(count)
    return (np.broadcast_to(indices[:, None, None] % 256, (count, 28, 28)).astype(np.uint8),
            (indices % 10).astype(np.uint8))


def test_split_validation_is_disjoint_complete_and_fixed_by_seed():
    train, validation = pipeline.split_validation(100, 0.2, seed=3)
    assert len(validation) == 20 and len(train) == 80
    assert not set(train) & set(validation) and len(set(train) | set(validation)) == 100
    np.testing.assert_array_equal(validation, pipeline.split_validation(100, 0.2, seed=3)[1])
    assert set(pipeline.split_validation(100, 0.2, seed=4)[1]) != set(validation)


def test_zero_validation_split_keeps_everything_for_training():
    train, validation = pipeline.split_validation(10, 0.0, seed=0)
    assert validation is None and np.array_equal(train, np.arange(10))


def test_to_model_input_scales_uint8_adds_channels_and_standardizes():
    raw = tf.constant([[[0, 255], [51, 102]]], tf.uint8)
    scaled = pipeline.to_model_input(raw, catalog.MNIST, standardize=False)
    assert scaled.dtype == tf.float32 and scaled.shape == (1, 2, 2, 1)
    np.testing.assert_allclose(scaled.numpy()[0, :, :, 0], [[0.0, 1.0], [0.2, 0.4]], rtol=1e-6)
    standardized = pipeline.to_model_input(raw, catalog.MNIST, standardize=True)
    np.testing.assert_allclose(standardized.numpy(), (scaled.numpy() - 0.1307) / 0.3081, rtol=1e-5)


def test_float_images_are_mapped_from_their_input_range():
    images = tf.fill((2, 28, 28), 127.5)
    np.testing.assert_allclose(pipeline.to_model_input(images, catalog.MNIST, False, (0.0, 255.0)).numpy(), 0.5)
    signed = np.random.default_rng(0).uniform(-1.0, 1.0, (2, 28, 28)).astype(np.float32)
    np.testing.assert_allclose(pipeline.to_model_input(signed, catalog.MNIST, False, (-1.0, 1.0)).numpy()[..., 0],
                               (signed + 1.0) / 2.0, rtol=1e-6, atol=1e-7)
    low, high = pipeline.model_input_range(catalog.MNIST, standardize=True)
    assert (low, high) == pytest.approx(((0 - 0.1307) / 0.3081, (1 - 0.1307) / 0.3081))
    assert pipeline.model_input_range(catalog.MNIST, standardize=False) == (0.0, 1.0)


def test_to_model_input_keeps_float_images_in_their_range():
    images = tf.fill((2, 28, 28, 1), 0.5)
    np.testing.assert_allclose(pipeline.to_model_input(images, catalog.MNIST, False).numpy(), 0.5)


def test_train_batches_are_full_shuffled_and_keep_images_with_labels(tmp_path):
    config = make_config(tmp_path, "--batch_size=16", "--nostandardize")
    images, labels = labelled_images(70)
    example_weights = np.arange(70, dtype=np.float32)
    batches = list(pipeline.train_batches((images, labels), example_weights, catalog.MNIST, config, epoch=0))
    assert len(batches) == pipeline.steps_per_epoch(70, 16) == 4
    seen = []
    for batch_images, batch_labels, batch_weights in batches:
        assert batch_images.shape == (16, 28, 28, 1) and batch_images.dtype == tf.float32
        assert batch_labels.dtype == tf.int32
        index = np.rint(batch_images.numpy()[:, 0, 0, 0] * 255).astype(int)
        np.testing.assert_array_equal(index % 10, batch_labels.numpy())
        np.testing.assert_array_equal(index, batch_weights.numpy())
        seen.extend(index)
    assert len(set(seen)) == 64 and seen != sorted(seen)


def test_epoch_order_is_a_function_of_seed_and_epoch_and_skipping_resumes_it(tmp_path):
    config = make_config(tmp_path, "--batch_size=8")
    split = labelled_images(64)

    def order(epoch, skip=0):
        return [labels.numpy().tolist() for _, labels, _ in
                pipeline.train_batches(split, np.ones(64, np.float32), catalog.MNIST, config, epoch, skip)]

    assert order(0) == order(0)
    assert order(0) != order(1)
    assert order(1, skip=3) == order(1)[3:]


def test_eval_batches_cover_every_example_once_in_order(tmp_path):
    config = make_config(tmp_path, "--eval_batch_size=32")
    images, labels = labelled_images(70)
    batches = list(pipeline.eval_batches((images, labels), catalog.MNIST, config))
    assert [len(batch_labels) for _, batch_labels in batches] == [32, 32, 6]
    np.testing.assert_array_equal(np.concatenate([b.numpy() for _, b in batches]), labels)


def test_prepare_data_splits_train_and_leaves_test_alone(tmp_path):
    config = make_config(tmp_path, "--validation_split=0.25")
    data = pipeline.prepare_data(config)
    train_size = len(data.train[1]) + len(data.validation[1])
    assert len(data.validation[1]) == pytest.approx(train_size / 4, abs=1)
    assert len(data.test[1]) == 512


def test_pipelines_run_without_the_autotuner_whose_thread_stalls_iterator_teardown(tmp_path):
    config = make_config(tmp_path)
    images, labels = labelled_images(70)
    for batches in (pipeline.train_batches((images, labels), np.ones(70, np.float32), catalog.MNIST, config, 0),
                    pipeline.eval_batches((images, labels), catalog.MNIST, config)):
        assert batches.options().autotune.enabled is False


def test_long_tail_subset_keeps_a_geometric_share_of_each_class_the_same_way_every_time():
    labels = np.repeat(np.arange(10), 1000)
    kept = pipeline.long_tail_subset(labels, 10, ratio=100.0)
    counts = np.bincount(labels[kept], minlength=10)
    np.testing.assert_array_equal(counts, np.rint(1000 * 100.0 ** (-np.arange(10) / 9)).astype(int))
    assert counts[0] == 1000 and counts[-1] == 10
    np.testing.assert_array_equal(kept, pipeline.long_tail_subset(labels, 10, ratio=100.0))
    assert np.all(np.diff(kept) > 0)


def test_prepare_data_subsamples_for_class_imbalance_before_holding_out_validation(tmp_path):
    data = pipeline.prepare_data(make_config(tmp_path, "--class_imbalance=20", "--validation_split=0.1"))
    counts = np.bincount(np.concatenate([data.train[1], data.validation[1]]), minlength=10)
    full_counts = np.bincount(pipeline.sources.load_dataset(catalog.SYNTHETIC)["train"][1], minlength=10)
    np.testing.assert_array_equal(counts, np.maximum(1, np.rint(full_counts * 20.0 ** (-np.arange(10) / 9))))
    assert len(data.test[1]) == 512  # The test split stays balanced.


def test_sample_weights_follow_their_examples_through_the_validation_split(tmp_path):
    stored_images = pipeline.sources.load_dataset(catalog.SYNTHETIC)["train"][0]
    np.save(tmp_path / "weights.npy", np.arange(len(stored_images), dtype=np.float64))
    data = pipeline.prepare_data(make_config(tmp_path, f"--sample_weights={tmp_path / 'weights.npy'}"))
    for image, weight in zip(data.train[0][:20], data.train_sample_weights[:20]):
        np.testing.assert_array_equal(image, stored_images[int(weight)])
    assert len(data.train_sample_weights) == len(data.train[1])


def test_one_hot_label_format_gives_float_rows_in_training_and_evaluation(tmp_path):
    config = make_config(tmp_path, "--label_format=one_hot", "--batch_size=8", "--eval_batch_size=8")
    images, labels = labelled_images(16)
    _, train_labels, _ = next(iter(pipeline.train_batches((images, labels), np.ones(16, np.float32),
                                                          catalog.MNIST, config, epoch=0)))
    _, eval_labels = next(iter(pipeline.eval_batches((images, labels), catalog.MNIST, config)))
    for batch_labels in (train_labels, eval_labels):
        assert batch_labels.shape == (8, 10) and batch_labels.dtype == tf.float32
        np.testing.assert_array_equal(batch_labels.numpy().sum(axis=1), 1.0)
    np.testing.assert_array_equal(eval_labels.numpy().argmax(axis=1), labels[:8])


def dot_image(row: int, column: int, size: int = 9) -> np.ndarray:
    image = np.zeros((1, size, size, 1), np.float32)
    image[0, row, column, 0] = 1.0
    return image


def bright_pixels(images: tf.Tensor) -> list[list[int]]:
    return np.argwhere(images.numpy()[0, :, :, 0] > 0.5).tolist()


def test_transform_images_shifts_rotates_and_zooms_about_the_centre():
    right_of_centre = dot_image(4, 6)
    assert bright_pixels(pipeline.transform_images(right_of_centre, 0.0, 1.0, 2.0, 0.0, 0.0)) == [[4, 8]]
    assert bright_pixels(pipeline.transform_images(right_of_centre, 0.0, 1.0, -1.0, 3.0, 0.0)) == [[7, 5]]
    # Counter-clockwise on screen (rows grow downwards): right of centre goes up.
    assert bright_pixels(pipeline.transform_images(right_of_centre, np.pi / 2, 1.0, 0.0, 0.0, 0.0)) == [[2, 4]]
    assert bright_pixels(pipeline.transform_images(right_of_centre, 0.0, 2.0, 0.0, 0.0, 0.0)) == [[4, 8]]
    shifted_out = pipeline.transform_images(right_of_centre, 0.0, 1.0, 5.0, 0.0, background=-0.5).numpy()
    np.testing.assert_array_equal(shifted_out[:, :, :5], -0.5)  # Uncovered pixels get the background,
    np.testing.assert_array_equal(shifted_out[:, :, 5:], 0.0)  # the dot left the image.


def augmented_batches(tmp_path, *flags: str, epoch: int = 0, skip: int = 0, count: int = 64):
    config = make_config(tmp_path, "--batch_size=16", *flags)
    images, labels = labelled_images(count)
    images = np.random.default_rng(0).integers(0, 256, images.shape, dtype=np.uint8)
    batches = pipeline.train_batches((images, labels), np.ones(count, np.float32), catalog.MNIST, config,
                                     epoch, skip)
    return config, [batch for batch in batches]


def test_augmentation_changes_images_only_within_the_model_input_range_and_keeps_labels(tmp_path):
    _, plain = augmented_batches(tmp_path)
    config, augmented = augmented_batches(tmp_path, "--augment_shift=0.1", "--augment_rotation=15",
                                          "--augment_scale=0.1", "--augment_erase=0.5")
    low, high = pipeline.model_input_range(catalog.MNIST, config.standardize)
    for (plain_images, plain_labels, _), (images, labels, _) in zip(plain, augmented):
        np.testing.assert_array_equal(labels, plain_labels)
        differs = np.any(images.numpy() != plain_images.numpy(), axis=(1, 2, 3))
        assert differs.all()
        assert images.numpy().min() >= low - 1e-5 and images.numpy().max() <= high + 1e-5


def test_augmentation_is_a_function_of_seed_and_step_so_resumes_see_the_same_batches(tmp_path):
    flags = ("--augment_shift=0.2", "--augment_erase=1.0")
    _, whole_epoch = augmented_batches(tmp_path, *flags, epoch=1)
    _, resumed = augmented_batches(tmp_path, *flags, epoch=1, skip=2)
    for (images, _, _), (resumed_images, _, _) in zip(whole_epoch[2:], resumed):
        np.testing.assert_array_equal(images.numpy(), resumed_images.numpy())
    _, other_seed = augmented_batches(tmp_path, *flags, "--seed=1", epoch=1)
    assert not np.array_equal(whole_epoch[0][0].numpy(), other_seed[0][0].numpy())
    # Every step draws afresh, so the same images differ between epochs.
    assert not np.array_equal(whole_epoch[0][0].numpy(), augmented_batches(tmp_path, *flags, epoch=2)[1][0][0])


MIXED = ("--randaugment_layers=2", "--mixup_alpha=0.4", "--cutmix_alpha=1.0", "--augment_erase=0.5")


def test_randaugment_and_mixing_give_soft_targets_in_range_and_resume_exactly(tmp_path):
    config, whole_epoch = augmented_batches(tmp_path, *MIXED, epoch=1)
    _, resumed = augmented_batches(tmp_path, *MIXED, epoch=1, skip=2)
    for batch, resumed_batch in zip(whole_epoch[2:], resumed):
        for part, resumed_part in zip(batch, resumed_batch):
            np.testing.assert_array_equal(part, resumed_part)
    low, high = pipeline.model_input_range(catalog.MNIST, config.standardize)
    _, plain = augmented_batches(tmp_path, epoch=1)
    for (images, targets, weights), (plain_images, labels, _) in zip(whole_epoch, plain):
        assert targets.dtype == tf.float32 and targets.shape == (16, 10)
        rows = targets.numpy()
        assert rows.min() >= 0 and np.abs(rows.sum(axis=1) - 1).max() < 1e-6
        assert (rows[np.arange(16), labels.numpy()] > 0).all()  # Every example keeps a share of its class.
        assert (rows.max(axis=1) < 1).mean() > 0.5  # Most examples are mixed with another class.
        np.testing.assert_allclose(weights, 1.0)  # Weights of 1 mix to 1.
        assert images.numpy().min() >= low - 1e-5 and images.numpy().max() <= high + 1e-5
        assert np.any(images.numpy() != plain_images.numpy(), axis=(1, 2, 3)).all()
    _, other_seed = augmented_batches(tmp_path, *MIXED, "--seed=1", epoch=1)
    assert not np.array_equal(whole_epoch[0][1], other_seed[0][1])


def test_flip_mirrors_about_half_the_images_and_nothing_else(tmp_path):
    settings = pipeline.AugmentSettings(flip=True)
    images = tf.random.stateless_uniform([400, 28, 28, 1], [0, 0])
    flipped = pipeline.augment(images, settings, tf.constant([0, 0], tf.int64), background=0.0, mean_pixel=0.5)
    same = np.all(flipped.numpy() == images.numpy(), axis=(1, 2, 3))
    mirrored = np.all(flipped.numpy() == images.numpy()[:, :, ::-1], axis=(1, 2, 3))
    assert np.all(same ^ mirrored) and 160 < mirrored.sum() < 240


def test_random_erasing_fills_one_rectangle_of_2_to_25_percent_with_the_mean_pixel(tmp_path):
    settings = pipeline.AugmentSettings(erase=1.0)
    images = tf.fill([200, 28, 28, 1], 3.0)
    erased = pipeline.augment(images, settings, tf.constant([0, 1], tf.int64), background=0.0,
                              mean_pixel=0.5).numpy()[..., 0] == 0.5
    # The reference: the same stateless draws, turned into rectangles here in NumPy.
    erase_seed = tf.random.experimental.stateless_split(tf.constant([0, 1], tf.int64), 4)[2]
    draws = tf.random.stateless_uniform([5, 200], erase_seed).numpy().astype(np.float64)
    area = (0.02 + draws[0] * 0.23) * 784
    aspect = np.exp(np.log(0.3) + draws[1] * (np.log(3.3) - np.log(0.3)))
    heights = np.minimum(np.round(np.sqrt(area * aspect)), 28).astype(int)
    widths = np.minimum(np.round(np.sqrt(area / aspect)), 28).astype(int)
    tops, lefts = np.floor(draws[2] * (28 - heights + 1)).astype(int), np.floor(draws[3] * (28 - widths + 1)).astype(int)
    for mask, top, left, height, width in zip(erased, tops, lefts, heights, widths):
        expected = np.zeros((28, 28), bool)
        expected[top:top + height, left:left + width] = True
        np.testing.assert_array_equal(mask, expected)
    none_erased = pipeline.augment(images, pipeline.AugmentSettings(), tf.constant([0, 1], tf.int64), 0.0, 0.5)
    np.testing.assert_array_equal(none_erased.numpy(), images.numpy())


def test_flipping_digits_is_refused_because_a_mirror_changes_their_class(tmp_path):
    with pytest.raises(pipeline.TapeloopError) as error:
        pipeline.prepare_data(make_config(tmp_path, "--dataset=mnist", "--augment_flip"))
    message = error.value.paragraph()
    assert "[data]" in message and "mirror" in message and "drop --augment_flip" in message
    with pytest.raises(pipeline.TapeloopError, match="--tta=shift"):
        pipeline.test_time_views(tf.zeros([1, 28, 28, 1]), catalog.MNIST, True, "flip")


def test_test_time_views_are_the_images_and_their_mirror_or_one_pixel_shifts():
    images = tf.random.stateless_uniform([3, 28, 28, 1], [1, 2])
    original, mirror = pipeline.test_time_views(images, catalog.FASHION_MNIST, True, "flip")
    np.testing.assert_array_equal(mirror.numpy(), images.numpy()[:, :, ::-1])
    views = pipeline.test_time_views(images, catalog.MNIST, False, "shift")
    assert len(views) == 5
    np.testing.assert_allclose(views[1].numpy()[:, :, 1:], images.numpy()[:, :, :-1], atol=1e-6)
    np.testing.assert_array_equal(views[1].numpy()[:, :, 0], 0.0)


def test_replica_slices_of_a_global_batch_put_together_are_the_global_batch(tmp_path):
    config = make_config(tmp_path, "--batch_size=16", "--nostandardize")
    images, labels = labelled_images(64)
    weights = np.ones(64, np.float32)
    whole = [batch[1].numpy() for batch in pipeline.train_batches((images, labels), weights, catalog.MNIST,
                                                                   config, epoch=0, skip_batches=1)]
    replica_slices = [
        [batch[1].numpy() for batch in pipeline.train_batches((images, labels), weights, catalog.MNIST, config,
                                                              epoch=0, skip_batches=1, replica_shard=shard)]
        for shard in ((0, 2, 4), (2, 2, 4))]  # Two input pipelines (workers) of two replicas each.
    assert len(replica_slices[0]) == 2 * len(whole) and all(len(labels) == 4 for labels in replica_slices[0])
    for step, batch_labels in enumerate(whole):
        together = np.concatenate([replica_slices[0][2 * step], replica_slices[0][2 * step + 1],
                                   replica_slices[1][2 * step], replica_slices[1][2 * step + 1]])
        np.testing.assert_array_equal(together, batch_labels)
