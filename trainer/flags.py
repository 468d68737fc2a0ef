"""Every tapeloop flag with its default and validator, and flags -> TrainConfig."""

import dataclasses
import os

from absl import flags

from trainer.config import TrainConfig
from trainer.errors import TapeloopError

DATASETS = ("fashion_mnist", "mnist", "synthetic")
MODELS = ("cnn", "mlp")
OPTIMIZERS = ("adam", "adamw", "sgd")


def define_flags(flag_values: flags.FlagValues = flags.FLAGS) -> None:
    """Defines tapeloop's flags on `flag_values` (the global FLAGS by default)."""
    fv = {"flag_values": flag_values}
    # Data
    flags.DEFINE_enum("dataset", "fashion_mnist", DATASETS, "Dataset from the catalog.", **fv)
    flags.DEFINE_string("data_dir", None, "Folder holding the dataset's files. If set, the only "
                        "place looked in; otherwise $TAPELOOP_DATA_DIR/<dataset>, Keras' cache, "
                        "/usr/share/datasets and the download cache are searched.", **fv)
    flags.DEFINE_boolean("download", True, "Download (and verify) the dataset if it is not found.", **fv)
    flags.DEFINE_float("validation_split", 0.1, "Fraction of the training split held out for "
                       "evaluation during training, chosen by --seed.", lower_bound=0.0, upper_bound=0.5, **fv)
    flags.DEFINE_boolean("standardize", True, "Subtract the dataset's mean pixel and divide by its std "
                         "after scaling to [0, 1].", **fv)
    # Model
    flags.DEFINE_enum("model", "cnn", MODELS, "Model from the registry.", **fv)
    flags.DEFINE_integer("model_width", 32, "Filters of the first conv stage (cnn) or hidden units (mlp).",
                         lower_bound=1, **fv)
    flags.DEFINE_float("dropout", 0.3, "Dropout rate before the classifier head.",
                       lower_bound=0.0, upper_bound=0.95, **fv)
    # Optimization
    flags.DEFINE_enum("optimizer", "adam", OPTIMIZERS, "Optimizer.", **fv)
    flags.DEFINE_float("learning_rate", 1e-3, "Learning rate.", lower_bound=1e-12, **fv)
    flags.DEFINE_float("momentum", 0.9, "Momentum for sgd.", lower_bound=0.0, upper_bound=1.0, **fv)
    flags.DEFINE_float("weight_decay", 1e-4, "Decoupled weight decay for adamw.", lower_bound=0.0, **fv)
    flags.DEFINE_integer("batch_size", 128, "Training batch size.", lower_bound=1, **fv)
    flags.DEFINE_integer("eval_batch_size", 1000, "Evaluation batch size.", lower_bound=1, **fv)
    flags.DEFINE_integer("epochs", 10, "Passes over the training split.", lower_bound=1, **fv)
    flags.DEFINE_integer("max_steps", 0, "Step budget; stops earlier than --epochs if reached "
                         "(0: no budget).", lower_bound=0, **fv)
    flags.DEFINE_integer("seed", 0, "Seed for the validation split, shuffling and initialization.", **fv)
    flags.DEFINE_boolean("jit_compile", False, "XLA-compile the train step (slower for small convs on CPU).", **fv)
    # Run directory, logging, checkpoints
    flags.DEFINE_string("run_dir", None, "Run directory: logs, checkpoints, exported model, results. "
                        "Rerunning on a directory with checkpoints resumes.", **fv)
    flags.DEFINE_integer("log_every_steps", 100, "Steps between logged training scalars.", lower_bound=1, **fv)
    flags.DEFINE_integer("checkpoint_every_steps", 0, "Steps between extra checkpoints within an "
                         "epoch (0: only at the end of each epoch).", lower_bound=0, **fv)
    flags.DEFINE_integer("keep_checkpoints", 3, "Latest checkpoints kept in RUN/checkpoints.", lower_bound=1, **fv)
    flags.DEFINE_enum("progress", "auto", ("auto", "bar", "log"), "Progress display: a bar on a "
                      "terminal, one log line per --log_every_steps otherwise.", **fv)


def config_from_flags(flag_values: flags.FlagValues = flags.FLAGS) -> TrainConfig:
    """Builds the TrainConfig from parsed flags."""
    return TrainConfig(**{field.name: flag_values[field.name].value
                          for field in dataclasses.fields(TrainConfig)})


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


def load_run_config(run_dir: str) -> TrainConfig:
    """The TrainConfig a run was trained with, from RUN/flags.txt."""
    path = os.path.join(run_dir, "flags.txt")
    if not os.path.isfile(path):
        raise TapeloopError(
            stage="run directory", problem=f"{run_dir} is not a tapeloop run directory",
            expected=f"{path}, written by scripts/train.py", found="no such file",
            fix="pass the --run_dir that scripts/train.py was given")
    try:
        return parse_config([f"--flagfile={path}", f"--run_dir={run_dir}"])
    except flags.Error as error:
        raise TapeloopError(
            stage="run directory", problem=f"{path} does not parse", expected="a flagfile of tapeloop flags",
            found=str(error), fix="restore the file from the command that started the run") from None
