"""Searches hyperparameters with Optuna, each trial an ordinary run judged on the validation split:
`python scripts/tune.py --flagfile=configs/mnist_fast.flags --validation_split=0.1 --study=NAME
--search=learning_rate=log:1e-4:1e-2,batch_size=64|128|256 --trials=16 [--prune] [--workers=K]`.

Any train.py flag is fixed for every trial. Trials run in runs/NAME/trial_K (--study_dir), all
under one TensorBoard logdir; the study lives in runs/NAME/study.db unless --storage names a
PostgreSQL or MySQL database that workers on several machines share. Rerunning the command
continues the study. At the end (and on --summary): the table of trials (trials.md, trials.csv),
the best trial, best.flags that reproduces it, and its test accuracy, measured once.
"""

from trainer import cli  # First: quiets TensorFlow's start-up logging.

import dataclasses
import os
import sys

import optuna
from absl import flags, logging

from trainer import run_directory
from settings.errors import TapeloopError
from settings.choices import EVAL_METRICS
from settings.command_line import define_flags
from trainer.flags import config_from_flags, parse_config
from tuning import studies, study_report
from settings.arguments import flag_line
from tuning.search_space import SearchSpaceParser, write_search_space

define_flags()
flags.DEFINE(SearchSpaceParser(flags.FLAGS), "search", None, "The space searched: comma-separated flag=range "
             "items: flag=log:LOW:HIGH (log-uniform), flag=LOW:HIGH (uniform; integers for an integer flag), "
             "flag=a|b|c (one of the values).")
flags.DEFINE_string("study", None, "The study's name: its folder and its name in the storage.", required=True)
flags.DEFINE_string("study_dir", None, "The study's folder (default runs/<study>): trial_K run directories, "
                    "base.flags, best.flags, trials.md, trials.csv, and study.db without --storage.")
flags.DEFINE_string("storage", None, "Optuna storage URL shared by the workers (default sqlite:///<study_dir>/"
                    "study.db): postgresql://... or mysql+pymysql://... for workers on several machines.")
flags.DEFINE_integer("trials", 16, "Trials in the study (pruned and failed ones count; a trial whose worker "
                     "died is re-queued instead).", lower_bound=1)
flags.DEFINE_integer("workers", 1, "Worker processes on this machine, each running one trial at a time.",
                     lower_bound=1)
flags.DEFINE_enum("metric", "accuracy", EVAL_METRICS, "The validation metric the search optimizes (also "
                  "the trials' --early_stopping_metric).")
flags.DEFINE_boolean("prune", False, "Stop a trial after an epoch whose validation metric is behind the "
                     f"median of earlier trials at that epoch (once {studies.PRUNER_STARTUP_TRIALS} have finished).")
flags.DEFINE_boolean("fold_models", False, "The study's trials are the fold models of improve.py's cross-validated "
                     "judging: each scores its held-out fold (its data's test split, a part of the training data); "
                     "refused for trials whose data is not a fold file improve.py wrote.")
flags.DEFINE_boolean("summary", False, "Print the study's summary and exit, without running trials.")
flags.DEFINE_integer("heartbeat_seconds", 60, "Seconds between a running trial's heartbeats; a trial silent "
                     "for twice as long is taken for dead and re-queued.", lower_bound=1)
flags.register_multi_flags_validator(["search", "summary"], lambda values: values["search"] or values["summary"],
                                     "--search is required (e.g. --search=learning_rate=log:1e-4:1e-2)")
flags.register_validator("strategy", lambda strategy: strategy != "multi_worker", "--strategy=multi_worker "
                         "cannot be tuned: run more tune.py workers on a shared --storage instead")
flags.register_validator("run_dir", lambda run_dir: run_dir is None, "--run_dir is not for tune.py: the study "
                         "gives each trial its own (STUDY_DIR/trial_K); pass --study_dir for the study's folder")
FLAGS = flags.FLAGS


def study_settings() -> studies.StudySettings:
    folder = FLAGS.study_dir or os.path.join("runs", FLAGS.study)
    return studies.StudySettings(
        name=FLAGS.study, folder=folder, storage_url=FLAGS.storage or studies.default_storage_url(folder),
        space=FLAGS.search or (), trials=FLAGS.trials, metric=FLAGS.metric, prune=FLAGS.prune,
        heartbeat_seconds=FLAGS.heartbeat_seconds, fold_models=FLAGS.fold_models)


def write_base_flags(settings: studies.StudySettings) -> None:
    """STUDY/base.flags: every train.py flag the trials share; says which changed on a rerun."""
    config = dataclasses.replace(config_from_flags(), run_dir=None)
    run_directory.write_flags_file(config, settings.folder, os.path.basename(settings.base_flags))


def check_corners(settings: studies.StudySettings) -> None:
    """Refuses, before any trial, a value of the space that train.py's flags would refuse with the
    fixed flags (e.g. --min_learning_rate above the lowest searched --learning_rate)."""
    for parameter in settings.space:
        for value in parameter.corners():
            try:
                parse_config([f"--flagfile={settings.base_flags}", flag_line(parameter.name, value)])
            except flags.Error as error:
                raise TapeloopError(
                    stage="search", problem=f"--search allows {flag_line(parameter.name, value)}, which the "
                    "fixed flags make invalid", expected="every value of the space a valid train.py flag",
                    found=str(error), fix="narrow the range, or change the fixed flag it conflicts with") from None


def main(argv):
    settings = study_settings()
    if not FLAGS.summary:  # A summary reads a study: it creates nothing.
        os.makedirs(settings.folder, exist_ok=True)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    storage = studies.open_storage(settings, must_exist=FLAGS.summary)
    if not settings.space:  # --summary alone: the study's own space and metric.
        settings = studies.stored_settings(settings, storage, FLAGS)
    study = studies.open_study(settings, storage)
    if not FLAGS.summary:
        if studies.WORKER_ENV in os.environ:
            ran = studies.run_worker(study, settings, storage)
            print(f"worker {os.environ[studies.WORKER_ENV]} ran {ran} trials")
            return
        write_base_flags(settings)
        check_corners(settings)
        write_search_space(settings.folder, settings.space, tuple(
            f"results/eval_{metric}" for metric in EVAL_METRICS))
        if FLAGS.workers > 1:
            studies.run_workers([sys.executable, sys.argv[0], *sys.argv[1:], "--workers=1"], FLAGS.workers)
        else:
            studies.run_worker(study, settings, storage)
    logging.info("Summary in %s/trials.md and trials.csv.", settings.folder)
    print(study_report.write_summary(study, settings, complete=studies.is_done(study, settings)))
    studies.refuse_a_study_that_only_failed(study, settings)


if __name__ == "__main__":
    cli.run(main)
