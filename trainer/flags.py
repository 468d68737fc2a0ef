"""train.py's flags read into a TrainConfig, and a TrainConfig written back as a flagfile."""

import dataclasses

from absl import flags

from models.registry import PRETRAINED
from settings.command_line import define_flags
from settings.config import TrainConfig


def config_from_flags(flag_values: flags.FlagValues = flags.FLAGS) -> TrainConfig:
    """Builds the TrainConfig from parsed flags; --standardize left unset becomes on, except for
    a model that normalizes [0, 1] pixels itself (models.registry.PRETRAINED)."""
    values = {field.name: flag_values[field.name].value for field in dataclasses.fields(TrainConfig)}
    if values["standardize"] is None:
        values["standardize"] = values["model"] not in PRETRAINED
    return TrainConfig(**values)


def parse_config(argv: list[str]) -> TrainConfig:
    """Parses tapeloop flags (e.g. `["--flagfile=RUN/flags.txt"]`) into a TrainConfig.

    Uses a private FlagValues, so it works beside the global FLAGS of a script.
    """
    flag_values = flags.FlagValues()
    define_flags(flag_values)
    flag_values(["tapeloop", *argv])
    return config_from_flags(flag_values)


def serialize_config(config: TrainConfig) -> str:
    """Renders every field as a flagfile, so that `--flagfile=RUN/flags.txt` reproduces the run."""
    flag_values = flags.FlagValues()
    define_flags(flag_values)
    lines = []
    for field in dataclasses.fields(TrainConfig):
        flag = flag_values[field.name]
        flag.value = getattr(config, field.name)
        if flag.value is not None:
            lines.append(flag.serialize())
    return "\n".join(lines) + "\n"
