"""--init_from: variables matched by place and shape, the other run's scored weights loaded, the
rest left initialized and named, and runs that cannot be started from refused."""

import dataclasses
import json
import shutil

import numpy as np
import pytest
import tensorflow as tf

from data import catalog
from models import registry
from tests.helpers import SMALL_RUN, assert_one_paragraph_error, make_config, run_script
from trainer import loop, run_inputs, warm_start
from trainer.averaging import WeightAverage
from trainer.checkpoints import final_weights_dir, restore_model_weights
from settings.errors import TapeloopError
from trainer.flags import parse_config


@pytest.mark.parametrize("name, depth", [("cnn", 2), ("resnet", 8)])
def test_variable_paths_are_the_keys_tf_train_checkpoint_writes(tmp_path, name, depth):
    model = registry.build_model(name, (28, 28, 1), 10, width=4, depth=depth, dropout=0.0)
    written = tf.train.Checkpoint(model=model).write(str(tmp_path / "ckpt"))
    keys = {key.removesuffix("/.ATTRIBUTES/VARIABLE_VALUE"): shape for key, shape in tf.train.list_variables(written)
            if key.startswith("model/")}
    paths = warm_start.variables_by_path(model)
    assert {f"model/{path}": list(variable.shape) for path, variable in paths.items()} == keys
    assert len(paths) == len(model.variables)


def test_a_reference_names_the_run_and_which_weights():
    assert warm_start.split_reference("runs/a") == ("runs/a", None)
    assert warm_start.split_reference("runs/a:best") == ("runs/a", "best")
    assert warm_start.split_reference("runs/a:final") == ("runs/a", "final")
    assert warm_start.split_reference("c:/x:y") == ("c:/x:y", None)


def small_config(tmp_path, *flags):
    return parse_config([*SMALL_RUN, f"--run_dir={tmp_path / 'new'}", *flags])


@pytest.mark.slow
def test_every_variable_is_loaded_from_a_run_of_the_same_model_as_it_scored(tmp_path, synthetic_run):
    config = small_config(tmp_path, f"--init_from={synthetic_run}")
    model = run_inputs.build_model(config, catalog.SYNTHETIC)
    run_inputs.warm_start_model(config, model, catalog.SYNTHETIC)
    scored = run_inputs.build_model(config, catalog.SYNTHETIC)
    restore_model_weights(scored, final_weights_dir(str(synthetic_run)))
    weights = [(ours, theirs) for ours, theirs in zip(model.variables, scored.variables)
               if ours.dtype.startswith("float")]
    assert len(weights) == len(model.weights) == len(model.variables) - 1  # Not the dropout's random state.
    for ours, theirs in weights:
        np.testing.assert_array_equal(ours.numpy(), theirs.numpy())


@pytest.mark.slow
def test_a_head_for_another_class_count_keeps_its_initialization_and_is_named(tmp_path, synthetic_run, caplog):
    three_classes = dataclasses.replace(catalog.SYNTHETIC, class_names=("a", "b", "c"))
    config = small_config(tmp_path, f"--init_from={synthetic_run}:final")
    model = run_inputs.build_model(config, three_classes)
    initial_head = model.head.kernel.numpy()
    caplog.set_level("INFO", logger="absl")
    run_inputs.warm_start_model(config, model, three_classes)
    np.testing.assert_array_equal(model.head.kernel.numpy(), initial_head)
    source = run_inputs.build_model(config, catalog.SYNTHETIC)
    restore_model_weights(source, str(synthetic_run / "checkpoints"))
    np.testing.assert_array_equal(model.stages.layers[0].layers[0].conv.kernel.numpy(),
                                  source.stages.layers[0].layers[0].conv.kernel.numpy())
    features = model.head.kernel.shape[0]
    total = len(warm_start.weights_by_path(model))
    assert f"loaded {total - 2} of {total} variables; kept their initialization: head/_kernel [{features}, 3] " \
           "(the other run's classes differ); head/bias [3] (the other run's classes differ)." in caplog.text
    other_ten = dataclasses.replace(catalog.SYNTHETIC, class_names=tuple(f"other_{index}" for index in range(10)))
    same_shape = run_inputs.build_model(config, other_ten)  # A head of the same shape for other classes: not loaded.
    initial_head = same_shape.head.kernel.numpy()
    run_inputs.warm_start_model(config, same_shape, other_ten)
    np.testing.assert_array_equal(same_shape.head.kernel.numpy(), initial_head)


