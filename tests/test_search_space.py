"""--search SPEC: every kind of item parsed to a Parameter with the flag's own type, every kind of
bad item refused with what is wrong, and what a trial samples from the result."""

import re

import optuna
import pytest
from absl import flags

from settings.arguments import flag_line
from settings.command_line import define_flags
from tuning.search_space import (Parameter, SearchSpaceParser, parse_space, space_text,
                                  write_search_space)


@pytest.fixture(scope="module")
def flag_values():
    values = flags.FlagValues()
    define_flags(values)
    return values


def test_ranges_and_choices_take_the_types_of_their_flags(flag_values):
    space = parse_space("learning_rate=log:1e-4:1e-2, dropout=0:0.5,batch_size=64|128|256,"
                        "optimizer=adam|sgd,model_width=log:8:64,augment_flip=true|false", flag_values)
    assert space == (Parameter("learning_rate", "log", 1e-4, 1e-2), Parameter("dropout", "uniform", 0.0, 0.5),
                     Parameter("batch_size", "choice", choices=(64, 128, 256)),
                     Parameter("optimizer", "choice", choices=("adam", "sgd")),
                     Parameter("model_width", "log", 8, 64), Parameter("augment_flip", "choice", choices=(True, False)))
    assert isinstance(space[4].low, int) and isinstance(space[1].low, float)
    assert parse_space(space_text(space), flag_values) == space  # The stored text reads back the same.
    assert flag_line("augment_flip", True) == "--augment_flip" and flag_line("augment_flip", False) == "--noaugment_flip"


@pytest.mark.parametrize("spec, message", [
    ("", "name at least one flag"),
    ("learning_rat=log:1e-4:1e-2", "unknown flag 'learning_rat' (did you mean learning_rate?)"),
    ("dropout=0.5:0.1", "empty range"),
    ("dropout=0.3:0.3", "empty range"),
    ("batch_size=0.5:2", "'0.5' is not a value of --batch_size"),
    ("dropout=0:1.5", "'1.5' is not a value of --dropout"),
    ("learning_rate=log:0:1e-2", "is not a value of --learning_rate"),
    ("weight_decay=log:0:1e-2", "a log range needs LOW above 0"),
    ("optimizer=adam|rmsprop", "'rmsprop' is not a value of --optimizer"),
    ("optimizer=adam:sgd", "--optimizer is not a number"),
    ("dropout=0.3", "offers one value"),
    ("dropout=0:0.2:0.4", "a range is LOW:HIGH or log:LOW:HIGH"),
    ("dropout=0:0.5,dropout=0.1|0.2", "dropout is searched twice"),
    ("run_dir=a|b", "--run_dir cannot be searched"),
    ("deterministic=true|false", "--deterministic cannot be searched"),
    ("lr_boundaries=1|2", "takes a list or a mapping"),
    ("learning_rate", "is not flag=range"),
    ("learning_rate=log:1e-4:inf", "not a finite number"),
])
def test_a_bad_spec_is_refused_with_what_is_wrong(flag_values, spec, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        parse_space(spec, flag_values)


def test_the_flag_parser_reports_a_bad_spec_as_a_flag_error(flag_values):
    values = flags.FlagValues()
    define_flags(values)
    flags.DEFINE(SearchSpaceParser(values), "search", None, "", flag_values=values)
    with pytest.raises(flags.IllegalFlagValueError, match="empty range"):
        values(["tune", "--search=dropout=0.5:0.1"])
    values(["tune", "--search=dropout=0:0.5"])
    assert values.search == (Parameter("dropout", "uniform", 0.0, 0.5),)


def test_a_trial_samples_inside_the_space_with_the_flag_types(flag_values):
    space = parse_space("learning_rate=log:1e-4:1e-2,model_width=8:32,batch_size=64|128", flag_values)
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    for _ in range(20):
        trial = study.ask()
        rate, width, batch = (parameter.suggest(trial) for parameter in space)
        assert 1e-4 <= rate <= 1e-2 and isinstance(rate, float)
        assert 8 <= width <= 32 and isinstance(width, int)
        assert batch in (64, 128)
        study.tell(trial, 0.0)


def test_a_search_space_becomes_the_hparams_tabs_columns_with_their_domains(tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    from tensorboard.plugins.hparams import plugin_data_pb2

    space = (Parameter("learning_rate", "log", 1e-4, 1e-2), Parameter("model_width", "uniform", 8, 32),
             Parameter("optimizer", "choice", choices=("adam", "sgd")))
    write_search_space(str(tmp_path), space, ("results/eval_accuracy",))
    events = EventAccumulator(str(tmp_path))
    events.Reload()
    content = events.SummaryMetadata("_hparams_/experiment").plugin_data.content
    experiment = plugin_data_pb2.HParamsPluginData.FromString(content).experiment
    columns = {info.name: info for info in experiment.hparam_infos}
    assert list(columns) == ["learning_rate", "model_width", "optimizer"]
    assert (columns["learning_rate"].domain_interval.min_value, columns["learning_rate"].domain_interval.max_value) \
        == pytest.approx((1e-4, 1e-2))
    assert [value.string_value for value in columns["optimizer"].domain_discrete.values] == ["adam", "sgd"]
    assert [metric.name.tag for metric in experiment.metric_infos] == ["results/eval_accuracy"]
