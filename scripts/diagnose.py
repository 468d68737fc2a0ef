"""Why is my accuracy low? Two modes.

`python scripts/diagnose.py --run_dir=RUN [--output=FILE] [--label_issues=cheap]` diagnoses a
finished run: it reads the run's flags, curves and final weights, reloads its data and prints
findings ranked by the accuracy they likely cost, each with its evidence and the flags to try;
--output writes them as JSON, and RUN/diagnosis holds them for TensorBoard and as PNG files
(reliability diagram, confused pairs, likely label errors, the label review queue, leaked pairs).

`python scripts/diagnose.py --flagfile=configs/mnist.flags` checks a recipe before training: the
pre-flight report on the data (sizes, classes, pixel range, duplicates), then one training step
on one batch with every stage check on (--checks=full) and its loss against chance level.
Writes nothing; exit 1 on a failed check.
"""

from trainer import cli  # First: quiets TensorFlow's start-up logging.

import math
import os
import sys

from absl import flags

from diagnosis import flag_changes, report
from settings.arguments import flag_lines
from trainer import preflight, run_directory
from settings.command_line import define_flags
from trainer.flags import config_from_flags
from trainer.run_directory import load_run_config

define_flags()
flags.DEFINE_string("output", None, "With --run_dir: also write the findings as JSON to this file ('-': stdout only).")
flags.DEFINE_enum("label_issues", "cheap", ("off", "test", "cheap", "thorough"), "With --run_dir: which splits "
                  "to search for mislabeled examples: off; test (the run's own model: seconds); cheap (also the "
                  "training split, by 2-fold cross-validation of 2 epochs or 400 steps each: minutes); thorough (5 "
                  "folds of the run's epochs).")
flags.DEFINE_integer("label_review", report.LABEL_REVIEW, "With --run_dir: in each split searched for label issues, "
                     "queue this many examples of lowest label quality (cleanlab's score), lowest first, whether or "
                     "not flagged, for a person to look at (a grid in the report, \"label_review\" in the JSON; "
                     "0: none).",
                     lower_bound=0)
flags.DEFINE_string("write_flags", None, "With --run_dir: write the run's flags.txt with the top finding's flag "
                    "changes applied (each under a comment naming the finding and its evidence, and a new --run_dir) "
                    "to this file, for scripts/train.py --flagfile=FILE.")
FLAGS = flags.FLAGS


def diagnose_run() -> None:
    cli.check_output_path(FLAGS.output)
    load_run_config(FLAGS.run_dir)  # A folder that is no run is refused before its lock is taken (and made).
    with run_directory.claim(FLAGS.run_dir):  # Not while the run trains: it would write into it beside train.py.
        diagnosis = report.diagnose_run(FLAGS.run_dir, FLAGS.data_dir if FLAGS["data_dir"].present else None,
                                        FLAGS.label_issues, label_review=FLAGS.label_review)
        folder = report.write_to_tensorboard(FLAGS.run_dir, diagnosis)
    if FLAGS.write_flags:
        write_flags(diagnosis.findings)
    if FLAGS.output == "-":
        cli.write_json("-", diagnosis.as_json())
        return
    print("\n".join(diagnosis.lines()))
    print(f"(also in TensorBoard: {folder})")
    if FLAGS.output:
        cli.write_json(FLAGS.output, diagnosis.as_json())


def write_flags(findings) -> None:
    """--write_flags: the run's flags with the top fixable finding's changes, or a line saying there is none."""
    finding = flag_changes.top_fixable(findings)
    if finding is None:
        print("No finding has a flag change to try: nothing written to --write_flags.", file=sys.stderr)
        return
    flags_text = open(os.path.join(FLAGS.run_dir, "flags.txt"), encoding="utf-8").read()
    run_directory.write_text_atomic(FLAGS.write_flags, flag_changes.changed_flagfile(flags_text, finding, FLAGS.run_dir))
    print(f"Wrote {FLAGS.write_flags}: {finding.kind}'s changes "
          f"({flag_lines(finding.flags)}); "
          f"try them: scripts/train.py --flagfile={FLAGS.write_flags}", file=sys.stderr)


def diagnose_settings() -> None:
    config = config_from_flags()
    diagnosis = preflight.diagnose(config)
    for line in diagnosis["report"]:
        print(line)
    for warning in diagnosis["warnings"]:
        print(warning.paragraph())
    print(f"one checked step (--checks=full): loss {diagnosis['loss']:.4f} (cross-entropy at chance: "
          f"{math.log(diagnosis['num_classes']):.4f}), gradient norm {diagnosis['gradient_norm']:.4g}; "
          f"every check passed, {len(diagnosis['warnings'])} warning(s)")


def main(argv):
    diagnose_run() if FLAGS.run_dir else diagnose_settings()


if __name__ == "__main__":
    cli.run(main)
