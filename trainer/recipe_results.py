"""The recipes' measured results (results/<recipe>.json: command, commit, CPU kind, per-seed test accuracy
and training seconds) and the tables rendered from them into README.md and docs/results.md, so that each
number is typed once. scripts/render_docs.py writes and checks the tables."""

import json
import statistics
from pathlib import Path

from settings.errors import TapeloopError

SEED_FIELDS = ("seed", "test_accuracy", "training_seconds", "commit")


def load_results(folder: Path) -> list[dict]:
    """Every results/<recipe>.json, in the order the tables list them."""
    results = [json.loads(path.read_text()) for path in sorted(folder.glob("*.json"))]
    for result in results:
        for seed in result["seeds"]:
            missing = [field for field in SEED_FIELDS if field not in seed]
            if missing:
                raise TapeloopError(stage="docs", problem=f"results/{result['recipe']}.json has a seed without "
                                    f"{', '.join(missing)}", expected=f"each seed with {', '.join(SEED_FIELDS)}",
                                    found=json.dumps(seed), fix="add the measured values from the run's results.json")
    return sorted(results, key=lambda result: result["order"])


def percent(accuracy: float, decimals: int = 2) -> str:
    return f"{100 * accuracy:.{decimals}f}%"


def accuracy_summary(result: dict) -> str:
    """**mean** (low-high), N seeds."""
    accuracies = [seed["test_accuracy"] for seed in result["seeds"]]
    return (f"**{percent(statistics.mean(accuracies), 3)}** ({percent(min(accuracies))[:-1]}-"
            f"{percent(max(accuracies))}), {len(accuracies)} seeds")


def footnote_marks(results: list[dict]) -> dict[str, str]:
    """One mark (*, **, ...) per distinct note of what ran beside a seed, in table order."""
    notes = [seed["beside"] for result in results for seed in result["seeds"] if seed.get("beside")]
    return {note: "\\*" * number for number, note in enumerate(dict.fromkeys(notes), start=1)}


def seconds_per_seed(result: dict, marks: dict[str, str]) -> str:
    return " / ".join(f"{seed['training_seconds']:,} s{marks.get(seed.get('beside'), '')}"
                      for seed in result["seeds"])


def headline_table(results: list[dict]) -> str:
    """README's table: a row per recipe, then what ran beside the seeds marked."""
    marks = footnote_marks(results)
    lines = ["| dataset | recipe | model, parameters | epochs | training time per seed | test accuracy: mean "
             "(range) | published anchors |", "| --- | --- | --- | --- | --- | --- | --- |"]
    lines += [f"| {result['dataset']} | `{result['config']}`: {result['summary']} | {result['model']}: "
              f"{result['parameters']} | {result['epochs']} | {seconds_per_seed(result, marks)} | "
              f"{accuracy_summary(result)} | {result['anchor']} |" for result in results]
    cpus = sorted({result["cpu"] for result in results})
    lines += ["", f"Measured on: {'; '.join(cpus)}; no GPU. Alone on the machine unless marked: "
              + "; ".join(f"{mark} {note}" for note, mark in marks.items()) + "."]
    return "\n".join(lines) + "\n"


def seeds_table(results: list[dict]) -> str:
    """docs/results.md's table: every seed of every recipe with its command, commit and CPU kind."""
    lines = []
    for result in results:
        lines += [f"### `{result['config']}`", "", f"{result['dataset']}, {result['model']} "
                  f"({result['parameters']} parameters), {result['epochs']} epochs; the weights scored: "
                  f"{result['weights']}; scored by `{result['scored_by']}`; {result['cpu']}, "
                  f"{result['precision']}.", "", "```sh", result["command"], "```", "",
                  "| seed | test accuracy | training seconds (`wall_seconds`) | commit | beside it |",
                  "| --- | --- | --- | --- | --- |"]
        lines += [f"| {seed['seed']} | {percent(seed['test_accuracy'])} | {seed['training_seconds']:,} | "
                  f"`{seed['commit']}` | {seed.get('beside', 'nothing')} |" for seed in result["seeds"]]
        lines += ["", f"Mean {accuracy_summary(result).replace('**', '')}.", ""]
    return "\n".join(lines)


def begin_marker(name: str) -> str:
    return f"<!-- {name}: generated from results/*.json by scripts/render_docs.py; edit those files -->"


def end_marker(name: str) -> str:
    return f"<!-- end of {name} -->"


def with_generated(text: str, name: str, content: str) -> str:
    """`text` with the block between the markers of `name` replaced by `content`."""
    begin, end = begin_marker(name), end_marker(name)
    if text.count(begin) != 1 or text.count(end) != 1 or text.index(begin) > text.index(end):
        raise TapeloopError(stage="docs", problem=f"the markers of the generated {name} are missing or repeated",
                            expected=f"one {begin} line and, after it, one {end} line", found="otherwise",
                            fix="put the two marker lines back around the table")
    head, rest = text.split(begin)
    return f"{head}{begin}\n{content}{end}{rest.split(end, 1)[1]}"
