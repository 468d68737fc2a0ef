import dataclasses

import pytest
from absl import flags

from trainer.config import TrainConfig
from trainer.errors import TapeloopError
from trainer.flags import load_run_config, parse_config, serialize_config


def test_every_config_field_is_a_flag_with_a_default():
    config = parse_config([])
    assert config.dataset == "fashion_mnist" and config.model == "cnn" and config.validation_split == 0.1
    assert {field.name for field in dataclasses.fields(TrainConfig)} == set(dataclasses.asdict(config))


def test_later_flags_override_the_flagfile(tmp_path):
    flagfile = tmp_path / "recipe.flags"
    flagfile.write_text("# a comment\n--dataset=mnist\n--epochs=7\n")
    config = parse_config([f"--flagfile={flagfile}", "--epochs=2"])
    assert config.dataset == "mnist" and config.epochs == 2


def test_serialized_config_reproduces_the_config(tmp_path):
    config = parse_config(["--dataset=mnist", "--nostandardize", "--learning_rate=0.003",
                           f"--run_dir={tmp_path}", "--data_dir=/data/mnist"])
    flagfile = tmp_path / "flags.txt"
    flagfile.write_text(serialize_config(config))
    assert parse_config([f"--flagfile={flagfile}"]) == config


@pytest.mark.parametrize("argv, message", [
    (["--optimizer=rmsprop"], "value should be one of <adam|adamw|sgd>"),
    (["--validation_split=0.9"], "0.9 is not a number in the range \\[0.0, 0.5\\]"),
    (["--batch_size=0"], "0 is not a positive integer"),
    (["--no_such_flag=1"], "Unknown command line flag 'no_such_flag'"),
])
def test_invalid_values_fail_naming_the_flag_and_the_allowed_values(argv, message):
    with pytest.raises(flags.Error, match=message):
        parse_config(argv)


def test_load_run_config_reads_flags_txt_and_rejects_other_folders(tmp_path):
    (tmp_path / "flags.txt").write_text("--dataset=mnist\n--epochs=3\n")
    config = load_run_config(str(tmp_path))
    assert config.dataset == "mnist" and config.epochs == 3 and config.run_dir == str(tmp_path)
    with pytest.raises(TapeloopError, match="is not a tapeloop run directory"):
        load_run_config(str(tmp_path / "elsewhere"))
