"""The recipes' results: each number typed once in results/*.json, the tables of README.md and
docs/results.md rendered from those files, and a table that disagrees with its file found."""

import json
import shutil

import pytest

from settings.errors import TapeloopError
from tests.helpers import REPO
from trainer import recipe_results

PAGES = {"README.md": ("results table", recipe_results.headline_table),
         "docs/results.md": ("per-seed tables", recipe_results.seeds_table)}


@pytest.mark.parametrize("page", sorted(PAGES))
def test_the_committed_tables_are_the_ones_the_result_files_give(page):
    name, render = PAGES[page]
    text = (REPO / page).read_text()
    generated = recipe_results.with_generated(text, name, render(recipe_results.load_results(REPO / "results")))
    assert text == generated, f"{page} disagrees with results/*.json: run python scripts/render_docs.py"


def test_a_number_changed_in_a_result_file_makes_the_table_disagree(tmp_path):
    shutil.copytree(REPO / "results", tmp_path / "results")
    changed = tmp_path / "results" / "mnist.json"
    result = json.loads(changed.read_text())
    result["seeds"][0]["test_accuracy"] = 0.9901
    changed.write_text(json.dumps(result))
    text = (REPO / "README.md").read_text()
    regenerated = recipe_results.with_generated(
        text, "results table", recipe_results.headline_table(recipe_results.load_results(tmp_path / "results")))
    assert regenerated != text and "99.01%" in regenerated


def test_the_headline_row_gives_the_mean_the_range_and_marks_what_ran_beside_a_seed():
    result = {"dataset": "D", "config": "configs/x.flags", "summary": "s", "model": "m", "parameters": "1k",
              "epochs": 3, "anchor": "a", "cpu": "a CPU", "order": 0, "seeds": [
                  {"seed": 0, "test_accuracy": 0.9, "training_seconds": 1000, "commit": "c", "beside": "tests"},
                  {"seed": 1, "test_accuracy": 0.92, "training_seconds": 2000, "commit": "c"}]}
    table = recipe_results.headline_table([result])
    assert "| 1,000 s\\* / 2,000 s | **91.000%** (90.00-92.00%), 2 seeds |" in table
    assert "Alone on the machine unless marked: \\* tests." in table


def test_a_seed_without_its_measured_values_is_refused(tmp_path):
    (tmp_path / "x.json").write_text(json.dumps({"recipe": "x", "order": 0, "seeds": [{"seed": 0}]}))
    with pytest.raises(TapeloopError, match="has a seed without test_accuracy, training_seconds, commit"):
        recipe_results.load_results(tmp_path)


def test_a_page_without_the_markers_is_refused():
    with pytest.raises(TapeloopError, match="markers of the generated results table are missing"):
        recipe_results.with_generated("# a page\n", "results table", "| table |\n")
