import dataclasses

import numpy as np
import pytest
import tensorflow as tf
from absl import flags

from tests.helpers import REPO
from settings.config import TrainConfig
from settings.errors import TapeloopError
from trainer import losses
from settings.choices import LOSS_TERMS
from trainer.flags import parse_config, serialize_config
from trainer.run_directory import load_run_config


def test_every_config_field_is_a_flag_with_a_default():
    config = parse_config([])
    assert config.dataset == "fashion_mnist" and config.model == "cnn" and config.validation_split == 0.1
    assert {field.name for field in dataclasses.fields(TrainConfig)} == set(dataclasses.asdict(config))


def test_later_flags_override_the_flagfile(tmp_path):
    flagfile = tmp_path / "recipe.flags"
    flagfile.write_text("# a comment\n--dataset=mnist\n--epochs=7\n")
    config = parse_config([f"--flagfile={flagfile}", "--epochs=2"])
    assert config.dataset == "mnist" and config.epochs == 2


@pytest.mark.parametrize("recipe", sorted(path.name for path in (REPO / "configs").glob("*.flags")))
def test_every_recipe_in_configs_parses_and_round_trips_through_flags_txt(recipe, tmp_path):
    config = parse_config([f"--flagfile={REPO / 'configs' / recipe}"])
    (tmp_path / "flags.txt").write_text(serialize_config(config))
    assert parse_config([f"--flagfile={tmp_path / 'flags.txt'}"]) == config


def test_serialized_config_reproduces_the_config(tmp_path):
    config = parse_config(["--dataset=mnist", "--nostandardize", "--learning_rate=0.003",
                           f"--run_dir={tmp_path}", "--data_dir=/data/mnist",
                           "--loss_weights=focal=0.5,cross_entropy=1,l2=5e-4", "--class_weights=1,2.5,0"])
    flagfile = tmp_path / "flags.txt"
    flagfile.write_text(serialize_config(config))
    assert parse_config([f"--flagfile={flagfile}"]) == config


@pytest.mark.parametrize("argv, message", [
    (["--optimizer=rmsprop"], "value should be one of <adam|adamw|sgd>"),
    (["--validation_split=0.9"], "0.9 is not a number in the range \\[0.0, 0.5\\]"),
    (["--batch_size=0"], "0 is not a positive integer"),
    (["--no_such_flag=1"], "Unknown command line flag 'no_such_flag'"),
    (["--loss_weights=cross_entropy=1,hinge=1"], "unknown loss term 'hinge'; terms: cross_entropy, "),
    (["--loss_weights=cross_entropy=-1"], "the weight of cross_entropy must be a number >= 0, not '-1'"),
    (["--loss_weights=cross_entropy=x"], "the weight of cross_entropy is not a number: 'x'"),
    (["--loss_weights=cross_entropy"], "give cross_entropy a weight: cross_entropy=<weight>"),
    (["--loss_weights=l2=1e-4"], "name at least one of the data terms"),
    (["--class_weights=balance"], "expected none, balanced or comma-separated numbers, not 'balance'"),
    (["--class_weights=1,-2"], "class weights must be >= 0 and not all 0"),
    (["--class_imbalance=0.5"], "--class_imbalance=0.5: 0.5 is not number >= 1.0"),
    (["--noscore_test", "--validation_split=0"], "--noscore_test leaves the run no split to be scored on"),
])
def test_invalid_values_fail_naming_the_flag_and_the_allowed_values(argv, message):
    with pytest.raises(flags.Error, match=message):
        parse_config(argv)


def test_loss_weights_and_class_weights_parse_to_data():
    config = parse_config(["--loss_weights=cross_entropy=1.0, l2=5e-4", "--class_weights=1,2"])
    assert config.loss_weights == {"cross_entropy": 1.0, "l2": 5e-4} and config.class_weights == (1.0, 2.0)
    assert parse_config([]).loss_weights == {"cross_entropy": 1.0} and parse_config([]).class_weights == "none"


def test_losses_computes_every_term_the_flag_accepts():
    labels, logits = tf.constant([0, 2]), tf.constant([[2.0, 0.5, -1.0], [0.1, 0.2, 3.0]])
    kernel = tf.Variable(tf.ones((2, 2)), name="kernel")
    for term in LOSS_TERMS:
        value = losses.WeightedLoss({term: 1.0}, num_classes=3).terms(labels, logits, [kernel])[term]
        assert np.isfinite(value.numpy()), term


def test_load_run_config_reads_flags_txt_and_rejects_other_folders(tmp_path):
    (tmp_path / "flags.txt").write_text("--dataset=mnist\n--epochs=3\n")
    config = load_run_config(str(tmp_path))
    assert config.dataset == "mnist" and config.epochs == 3 and config.run_dir == str(tmp_path)
    with pytest.raises(TapeloopError, match="is not a tapeloop run directory"):
        load_run_config(str(tmp_path / "elsewhere"))


@pytest.mark.parametrize("content, found", [
    (b"--dataset=mnist\n\xff\xfe\x00garbage", "found bytes that are not text (byte 16 is 0xff)"),
    (b"", "found an empty file"),
    (b"  \n\n", "found an empty file"),
    (b"dataset mnist\n", "found text with no --flag line"),
    (b"--seed=1\n" + b"#" * (1 << 20), "found a file over 1024 KiB"),
])
def test_a_damaged_flags_txt_is_the_paragraph_never_all_defaults(tmp_path, content, found):
    (tmp_path / "flags.txt").write_bytes(content)
    with pytest.raises(TapeloopError) as refused:
        load_run_config(str(tmp_path))
    assert refused.value.paragraph().startswith(f"tapeloop: error: [run directory] {tmp_path / 'flags.txt'} is damaged.")
    assert found in refused.value.paragraph() and "Fix: restore the file" in refused.value.paragraph()