@pytest.mark.slow
def test_a_run_of_another_model_or_a_folder_that_is_no_run_is_refused(tmp_path, synthetic_run):
    config = small_config(tmp_path, "--model=mlp", f"--init_from={synthetic_run}")
    with pytest.raises(TapeloopError, match=r"\[init_from\] --init_from=.* is a run of another model. Expected "
                                            r"a run of --model=mlp; found --model=cnn"):
        run_inputs.warm_start_model(config, run_inputs.build_model(config, catalog.SYNTHETIC), catalog.SYNTHETIC)
    config = small_config(tmp_path, "--model_width=16", f"--init_from={synthetic_run}")
    with pytest.raises(TapeloopError, match=r"\[init_from\] --init_from=.* shares no kernel with this model.* found "
                                            r"1 of this model's 22 variables matching"):  # The head's bias.
        run_inputs.warm_start_model(config, run_inputs.build_model(config, catalog.SYNTHETIC), catalog.SYNTHETIC)
    config = small_config(tmp_path, f"--init_from={tmp_path}")
    with pytest.raises(TapeloopError, match=r"\[init_from\] --init_from=.* is not a run to start from"):
        run_inputs.warm_start_model(config, run_inputs.build_model(config, catalog.SYNTHETIC), catalog.SYNTHETIC)


@pytest.mark.slow
def test_a_warm_started_run_begins_where_the_other_run_ended_and_a_bad_reference_writes_nothing(
        tmp_path, synthetic_run):
    source = json.loads((synthetic_run / "results.json").read_text())
    started = run_script("train", *SMALL_RUN, f"--init_from={synthetic_run}", "--max_steps=1", "--learning_rate=1e-9",
                         f"--run_dir={tmp_path / 'warm'}")
    assert started.returncode == 0, started.stderr
    assert f"Warm start from {synthetic_run / 'best'}" in started.stderr
    assert "loaded 22 of 22 variables." in started.stderr
    warm = json.loads((tmp_path / "warm" / "results.json").read_text())
    assert warm["test"]["accuracy"] == pytest.approx(source["test"]["accuracy"], abs=0.01)  # One step at 1e-9.
    stopped = run_script("train", *SMALL_RUN, f"--init_from={tmp_path / 'gone'}", "--max_steps=1",
                         f"--run_dir={tmp_path / 'resumed'}")
    assert stopped.returncode == 1  # The other run is not there: refused.
    copied = tmp_path / "gone"
    shutil.copytree(synthetic_run, copied)
    first = run_script("train", *SMALL_RUN, f"--init_from={copied}", "--max_steps=1", f"--run_dir={tmp_path / 'resumed'}")
    assert first.returncode == 0, first.stderr
    shutil.rmtree(copied)  # A resume needs only its own checkpoint.
    resumed = run_script("train", *SMALL_RUN, f"--init_from={copied}", "--max_steps=2", f"--run_dir={tmp_path / 'resumed'}")
    assert resumed.returncode == 0, resumed.stderr
    assert "not from --init_from" in resumed.stderr and "at step 1." in resumed.stderr
    refused = run_script("train", *SMALL_RUN, f"--init_from={tmp_path / 'nowhere'}", f"--run_dir={tmp_path / 'bad'}")
    assert_one_paragraph_error(refused, 1, "[init_from]", "is not a run to start from")
    assert not (tmp_path / "bad").exists()


@pytest.mark.slow
def test_a_run_with_a_weight_average_starts_others_from_its_averaged_weights(tmp_path):
    source_dir = tmp_path / "averaged"
    source_config = make_config(source_dir, "--ema_decay=0.9", "--max_steps=10", "--validation_split=0")
    loop.train(source_config)
    config = small_config(tmp_path, f"--init_from={source_dir}")
    model = run_inputs.build_model(config, catalog.SYNTHETIC)
    run_inputs.warm_start_model(config, model, catalog.SYNTHETIC)
    raw, averaged = (run_inputs.build_model(source_config, catalog.SYNTHETIC) for _ in range(2))
    restore_model_weights(raw, str(source_dir / "checkpoints"))
    restore_model_weights(averaged, str(source_dir / "checkpoints"), WeightAverage(averaged, 0.9))
    np.testing.assert_array_equal(model.head.kernel.numpy(), averaged.head.kernel.numpy())
    assert not np.allclose(model.head.kernel.numpy(), raw.head.kernel.numpy())
