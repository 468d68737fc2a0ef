"""The absl flags of the settings: one flag per declaration, listed by section in --helpfull, with the
checks that involve several settings."""

import math
import re

from absl import flags

from settings.declarations import SECTIONS, SETTINGS, Setting

SECTION_MODULE_PREFIX = "tapeloop settings"
GLOB_CHARACTERS = frozenset("*?[]")


def section_module_name(number: int, title: str) -> str:
    """The name --helpfull lists a section's flags under (it sorts those names, hence the number)."""
    return f"{SECTION_MODULE_PREFIX} {number:02d}, {title}"


def define_flags(flag_values: flags.FlagValues = flags.FLAGS) -> None:
    """Defines every setting as a flag on `flag_values` (the global FLAGS by default), with its checks."""
    for number, section in enumerate(SECTIONS, start=1):
        for setting in section.settings:
            define_flag(setting, flag_values, section_module_name(number, section.title))
    require_finite_floats([flag_values[setting.name] for setting in SETTINGS], flag_values)
    register_run_dir_validator(flag_values)
    register_cross_checks(flag_values)


def define_flag(setting: Setting, flag_values: flags.FlagValues, module_name: str) -> None:
    """One setting as an absl flag of its kind, bounds and choices."""
    where = {"flag_values": flag_values, "module_name": module_name}
    bounds = {"lower_bound": setting.lower, "upper_bound": setting.upper}
    if setting.kind is bool:
        flags.DEFINE_boolean(setting.name, setting.default, setting.help, **where)
    elif setting.choices:
        flags.DEFINE_enum(setting.name, setting.default, setting.choices, setting.help, **where)
    elif setting.kind is int:
        flags.DEFINE_integer(setting.name, setting.default, setting.help, **bounds, **where)
    elif setting.kind is float:
        flags.DEFINE_float(setting.name, setting.default, setting.help, **bounds, **where)
    elif setting.kind is str:
        flags.DEFINE_string(setting.name, setting.default, setting.help, **where)
    else:
        flags.DEFINE(setting.kind, setting.name, setting.default, setting.help,
                     serializer=setting.kind.serializer, **where)


def require_finite_floats(flag_list, flag_values: flags.FlagValues = flags.FLAGS) -> None:
    """The float flags among `flag_list` take finite values only (absl's bounds let inf and nan through)."""
    for flag in flag_list:
        if isinstance(flag.parser, flags.FloatParser):
            flags.register_validator(flag.name, lambda value: value is None or math.isfinite(value),
                                     f"--{flag.name} must be a finite number", flag_values=flag_values)
            # absl runs validators in the order registered: this one goes first, before comparisons NaN fools.
            flag.validators[-1].insertion_index = -1


def register_run_dir_validator(flag_values: flags.FlagValues = flags.FLAGS) -> None:
    """Refuses a --run_dir with glob characters: TensorFlow's checkpoint reader treats them as
    wildcards, so such a run could save checkpoints but never read them back."""
    flags.register_validator(
        "run_dir", lambda run_dir: not run_dir or not GLOB_CHARACTERS & set(run_dir),
        "--run_dir must not contain * ? [ or ] (TensorFlow reads checkpoint paths as patterns, so the "
        "run could never restore its checkpoints): use e.g. runs/lr_0.1", flag_values=flag_values)


def step_schedule_is_complete(values) -> bool:
    """--lr_schedule=step has increasing positive boundaries and one more positive rate."""
    if values["lr_schedule"] != "step":
        return True
    boundaries, rates = values["lr_boundaries"], values["lr_values"]
    return (len(rates) == len(boundaries) + 1 and all(rate > 0 for rate in rates)
            and list(boundaries) == sorted(set(boundaries)) and all(b > 0 for b in boundaries))


# (flag, holds, message): a check of one setting's value that its bounds and choices cannot say.
VALUE_CHECKS = (
    ("channels", lambda channels: channels in (1, 3), "--channels must be 1 or 3"),
    ("input_range", lambda bounds: len(bounds) == 2 and bounds[0] < bounds[1],
     "--input_range needs two numbers LOW,HIGH with LOW < HIGH, e.g. 0,255"),
    ("convs_per_stage", lambda counts: all(count >= 1 for count in counts),
     "--convs_per_stage needs counts of 1 or more, e.g. 1,2,2,2"),
    ("filters_per_stage", lambda counts: all(count >= 1 for count in counts),
     "--filters_per_stage needs counts of 1 or more, e.g. 24,32"),
    ("kernel_sizes", lambda sides: all(side >= 1 for side in sides),
     "--kernel_sizes needs sides of 1 or more, e.g. 5,3"),
    ("profile_steps", lambda steps: not steps or (len(steps) == 2 and 0 <= steps[0] < steps[1]),
     "--profile_steps needs START,STOP with 0 <= START < STOP, e.g. 100,110"),
    ("data_service", lambda url: not url or re.fullmatch(r"grpc://[^\s/:]+:\d+", url) is not None,
     "--data_service needs the dispatcher's grpc://HOST:PORT, e.g. grpc://10.0.0.5:5050"),
)
# (flags, holds, message): a check across settings.
CROSS_CHECKS = (
    (["lr_schedule", "lr_boundaries", "lr_values"], step_schedule_is_complete,
     "--lr_schedule=step needs increasing positive --lr_boundaries and one more positive rate in "
     "--lr_values, e.g. --lr_boundaries=2000,4000 --lr_values=1e-3,1e-4,1e-5"),
    (["lr_schedule", "warmup_steps"],
     lambda values: not (values["lr_schedule"] == "onecycle" and values["warmup_steps"]),
     "--lr_schedule=onecycle has its own warm-up: drop --warmup_steps (tune --onecycle_peak_fraction)"),
    (["lr_schedule", "early_stopping_patience", "validation_split"],
     lambda values: values["validation_split"] > 0 or not (
         values["lr_schedule"] == "plateau" or values["early_stopping_patience"]),
     "--lr_schedule=plateau and --early_stopping_patience react to validation results: "
     "set --validation_split above 0"),
    (["score_test", "validation_split"], lambda values: values["score_test"] or values["validation_split"] > 0,
     "--noscore_test leaves the run no split to be scored on: set --validation_split above 0"),
    (["data_service", "dataset"], lambda values: not (values["data_service"] and values["dataset"] == "tfrecord"),
     "--data_service builds each batch whole on a worker, which needs the examples by index (arrays, or an "
     "image folder, streamed or not); TFRecord shards are read in sequence: train from the image folder the "
     "shards were made from (--dataset=image_folder streams it when it exceeds --max_memory_gb)"),
    (["lr_schedule", "learning_rate", "min_learning_rate"],
     lambda values: values["lr_schedule"] not in ("exponential", "cosine", "plateau")
     or values["min_learning_rate"] < values["learning_rate"],
     "--min_learning_rate must be below --learning_rate"),
)


def register_cross_checks(flag_values: flags.FlagValues) -> None:
    """Registers VALUE_CHECKS and CROSS_CHECKS; each failure names the flags and the fix."""
    for name, holds, message in VALUE_CHECKS:
        flags.register_validator(name, holds, message, flag_values=flag_values)
    for names, holds, message in CROSS_CHECKS:
        flags.register_multi_flags_validator(names, holds, message, flag_values=flag_values)
