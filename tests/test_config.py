import dataclasses

import pytest

from trainer.flags import parse_config


def test_config_is_frozen():
    config = parse_config([])
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.epochs = 3


def test_configs_compare_by_value():
    assert parse_config(["--epochs=3"]) == parse_config(["--epochs=3"])
    assert parse_config(["--epochs=3"]) != parse_config(["--epochs=4"])
