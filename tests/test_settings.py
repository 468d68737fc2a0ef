"""The settings: one declaration each, from which the flags and TrainConfig are derived; a flags.txt
written by an earlier release of tapeloop still reads, resumes, diagnoses and evaluates."""

import dataclasses
import json

import pytest
from absl import flags

from data import catalog
from settings.choices import CATALOG_DATASETS
from settings.command_line import define_flags
from settings.config import TrainConfig
from settings.declarations import SECTIONS, SETTINGS
from tests.helpers import REPO, SMALL_RUN, copy_run, run_script
from trainer.flags import parse_config

EARLIER_FLAGS_FILE = REPO / "tests" / "data" / "flags_of_an_earlier_release.txt"  # SMALL_RUN, --epochs=1.


def defined_flags() -> flags.FlagValues:
    values = flags.FlagValues()
    define_flags(values)
    return values


def test_each_setting_is_declared_once_and_is_one_flag_and_one_config_field():
    names = [setting.name for setting in SETTINGS]
    assert len(names) == len(set(names))
    values = defined_flags()
    assert {name for name, flag in values._flags().items() if name == flag.name} == set(names)
    assert [field.name for field in dataclasses.fields(TrainConfig)] == names


def test_each_flag_takes_its_declared_default_help_bounds_and_choices():
    values = defined_flags()
    for setting in SETTINGS:
        flag = values[setting.name]
        assert flag.help.endswith(setting.help), setting.name  # absl puts an enum's values in front.
        assert flag.default == (flag.parser.parse(setting.default) if isinstance(setting.default, str)
                                else setting.default), setting.name
        assert getattr(flag.parser, "lower_bound", None) == setting.lower, setting.name
        assert getattr(flag.parser, "upper_bound", None) == setting.upper, setting.name
        assert tuple(getattr(flag.parser, "enum_values", ())) == setting.choices, setting.name


def test_helpfull_lists_the_settings_under_their_sections_in_declared_order():
    help_text = defined_flags().get_help()
    headings = [line for line in help_text.splitlines() if line.startswith("tapeloop settings")]
    assert headings == [f"tapeloop settings {number:02d}, {section.title}:"
                        for number, section in enumerate(SECTIONS, start=1)]
    model_section = help_text.split("tapeloop settings 03, model:")[1].split("tapeloop settings 04")[0]
    assert "--model_width" in model_section and "--learning_rate" not in model_section


def test_the_catalog_holds_the_datasets_the_dataset_setting_names():
    assert set(catalog.CATALOG) == set(CATALOG_DATASETS)


def test_a_flags_file_of_an_earlier_release_reads_as_the_same_settings(tmp_path):
    flags_file = tmp_path / "flags.txt"
    flags_file.write_text(EARLIER_FLAGS_FILE.read_text().replace("RUN_DIR", str(tmp_path)))
    assert parse_config([f"--flagfile={flags_file}"]) == parse_config(
        [*SMALL_RUN, "--epochs=1", f"--run_dir={tmp_path}"])


@pytest.mark.slow
def test_a_run_with_a_flags_file_of_an_earlier_release_resumes(tmp_path, synthetic_run):
    run_dir = copy_run(synthetic_run, tmp_path)  # Its flags.txt is the earlier release's (conftest).
    assert "--run_dir=RUN_DIR" in EARLIER_FLAGS_FILE.read_text()
    resumed = run_script("train", f"--flagfile={run_dir / 'flags.txt'}", f"--run_dir={run_dir}", "--epochs=2")
    assert resumed.returncode == 0, resumed.stderr
    assert "ckpt-28 at step 28" in resumed.stderr
    assert json.loads((run_dir / "results.json").read_text())["steps"] == 56
