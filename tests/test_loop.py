import json
import os

import numpy as np
import pytest
import tensorflow as tf

from data import catalog, pipeline, sources
from models import registry, size
from tests import helpers
from tests.helpers import make_config, read_scalars, read_texts, run_script
from diagnosis import calibration
from trainer import loop, run_inputs
from trainer.averaging import WeightAverage
from trainer.batchnorm import StatisticsEstimator
from trainer.checkpoints import restore_model_weights
from trainer.precision import this_cpu
from trainer.run_inputs import model_settings
from settings.errors import TapeloopError

pytestmark = pytest.mark.slow  # Every test here runs a script or trains a model.

TRAIN_TAGS = {"loss/total", "loss/cross_entropy", "learning_rate", "accuracy",
              "gradients/global_norm", "perf/examples_per_sec"}


def checkpoint_values(folder):
    return helpers.checkpoint_values(folder, ("model/", "optimizer/", "weight_average/"))


def test_train_writes_the_run_directory_contract(tmp_path):
    run_dir = tmp_path / "run"
    results = loop.train(make_config(run_dir, "--epochs=2"))
    assert {"flags.txt", "train", "eval", "checkpoints", "best", "saved_model", "results.json"} <= set(
        os.listdir(run_dir))
    assert json.loads((run_dir / "results.json").read_text()) == results
    assert results["steps"] == 2 * (1843 // 64) and results["epochs"] == 2.0
    assert results["test"]["accuracy"] >= 0.99 and results["eval"]["accuracy"] >= 0.99  # Nearly separable.
    assert results["weights"].startswith(str(run_dir / "best"))
    assert results["wall_seconds"] > 0 and results["examples_per_sec"] > 0
    assert results["precision"]["requested"] == results["precision"]["computed_in"] == "none"
    assert {"reason", "cpu_vendor", "onednn_isa", "onednn_enabled", "cpu_native_bfloat16"} <= set(results["precision"])
    conv = 2 * 9 * (1 * 8 * 28 * 28 + 8 * 8 * 28 * 28 + 8 * 16 * 14 * 14 + 16 * 16 * 14 * 14)  # Width 8, 2 stages.
    assert results["parameters"] == 9 * (8 + 64 + 128 + 256) + 2 * (8 + 8 + 16 + 16) + 7 * 7 * 16 * 10 + 10
    assert conv < results["forward_flops_per_example"] < 1.05 * conv + 2 * 7 * 7 * 16 * 10 + 10
    assert TRAIN_TAGS <= set(read_scalars(run_dir / "train"))
    eval_scalars = read_scalars(run_dir / "eval")
    assert eval_scalars["accuracy"][-1] == (results["steps"], pytest.approx(results["eval"]["accuracy"]))
    assert "loss/total" in eval_scalars
    assert "--run_dir=" + str(run_dir) in (run_dir / "flags.txt").read_text().splitlines()
    diagnostics_text = read_texts(run_dir / "train")["diagnostics"][0][1]
    assert diagnostics_text.startswith("synthetic: train 1843, validation 205, test 512 examples")


@pytest.mark.parametrize("extra_flags", [(), ("--augment_shift=0.1", "--augment_erase=0.5", "--ema_decay=0.9",
                                              "--mixup_alpha=0.4", "--cutmix_alpha=1.0"),
                                         ("--batch_size=32", "--accumulate_steps=2")])  # Steps count updates.
def test_a_resumed_run_continues_exactly_where_it_stopped(tmp_path, extra_flags):
    flags = ("--model=mlp", "--dropout=0", "--epochs=2", *extra_flags)
    loop.train(make_config(tmp_path / "whole", *flags, "--max_steps=40"))
    stopped = loop.train(make_config(tmp_path / "resumed", *flags, "--max_steps=19"))
    assert stopped["steps"] == 19  # Mid-epoch: an epoch is 28 steps.
    resumed = loop.train(make_config(tmp_path / "resumed", *flags, "--max_steps=40"))
    assert resumed["steps"] == 40
    whole = checkpoint_values(tmp_path / "whole" / "checkpoints")
    continued = checkpoint_values(tmp_path / "resumed" / "checkpoints")
    assert whole.keys() == continued.keys()
    assert any(name.startswith("weight_average/") for name in whole) == ("--ema_decay=0.9" in extra_flags)
    for name, value in whole.items():
        np.testing.assert_allclose(continued[name], value, rtol=1e-5, atol=1e-6, err_msg=name)


def test_rerunning_a_finished_run_trains_no_further_and_keeps_its_results(tmp_path):
    first = loop.train(make_config(tmp_path))
    again = loop.train(make_config(tmp_path))
    assert again["steps"] == first["steps"]
    assert again["examples_per_sec"] == pytest.approx(first["examples_per_sec"])
    assert again["test"] == first["test"] and again["weights"] == first["weights"]


def test_resuming_with_changed_flags_says_which(tmp_path, caplog):
    loop.train(make_config(tmp_path, "--max_steps=3"))
    caplog.set_level("INFO", logger="absl")
    loop.train(make_config(tmp_path, "--max_steps=5"))
    assert "Resuming from" in caplog.text
    assert "Resuming with changed flags: --max_steps=5" in caplog.text
    assert "--max_steps=5" in (tmp_path / "flags.txt").read_text().splitlines()


def test_without_a_validation_split_the_last_weights_are_exported_and_evaluated(tmp_path):
    results = loop.train(make_config(tmp_path, "--validation_split=0"))
    assert results["eval"] is None and not (tmp_path / "best").exists()
    assert results["weights"].startswith(str(tmp_path / "checkpoints"))
    assert results["test"]["accuracy"] >= 0.99
    evaluated = json.loads(run_script("evaluate", f"--run_dir={tmp_path}", "--output=-").stdout)
    assert evaluated["weights"] == results["weights"]
    assert evaluated["accuracy"] == pytest.approx(results["test"]["accuracy"])
    refused = run_script("evaluate", f"--run_dir={tmp_path}", "--weights=best")
    assert refused.returncode == 1 and "no best/" in refused.stderr and "--weights=final or latest" in refused.stderr


def test_a_training_split_smaller_than_a_batch_is_refused_before_the_run_directory(tmp_path):
    with pytest.raises(TapeloopError, match="the training split is smaller than one batch"):
        loop.train(make_config(tmp_path / "run", "--batch_size=4096"))
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("optimizer_name", ["adamw", "sgd"])
def test_weight_decay_shrinks_kernels_but_spares_biases_and_norm_parameters(tmp_path, optimizer_name):

    config = make_config(tmp_path, f"--optimizer={optimizer_name}", "--learning_rate=0.1", "--weight_decay=0.5")
    model = registry.build_model("cnn", (28, 28, 1), 10, **model_settings(config))
    for variable in model.trainable_variables:
        variable.assign(tf.ones_like(variable))
    optimizer = run_inputs.make_optimizer(config)
    optimizer.apply_gradients([(tf.zeros_like(v), v) for v in model.trainable_variables])
    for variable in model.trainable_variables:
        decayed = variable.path.endswith("kernel")
        np.testing.assert_allclose(variable.numpy(), 1 - 0.1 * 0.5 if decayed else 1.0, rtol=1e-6,
                                   err_msg=variable.path)


def test_sgd_uses_momentum(tmp_path):
    optimizer = run_inputs.make_optimizer(make_config(tmp_path, "--optimizer=sgd", "--learning_rate=0.5",
                                                "--momentum=0.9", "--weight_decay=0"))
    variable = tf.Variable(1.0)
    for _ in range(2):
        optimizer.apply_gradients([(tf.constant(1.0), variable)])
    assert float(variable.numpy()) == pytest.approx(1 - 0.5 - (0.9 * 0.5 + 0.5))


def test_weighted_terms_and_per_class_figures_reach_tensorboard_and_results(tmp_path):
    results = loop.train(make_config(tmp_path, "--class_imbalance=20", "--class_weights=balanced",
                                     "--loss_weights=cross_entropy=1,l2=1e-4", "--epochs=2"))
    train_scalars, eval_scalars = read_scalars(tmp_path / "train"), read_scalars(tmp_path / "eval")
    assert {"loss/cross_entropy", "loss/l2"} <= set(train_scalars) and "loss/l2" in eval_scalars
    assert {"balanced_accuracy", "recall/pattern_9", "precision/pattern_0"} <= set(eval_scalars)
    for split in ("eval", "test"):
        per_class = results[split]["per_class"]
        assert list(per_class) == [f"pattern_{index}" for index in range(10)]
        recalls = [scores["recall"] for scores in per_class.values() if scores["recall"] is not None]
        assert results[split]["balanced_accuracy"] == pytest.approx(np.mean(recalls))
    assert eval_scalars["balanced_accuracy"][-1] == (results["steps"], pytest.approx(
        results["eval"]["balanced_accuracy"]))


def test_class_weights_that_do_not_fit_the_dataset_are_refused_before_the_run_directory(tmp_path):
    with pytest.raises(TapeloopError, match="--class_weights has the wrong number of weights"):
        loop.train(make_config(tmp_path / "run", "--class_weights=1,2,3"))
    assert not (tmp_path / "run").exists()


def test_a_resumed_run_logs_the_same_learning_rate_curve_as_an_uninterrupted_one(tmp_path, monkeypatch):
    flags = ("--model=mlp", "--epochs=2", "--lr_schedule=cosine", "--warmup_steps=10", "--log_every_steps=3",
             "--checkpoint_every_steps=5")
    loop.train(make_config(tmp_path / "whole", *flags))

    train_batches = loop.pipeline.train_batches

    def killed_after_20_batches(*args):  # The 21st step finds no batch: the process dies there.
        return train_batches(*args).take(20)

    with monkeypatch.context() as patch:
        patch.setattr(loop.pipeline, "train_batches", killed_after_20_batches)
        with pytest.raises(tf.errors.OutOfRangeError):
            loop.train(make_config(tmp_path / "resumed", *flags))
    loop.train(make_config(tmp_path / "resumed", *flags))  # Resumes from the checkpoint at step 20.
    whole = dict(read_scalars(tmp_path / "whole" / "train")["learning_rate"])
    resumed = dict(read_scalars(tmp_path / "resumed" / "train")["learning_rate"])
    assert len(whole) > 15 and max(whole) == 56 and whole[56] < whole[30] < whole[12] and whole[3] < whole[9]
    assert whole.keys() == resumed.keys()
    for step, rate in whole.items():
        assert resumed[step] == pytest.approx(rate, rel=1e-6), step


def test_stalled_validation_lowers_the_rate_on_plateau_then_stops_early_keeping_the_best(tmp_path):
    flags = ("--model=mlp", "--dropout=0", "--learning_rate=1e-9", "--epochs=10", "--lr_schedule=plateau",
             "--plateau_metric=accuracy", "--plateau_patience=1", "--plateau_factor=0.5",
             "--early_stopping_patience=3", "--log_every_steps=28")
    results = loop.train(make_config(tmp_path, *flags))
    assert results["stopped_early"] and results["steps"] == 4 * 28  # Accuracy best at epoch 1, then 3 without gain.
    eval_losses = dict(read_scalars(tmp_path / "eval")["loss/total"])  # Every accuracy ties: the lowest loss is kept.
    assert results["weights"] == str(tmp_path / "best" / f"ckpt-{min(eval_losses, key=eval_losses.get)}")
    rates = dict(read_scalars(tmp_path / "train")["learning_rate"])
    assert [rates[step] / 1e-9 for step in (28, 56, 84, 112)] == pytest.approx([1, 1, 0.5, 0.25])
    again = loop.train(make_config(tmp_path, *flags))  # A rerun does not train on past the stop.
    assert again["steps"] == results["steps"] and again["stopped_early"]


def test_early_stopping_and_best_follow_the_chosen_metric(tmp_path):
    results = loop.train(make_config(tmp_path, "--early_stopping_metric=loss", "--epochs=2"))
    eval_losses = dict(read_scalars(tmp_path / "eval")["loss/total"])
    best_step = min(eval_losses, key=eval_losses.get)
    assert results["weights"].endswith(f"ckpt-{best_step}")


def test_steps_per_loop_trains_the_same_weights_and_logs_at_loop_boundaries(tmp_path):
    flags = ("--model=mlp", "--dropout=0", "--epochs=1", "--log_every_steps=5")
    loop.train(make_config(tmp_path / "one", *flags))
    loop.train(make_config(tmp_path / "four", *flags, "--steps_per_loop=4"))
    one, four = checkpoint_values(tmp_path / "one" / "checkpoints"), checkpoint_values(tmp_path / "four" / "checkpoints")
    for name, value in one.items():
        np.testing.assert_allclose(four[name], value, rtol=1e-5, atol=1e-6, err_msg=name)
    logged = [step for step, _ in read_scalars(tmp_path / "four" / "train")["loss/total"]]
    assert logged == [5, 13, 17, 21, 25, 28]  # Loops end at 1, 5, 9, ..., 25, 28; logs where one passed a 5.


# float16 convolutions are emulated on this CPU (45 s for the cnn): its loss scaling is tested on an mlp.
@pytest.mark.parametrize("precision, model", [
    pytest.param("bfloat16", ("--model=cnn",), marks=pytest.mark.skipif(
        this_cpu().held_below_bfloat16, reason="ONEDNN_MAX_CPU_ISA holds oneDNN below bfloat16 on a CPU that has "
        "it, where explicit bfloat16 is refused (tests/test_precision.py)")),
    ("float16", ("--model=mlp", "--model_width=128"))])
def test_mixed_precision_trains_with_float32_variables_and_exports(tmp_path, precision, model):
    results = loop.train(make_config(tmp_path, f"--mixed_precision={precision}", *model, "--epochs=2"))
    assert results["test"]["accuracy"] >= 0.99
    assert results["precision"]["computed_in"] == precision
    reader = tf.train.load_checkpoint(results["weights"])
    kernels = [name for name, _ in tf.train.list_variables(results["weights"]) if name.startswith("model/")
               and "kernel" in name and "OPTIMIZER_SLOT" not in name]
    assert kernels and all(reader.get_tensor(name).dtype == np.float32 for name in kernels)
    probabilities = tf.saved_model.load(str(tmp_path / "saved_model")).signatures["serving_default"](
        images=tf.zeros((2, 28, 28), tf.uint8))["probabilities"]
    assert probabilities.dtype == tf.float32


def test_image_histogram_and_profile_schedules(tmp_path):
    from tests.helpers import read_tensors

    loop.train(make_config(tmp_path, "--epochs=2", "--image_summary_every_steps=20", "--histogram_every_steps=25",
                           "--profile_steps=3,6", "--steps_per_loop=4"))
    train = read_tensors(tmp_path / "train")
    assert [step for step, _ in train["inputs"]] == [0, 21, 40]  # Loops end at 1, 5, ..., 21, 25, 28, 32, ..., 40.
    gradient_tags = [tag for tag in train if tag.startswith("gradients/") and "global_norm" not in tag]
    assert gradient_tags and [step for step, _ in train[gradient_tags[0]]] == [25, 52]
    assert list((tmp_path / "plugins" / "profile").glob("*/*.xplane.pb"))
    evaluation = read_tensors(tmp_path / "eval")
    assert [step for step, _ in evaluation["confusion_matrix"]] == [28, 56]


def test_a_truncated_latest_checkpoint_is_reported_and_the_one_before_resumed(tmp_path, caplog):
    loop.train(make_config(tmp_path, "--model=mlp", "--epochs=2"))
    data_file = tmp_path / "checkpoints" / "ckpt-56.data-00000-of-00001"
    data_file.write_bytes(data_file.read_bytes()[:100])
    caplog.set_level("INFO", logger="absl")
    results = loop.train(make_config(tmp_path, "--model=mlp", "--epochs=3"))
    assert "the checkpoint" in caplog.text and "ckpt-56 is damaged; trying the one before" in caplog.text
    assert "Resuming from" in caplog.text and "at step 28" in caplog.text
    assert results["steps"] == 84


def test_deterministic_runs_log_identical_losses(tmp_path):
    for name in ("first", "second"):
        result = run_script("train", "--dataset=synthetic", "--model_width=8", "--max_steps=12", "--log_every_steps=3",
                            "--deterministic", f"--run_dir={tmp_path / name}")
        assert result.returncode == 0, result.stderr
    first, second = read_scalars(tmp_path / "first" / "train"), read_scalars(tmp_path / "second" / "train")
    assert len(first["loss/total"]) == 4 and first["loss/total"] == second["loss/total"]
    other_seed = run_script("train", "--dataset=synthetic", "--model_width=8", "--max_steps=4", "--log_every_steps=4",
                            "--deterministic", "--seed=1", f"--run_dir={tmp_path / 'other_seed'}")
    assert other_seed.returncode == 0, other_seed.stderr
    assert read_scalars(tmp_path / "other_seed" / "train")["loss/total"][0] != first["loss/total"][0]  # It can fail.


def test_weight_averaging_evaluates_selects_and_exports_the_averaged_weights(tmp_path):
    results = loop.train(make_config(tmp_path, "--epochs=2", "--ema_decay=0.99"))
    spec, config = catalog.SYNTHETIC, make_config(tmp_path, "--ema_decay=0.99")
    images, labels = sources.load_dataset(spec)["test"]
    averaged, raw = run_inputs.build_model(config, spec), run_inputs.build_model(config, spec)
    restore_model_weights(averaged, str(tmp_path / "best"), WeightAverage(averaged, 0.99))
    restore_model_weights(raw, str(tmp_path / "best"))
    inputs = pipeline.to_model_input(images[:64], spec, config.standardize)
    served = tf.saved_model.load(str(tmp_path / "saved_model")).signatures["serving_default"](
        images=tf.constant(images[:64]))["probabilities"]
    np.testing.assert_allclose(served, tf.nn.softmax(averaged(inputs)), atol=1e-5)
    assert not np.allclose(served, tf.nn.softmax(raw(inputs)), atol=1e-3)
    evaluated = run_script("evaluate", f"--run_dir={tmp_path}", "--output=-")
    assert json.loads(evaluated.stdout)["accuracy"] == pytest.approx(results["test"]["accuracy"])
    # Validation scores were taken with the average: the last one is the final weights' score.
    assert read_scalars(tmp_path / "eval")["accuracy"][-1][1] == pytest.approx(results["eval"]["accuracy"])


def test_precise_batch_norm_scores_and_exports_re_estimated_statistics_and_trains_on_the_moving_ones(tmp_path):
    # Keras' momentum: the default's moving averages (a fifth of these 56 steps) come too close to the
    # re-estimated statistics for the two to be told apart below.
    results = loop.train(make_config(tmp_path, "--epochs=2", "--precise_bn_batches=3", "--batchnorm_momentum=0.99"))
    spec, config = catalog.SYNTHETIC, make_config(tmp_path, "--precise_bn_batches=3")
    data = pipeline.prepare_data(config)
    images = data.test[0][:64]
    checkpointed, precise = run_inputs.build_model(config, spec), run_inputs.build_model(config, spec)
    restore_model_weights(checkpointed, str(tmp_path / "best"))
    restore_model_weights(precise, str(tmp_path / "best"))
    StatisticsEstimator(precise, data.train, spec, config).estimate(3)
    inputs = pipeline.to_model_input(images, spec, config.standardize)
    served = tf.saved_model.load(str(tmp_path / "saved_model")).signatures["serving_default"](
        images=tf.constant(images))["probabilities"]
    np.testing.assert_allclose(served, tf.nn.softmax(precise(inputs)), atol=1e-5)
    assert not np.allclose(served, tf.nn.softmax(checkpointed(inputs)), atol=1e-3)  # best/ keeps the moving ones.
    evaluated = json.loads(run_script("evaluate", f"--run_dir={tmp_path}", "--output=-").stdout)
    assert evaluated["accuracy"] == pytest.approx(results["test"]["accuracy"])
    all_served = tf.saved_model.load(str(tmp_path / "saved_model")).signatures["serving_default"](
        images=tf.constant(data.test[0]))["probabilities"].numpy()
    expected_ece = calibration.expected_calibration_error(all_served, data.test[1])
    assert evaluated["expected_calibration_error"] == pytest.approx(expected_ece, abs=1e-4)


def test_the_after_evaluation_call_sees_every_evaluation_and_can_stop_the_run(tmp_path):
    reports = []

    def after_evaluation(epochs_done, scores):
        reports.append((epochs_done, scores["accuracy"]))
        return epochs_done == 2  # Stop after the second of three epochs.

    results = loop.train(make_config(tmp_path / "run", "--epochs=3", "--noscore_test"), after_evaluation)
    assert [epochs for epochs, _ in reports] == [1, 2]
    assert results["stopped_by_caller"] and not results["stopped_early"]
    assert results["steps"] == 2 * (1843 // 64)
    assert results["test"] is None and results["eval"]["accuracy"] == max(accuracy for _, accuracy in reports)
    assert json.loads((tmp_path / "run" / "results.json").read_text()) == results  # Finished as usual.
    assert (tmp_path / "run" / "saved_model").is_dir()


def test_a_resnet_trains_through_the_loop_and_results_give_its_size(tmp_path):
    config = make_config(tmp_path, "--model=resnet", "--model_depth=8", "--model_width=8", "--epochs=2",
                         "--precise_bn_batches=8")
    results = loop.train(config)
    assert results["test"]["accuracy"] >= 0.85  # 0.94 measured; 0.22 without --precise_bn_batches.
    model = registry.build_model("resnet", catalog.SYNTHETIC.image_shape, 10, width=8, depth=8, dropout=0.3)
    assert results["parameters"] == size.parameter_count(model)
    assert results["forward_flops_per_example"] == size.forward_flops(model, catalog.SYNTHETIC.image_shape)
    images, labels = sources.load(config)[1]["test"]
    probabilities = tf.saved_model.load(str(tmp_path / "saved_model")).signatures["serving_default"](
        images=tf.constant(images))["probabilities"]
    assert np.mean(np.argmax(probabilities, axis=1) == labels) == pytest.approx(results["test"]["accuracy"])
