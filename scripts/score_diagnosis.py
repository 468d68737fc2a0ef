"""Scores a diagnosis against known truth. `python scripts/score_diagnosis.py --truth=DIR/truth.json
--diagnosis=diagnosis.json` (from make_dataset_variant.py and diagnose.py --output) prints the share of
flipped labels among the top-K suspected training label errors, K being the number flipped, and the
share of copied test images reported as leakage. `--validated_errors=mnist_mturk.json` (labelerrors.com's
MTurk results, Northcutt et al. 2021) prints how many of the test-label errors people validated the
diagnosis' test review queue holds, and at which ranks.
"""

from trainer import cli  # First: the paragraph-style errors and exit codes.

import json

from absl import flags

from settings.errors import TapeloopError, described

flags.DEFINE_string("truth", None, "truth.json written by make_dataset_variant.py.")
flags.DEFINE_string("diagnosis", None, "The JSON diagnose.py --run_dir wrote with --output.", required=True)
flags.DEFINE_string("validated_errors", None, "MTurk results of a test set's suspected label errors, as "
                    "cleanlab/label-errors publishes them (mturk/<dataset>_mturk.json): an error is validated when "
                    "3 or more of its 5 workers did not choose the given label (the paper's rule).")
flags.register_multi_flags_validator(["truth", "validated_errors"], lambda values: any(values.values()),
                                     "pass --truth, --validated_errors or both")
FLAGS = flags.FLAGS
MAJORITY = 3  # Of the 5 workers who saw each suspected error.


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


def validated_errors(mturk: list) -> list[int]:
    """The test indices whose given label a majority of workers rejected."""
    try:
        return sorted(int(entry["id"]) for entry in mturk if entry["mturk"]["given"] < MAJORITY)
    except (TypeError, KeyError, ValueError) as error:
        raise TapeloopError(stage="flags", problem=f"--validated_errors={FLAGS.validated_errors} is not MTurk results",
                            expected='a JSON list of {"id": test index, "mturk": {"given": votes, ...}}',
                            found=described(error),
                            fix="pass mturk/<dataset>_mturk.json from github.com/cleanlab/label-errors") from None


def review_recall(errors: list[int], diagnosis: dict) -> str:
    queue = [entry["index"] for entry in (diagnosis.get("label_review") or {}).get("test", [])]
    if not queue:
        return "label review (test split): none in the diagnosis (diagnose.py --label_issues=test or above)"
    ranks = sorted((queue.index(index) + 1, index) for index in set(queue) & set(errors))
    flagged = set(errors) & set((diagnosis.get("label_issues") or {}).get("test") or [])
    return (f"label review (test split): {len(ranks)} of the {len(errors)} validated label errors among the first "
            f"{len(queue)} (rank:index {', '.join(f'{rank}:{index}' for rank, index in ranks)}); confident learning "
            f"flagged {len(flagged)} of them")


def main(argv):
    diagnosis = read_json(FLAGS.diagnosis)
    if FLAGS.validated_errors:
        print(review_recall(validated_errors(read_json(FLAGS.validated_errors)), diagnosis))
    if not FLAGS.truth:
        return
    truth = read_json(FLAGS.truth)
    if truth["flipped"]:
        print(label_precision([index for index, _, _ in truth["flipped"]], diagnosis["label_issues"]["train"]))
    if truth["copies"]:
        print(leakage_recall(truth["copies"], diagnosis["duplicates"]))


def read_json(path: str):
    with open(path, encoding="utf-8") as stream:
        return json.load(stream)


if __name__ == "__main__":
    cli.run(main)
