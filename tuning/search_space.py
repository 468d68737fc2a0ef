"""--search: the space a tune.py study samples, as comma-separated `flag=range` items, checked
against tapeloop's own flag definitions (name, type, bounds) before any trial runs; and the
space as the columns of TensorBoard's HPARAMS tab.

    learning_rate=log:1e-4:1e-2   log-uniform between the bounds (integers for an integer flag)
    dropout=0:0.5                 uniform between the bounds (integers for an integer flag)
    optimizer=adam|sgd            one of the values
"""

import dataclasses
import difflib
import math
import re

import tensorflow as tf
from absl import flags
from tensorboard.plugins.hparams import api as hparams_api

from settings.config import TrainConfig

# Set once per process, or by the tuner itself: a trial cannot choose them.
NOT_SEARCHABLE = {
    "run_dir": "the tuner gives every trial its own run directory",
    "strategy": "the distribution strategy is built once per process",
    "cpu_devices": "the CPU is split once per process",
    "tpu": "the TPU is connected once per process",
    "deterministic": "deterministic kernels, once on, stay on for the process",
    "score_test": "a search never sees the test split",
}
SCALAR_TYPES = (bool, int, float, str)
ITEM_START = re.compile(r",\s*(?=[A-Za-z_][A-Za-z0-9_]*\s*=)")  # A comma that begins the next flag=.


@dataclasses.dataclass(frozen=True)
class Parameter:
    """One searched flag: a range (log or uniform; integers for an integer flag) or a set of choices."""

    name: str
    kind: str  # "log", "uniform" or "choice"
    low: float | int | None = None
    high: float | int | None = None
    choices: tuple = ()

    def suggest(self, trial):
        """The value an Optuna trial samples (or was given, for a re-queued trial)."""
        if self.kind == "choice":
            return trial.suggest_categorical(self.name, self.choices)
        if isinstance(self.low, int):
            return trial.suggest_int(self.name, self.low, self.high, log=self.kind == "log")
        return trial.suggest_float(self.name, self.low, self.high, log=self.kind == "log")

    def corners(self) -> tuple:
        """The values that bound the parameter: both ends of a range, or every choice."""
        return self.choices if self.kind == "choice" else (self.low, self.high)

    def text(self) -> str:
        """The item as --search writes it, in a canonical form."""
        if self.kind == "choice":
            return f"{self.name}={'|'.join(map(flag_text, self.choices))}"
        prefix = "log:" if self.kind == "log" else ""
        return f"{self.name}={prefix}{self.low!r}:{self.high!r}"


def flag_text(value) -> str:
    """A value as it is written after `--flag=` (booleans as true/false)."""
    return str(value).lower() if isinstance(value, bool) else str(value)


def space_text(space: tuple[Parameter, ...]) -> str:
    return ",".join(parameter.text() for parameter in space)


def parse_space(text: str, flag_values: flags.FlagValues) -> tuple[Parameter, ...]:
    """The parameters of SPEC, each checked against its flag in `flag_values`; ValueError says what is wrong."""
    items = [item.strip() for item in ITEM_START.split(text.strip()) if item.strip()]
    if not items:
        raise ValueError("name at least one flag to search, e.g. learning_rate=log:1e-4:1e-2")
    space = []
    for item in items:
        name, equals, values = (part.strip() for part in item.partition("="))
        if not equals or not values:
            raise ValueError(f"{item!r} is not flag=range: write e.g. dropout=0:0.5 or optimizer=adam|sgd")
        check_searchable(name, flag_values)
        if name in (parameter.name for parameter in space):
            raise ValueError(f"{name} is searched twice")
        space.append(parse_item(name, values, flag_values[name].parser))
    return tuple(space)


def check_searchable(name: str, flag_values: flags.FlagValues) -> None:
    fields = [field.name for field in dataclasses.fields(TrainConfig)]
    if name not in fields:
        close = difflib.get_close_matches(name, fields, n=1)
        raise ValueError(f"unknown flag {name!r}" + (f" (did you mean {close[0]}?)" if close else "")
                         + "; train.py --helpfull lists the flags")
    if name in NOT_SEARCHABLE:
        raise ValueError(f"--{name} cannot be searched: {NOT_SEARCHABLE[name]}; pass it as a fixed flag")
    default = flag_values[name].default
    if default is not None and not isinstance(default, SCALAR_TYPES):
        raise ValueError(f"--{name} takes a list or a mapping, which a search cannot range over; search "
                         "single-valued flags and fix this one")


def parse_item(name: str, values: str, parser) -> Parameter:
    """One flag's range or choices, every value parsed (types, bounds) by the flag's own parser."""
    if "|" in values or ":" not in values:
        choices = tuple(dict.fromkeys(parse_value(name, value, parser) for value in values.split("|")))
        if len(choices) < 2:
            raise ValueError(f"{name}={values} offers one value: give two or more (a|b), or pass it as a fixed flag")
        return Parameter(name, "choice", choices=choices)
    if not isinstance(parser, (flags.IntegerParser, flags.FloatParser)):
        raise ValueError(f"{name}={values} is a range, but --{name} is not a number: list its values as a|b")
    kind, _, bounds = values.partition(":") if values.startswith("log:") else ("uniform", "", values)
    ends = bounds.split(":")
    if len(ends) != 2:
        raise ValueError(f"{name}={values}: a range is LOW:HIGH or log:LOW:HIGH")
    low, high = (parse_value(name, end, parser) for end in ends)
    if not low < high:
        raise ValueError(f"{name}={values} is an empty range: LOW must be below HIGH")
    if kind == "log" and low <= 0:
        raise ValueError(f"{name}={values}: a log range needs LOW above 0")
    return Parameter(name, kind, low=low, high=high)


def parse_value(name: str, text: str, parser):
    try:
        value = parser.parse(text.strip())
    except ValueError as error:
        raise ValueError(f"{name}: {text.strip()!r} is not a value of --{name} ({error})") from None
    if isinstance(value, float) and not math.isfinite(value):
        raise ValueError(f"{name}: {text.strip()!r} is not a finite number")
    return value


class SearchSpaceParser(flags.ArgumentParser):
    """The --search flag's parser: SPEC -> tuple of Parameters, checked against tapeloop's flags."""

    def __init__(self, flag_values: flags.FlagValues):
        self.flag_values = flag_values

    def parse(self, argument):
        return argument if isinstance(argument, tuple) else parse_space(argument, self.flag_values)

    def flag_type(self):
        return "flag=range list"


def write_search_space(logdir: str, space: tuple[Parameter, ...], metric_tags: tuple[str, ...]) -> None:
    """The HPARAMS tab's columns for a study in `logdir`: the searched flags with their ranges, and
    the trials' final metrics (each trial is a run below `logdir`)."""
    def domain(parameter: Parameter):
        if parameter.kind == "choice":
            return hparams_api.Discrete(list(parameter.choices))
        interval = hparams_api.IntInterval if isinstance(parameter.low, int) else hparams_api.RealInterval
        return interval(parameter.low, parameter.high)

    writer = tf.summary.create_file_writer(logdir)
    with writer.as_default(step=0):
        hparams_api.hparams_config(hparams=[hparams_api.HParam(parameter.name, domain(parameter)) for parameter in space],
                                   metrics=[hparams_api.Metric(tag) for tag in metric_tags])
    writer.close()
