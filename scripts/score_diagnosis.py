"""Scores a diagnosis against the truth of a dataset variant: `python scripts/score_diagnosis.py
--truth=DIR/truth.json --diagnosis=diagnosis.json` (from make_dataset_variant.py and diagnose.py
--output). Prints the share of flipped labels among the top-K suspected training label errors,
K being the number flipped, and the share of copied test images reported as leakage.
"""

from trainer import cli  # First: the paragraph-style errors and exit codes.

import json

from absl import flags

flags.DEFINE_string("truth", None, "truth.json written by make_dataset_variant.py.", required=True)
flags.DEFINE_string("diagnosis", None, "The JSON diagnose.py --run_dir wrote with --output.", required=True)
FLAGS = flags.FLAGS


def label_precision(flipped: list[int], suspected: list[int] | None) -> str:
    if suspected is None:
        return "training label issues: not searched (diagnose.py --label_issues=cheap or thorough)"
    top = suspected[:len(flipped)]
    hits = len(set(top) & set(flipped))
    return (f"training label issues: {len(suspected)} suspected; of the top {len(flipped)} (the number flipped), "
            f"{hits} were flipped: precision {hits / max(len(top), 1):.4f}, recall {hits / len(flipped):.4f}")


def leakage_recall(copies: list[list[int]], duplicates: list[list[int]]) -> str:
    reported = {tuple(pair) for pair in duplicates}
    found = sum(tuple(pair) in reported for pair in copies)
    return (f"leakage: {found} of {len(copies)} copied test images reported with their training copy "
            f"({found / len(copies):.4f}); {len(duplicates) - found} other pairs reported")


def main(argv):
    with open(FLAGS.truth) as stream:
        truth = json.load(stream)
    with open(FLAGS.diagnosis) as stream:
        diagnosis = json.load(stream)
    if truth["flipped"]:
        print(label_precision([index for index, _, _ in truth["flipped"]], diagnosis["label_issues"]["train"]))
    if truth["copies"]:
        print(leakage_recall(truth["copies"], diagnosis["duplicates"]))


if __name__ == "__main__":
    cli.run(main)
