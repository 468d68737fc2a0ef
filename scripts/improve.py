"""From "why is my accuracy low" to a better run: `python scripts/improve.py --run_dir=RUN [--rounds=3]`.

Each round diagnoses the best run so far on its validation split, trains one trial per fixable
finding (its flag changes, an ordinary run in STUDY_DIR/round_K/<finding>, through a tune.py study:
--workers trains several at once; --max_compute leaves out fixes that train longer or wider than
the budget), and keeps the best trial only if it beats the run on the same examples by more than
chance (a paired test): the validation split's, or, where one validation example moves the metric
by over half a point (--judge), every training example, by cross-validation. The test split is
scored once, for the final run. Prints the table and writes STUDY_DIR/improve.md, improve.json and
best.flags; `tensorboard --logdir=STUDY_DIR` shows every trial beside the others. Rerun the same
command after Ctrl-C or kill -9: finished trials are read back, a stopped one resumes.
"""

from trainer import cli  # First: quiets TensorFlow's start-up logging.

import json
import os
import shutil

from absl import flags

from settings.arguments import flag_lines
from trainer import run_directory
from settings.errors import TapeloopError
from settings.command_line import register_run_dir_validator
from tuning import improvement, studies

flags.DEFINE_string("run_dir", None, "The finished run to improve (it is never written to).", required=True)
flags.DEFINE_string("study_dir", None, "Where the trials go (default: RUN_improve beside the run).")
flags.DEFINE_integer("rounds", 3, "Rounds of diagnosis and trials at most.", lower_bound=1)
flags.DEFINE_integer("trials_per_round", 2, "Findings tried per round at most (the costliest first).", lower_bound=1)
flags.DEFINE_float("max_compute", None, "Trials train at most this many times the starting run's compute (forward "
                   "FLOPs per example x examples trained), e.g. 1 for a recipe made for a time budget: a finding "
                   "whose fix trains longer or wider is then noted, not tried (default: no limit).", lower_bound=0)
flags.DEFINE_enum("judge", "auto", improvement.JUDGE_RULES, "How a trial is judged against the best run so far: split "
                  "(on the run's validation split), cross_validation (every training and validation example once, by "
                  "K stratified folds: K fold models per trial and per incumbent, K from 3 up where the rarest class "
                  "is small), or auto (cross-validation exactly when one validation example moves the metric by "
                  "more than half a point, as in a long tail).")
flags.DEFINE_integer("workers", 1, "Trials of a round trained at once, by tune.py worker processes on this machine "
                     "(1: one after the other, in this process).", lower_bound=1)
flags.DEFINE_string("storage", None, "Optuna storage of the rounds' studies (default sqlite:///STUDY_DIR/study.db); "
                    "a PostgreSQL or MySQL URL lets tune.py workers on other machines train trials too.")
flags.DEFINE_integer("heartbeat_seconds", improvement.HEARTBEAT_SECONDS, "Seconds between a running trial's "
                     "heartbeats; one silent for twice as long (its process was killed) is re-queued and resumes.",
                     lower_bound=1)
register_run_dir_validator()
FLAGS = flags.FLAGS


def markdown(outcome: dict) -> str:
    """The before / rounds / after table."""
    rows = [("before", "", "", f"{outcome['before']['validation']:.4f}", "", "", percent(outcome["before"]["test"]))]
    rows += [(f"round {trial['round']}", trial["finding"], flag_lines(trial["flags"]),
              f"{trial['validation']:.4f}", f"{trial['gain']:+.4f} / {trial['noise']:.4f}",
              "kept" if trial["kept"] else "not kept", "")
             for trial in outcome["rounds"]]
    rows.append(("after", "", "", f"{outcome['after']['validation']:.4f}", "", "", percent(outcome["after"]["test"])))
    metric = outcome["metric"].replace("_", " ")
    judged = outcome["judge"]
    judged_by = {"split": "the validation split", "cross_validation": "cross-validation"}[judged["rule"]]
    lines = [f"Judged by {judged_by}: {judged['reason']}.", "",
             f"| | finding | flags | validation {metric} | gain / noise | | test {metric} |",
             "| --- | --- | --- | --- | --- | --- | --- |"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines + ["", f"Stopped: {outcome['stopped']}."] + [f"Note: {note}" for note in outcome["notes"]])


def percent(value: float | None) -> str:
    return "not scored" if value is None else f"{value:.2%}"


def refuse_study_dir(study_dir: str, run_dir: str) -> None:
    """Refuses, before any work, a study folder that is a file or lies inside the run (never written to)."""
    inside = os.path.commonpath([os.path.abspath(study_dir), os.path.abspath(run_dir)]) == os.path.abspath(run_dir)
    found = ("a file (left as it is)" if os.path.lexists(study_dir) and not os.path.isdir(study_dir) else
             "a folder inside the run directory, which improve.py never writes to" if inside else None)
    if found:
        raise TapeloopError(stage="flags", problem=f"--study_dir={study_dir} cannot hold the trials",
                            expected="a folder for the trials (made if missing) outside --run_dir", found=found,
                            fix=f"pass another --study_dir, or leave it out for {run_dir}_improve")


def main(argv):
    run_dir = os.path.normpath(FLAGS.run_dir)
    study_dir = FLAGS.study_dir or f"{run_dir}_improve"
    refuse_study_dir(study_dir, run_dir)
    studies.refuse_unusable_storage(FLAGS.storage or studies.default_storage_url(study_dir), must_exist=False)
    workers = improvement.Workers(FLAGS.workers, FLAGS.storage, FLAGS.heartbeat_seconds)
    outcome = improvement.improve(run_dir, study_dir, FLAGS.rounds, FLAGS.trials_per_round, workers,
                                  FLAGS.max_compute, FLAGS.judge)
    os.makedirs(study_dir, exist_ok=True)
    best_flags = os.path.join(study_dir, "best.flags")
    shutil.copyfile(os.path.join(outcome["after"]["run_dir"], "flags.txt"), best_flags)
    outcome["best_flags"] = best_flags
    table = markdown(outcome)
    run_directory.write_text_atomic(os.path.join(study_dir, "improve.md"), table + "\n")
    run_directory.write_text_atomic(os.path.join(study_dir, "improve.json"), json.dumps(outcome, indent=2) + "\n")
    print(table)
    print(f"Best flags: {best_flags} (the final run's; give train.py --flagfile={best_flags} a new --run_dir "
          "to train it afresh).")


if __name__ == "__main__":
    cli.run(main)
