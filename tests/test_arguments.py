"""settings/arguments.py: the one writer of settings as train.py arguments."""

from settings.arguments import flag_line, flag_lines
from trainer.flags import parse_config


def test_booleans_are_written_one_way_and_values_after_an_equals_sign():
    assert flag_line("augment_flip", True) == "--augment_flip"
    assert flag_line("augment_flip", False) == "--noaugment_flip"
    assert flag_lines({"epochs": 4, "learning_rate": 0.003}) == "--epochs=4 --learning_rate=0.003"


def test_what_it_writes_train_py_reads_back():
    changes = {"augment_flip": False, "epochs": 4, "optimizer": "sgd", "learning_rate": 0.05}
    config = parse_config(["--dataset=fashion_mnist", *flag_lines(changes).split()])
    assert {name: getattr(config, name) for name in changes} == changes
