"""TrainConfig: the resolved settings of one run. Library code reads this, never FLAGS."""

import dataclasses

from settings.declarations import SETTINGS

TrainConfig = dataclasses.make_dataclass(
    "TrainConfig", [(setting.name, setting.value_type) for setting in SETTINGS], frozen=True)
TrainConfig.__module__ = __name__  # So that a config pickles (fold runs in child processes) by this name.
TrainConfig.__doc__ = ("The resolved settings of one run: a field per setting of settings/declarations.py, "
                       "same name, in the order declared.")
