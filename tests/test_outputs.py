"""docs/reference/outputs.md against the files real runs write; the other files are checked by the
tests of the scripts that write them (diagnose, improve, tune, benchmark)."""

import json

import pytest

from tests.documented_outputs import assert_documented, documented_keys, undocumented_and_stale

PAGE = """# Outputs

## thing.json

| key | meaning |
| --- | --- |
| `a` | a number |
| `b` | a map |
| `b.<name>` | its entries |
| `c` | Only sometimes |
| `d` | a record whose keys its row describes |
| `e` | a list of records |
| `e[].f` | each element's f |

## other.json
"""


def test_the_checker_reads_the_documented_keys_and_which_are_always_there():
    assert documented_keys("thing.json", PAGE) == {"a": True, "b": True, "b.<name>": True, "c": False,
                                                   "d": True, "e": True, "e[].f": True}


def test_the_checker_finds_an_undocumented_key_and_a_documented_one_the_file_lacks():
    written = {"a": 1, "b": {"x": 1, "y": 2}, "d": {"inner": {"deep": 1}}, "e": [{"f": 1}], "planted": 2}
    assert undocumented_and_stale("thing.json", written, PAGE) == (["planted"], [])
    del written["planted"], written["a"]
    assert undocumented_and_stale("thing.json", written, PAGE) == ([], ["a"])


@pytest.mark.slow
def test_results_json_of_a_finished_run_has_the_documented_keys(synthetic_run):
    assert_documented("results.json", json.loads((synthetic_run / "results.json").read_text()))
