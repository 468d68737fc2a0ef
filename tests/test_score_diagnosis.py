"""score_diagnosis.py: a diagnosis' review queue scored against label errors people validated."""

import json

from tests.helpers import assert_one_paragraph_error, run_script


def mturk_entry(index: int, given: int) -> dict:
    return {"id": index, "given_original_label": 4, "our_guessed_label": 9,
            "mturk": {"given": given, "guessed": 5 - given, "neither": 0}}


def test_the_review_queue_is_scored_against_the_errors_a_majority_of_workers_validated(tmp_path):
    mturk = [mturk_entry(index, given) for index, given in ((11, 0), (22, 2), (33, 3), (44, 5), (55, 1))]
    (tmp_path / "mturk.json").write_text(json.dumps(mturk))
    diagnosis = {"label_issues": {"train": None, "test": [22]},
                 "label_review": {"test": [{"index": index, "score": 0.1 * rank, "label": 0, "suggested": 1}
                                           for rank, index in enumerate([22, 7, 33, 11, 8])]}}
    (tmp_path / "diagnosis.json").write_text(json.dumps(diagnosis))
    result = run_script("score_diagnosis", f"--diagnosis={tmp_path / 'diagnosis.json'}",
                        f"--validated_errors={tmp_path / 'mturk.json'}")
    assert result.returncode == 0, result.stderr
    # Validated: 11, 22, 55 (under 3 of 5 chose the given label); 33 and 44 were right.
    assert result.stdout.strip() == ("label review (test split): 2 of the 3 validated label errors among the first 5 "
                                     "(rank:index 1:22, 4:11); confident learning flagged 1 of them")


def test_a_file_that_is_not_mturk_results_is_the_paragraph(tmp_path):
    (tmp_path / "mturk.json").write_text(json.dumps({"947": "8"}))
    (tmp_path / "diagnosis.json").write_text("{}")
    result = run_script("score_diagnosis", f"--diagnosis={tmp_path / 'diagnosis.json'}",
                        f"--validated_errors={tmp_path / 'mturk.json'}")
    assert_one_paragraph_error(result, 1, "is not MTurk results", "cleanlab/label-errors")
