"""diagnose.py --write_flags: a run's flags with a finding's changes, read back by train.py's parser."""

import dataclasses

from diagnosis import flag_changes
from diagnosis.findings import Finding
from tests.helpers import make_config
from trainer.flags import parse_config, serialize_config


def test_the_written_flagfile_is_the_runs_flags_with_the_changes_and_a_run_directory_of_its_own(tmp_path):
    run = make_config(tmp_path / "run", "--learning_rate=0.5", "--optimizer=sgd")
    finding = Finding("learning_rate_high", cost=0.8, evidence="the training loss sits at chance level",
                      suggestion="lower --learning_rate", flags={"learning_rate": 0.05, "augment_flip": True,
                                                                 "label_smoothing": 0.1})
    text = flag_changes.changed_flagfile(serialize_config(run), finding, run.run_dir)
    path = tmp_path / "improved.flags"
    path.write_text(text)
    tried = parse_config([f"--flagfile={path}"])
    assert tried.learning_rate == 0.05 and tried.augment_flip and tried.label_smoothing == 0.1
    assert tried.run_dir == f"{run.run_dir}_learning_rate_high"
    unchanged = {"learning_rate", "augment_flip", "label_smoothing", "run_dir"}
    assert {field.name: getattr(tried, field.name) for field in dataclasses.fields(run) if field.name not in unchanged} == \
        {field.name: getattr(run, field.name) for field in dataclasses.fields(run) if field.name not in unchanged}
    lines = text.splitlines()
    assert lines[lines.index("--learning_rate=0.05") - 1] == (
        "# learning_rate_high (major): the training loss sits at chance level")
    assert "--noaugment_flip" not in lines and lines.count("--augment_flip") == 1


def test_the_top_fixable_finding_is_the_costliest_with_flags():
    described = Finding("class_confusion", cost=None, evidence="", suggestion="")
    cheap = Finding("too_few_epochs", cost=0.01, evidence="", suggestion="", flags={"epochs": 20})
    costly = Finding("leakage", cost=0.05, evidence="", suggestion="")
    assert flag_changes.top_fixable([costly, cheap, described]) is cheap
    assert flag_changes.top_fixable([costly, described]) is None
