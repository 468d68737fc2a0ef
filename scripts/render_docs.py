"""Writes the generated parts of the documentation, or with --check says whether the files on disk hold
them: docs/reference/flags.md from every script's flag definitions (each script's --helpxml), and the
results tables of README.md and docs/results.md from results/*.json. `python scripts/render_docs.py`."""

from trainer import cli  # First: quiets TensorFlow's start-up logging.

import os
import subprocess
import sys
from pathlib import Path

from absl import flags

from settings.errors import TapeloopError
from trainer import flag_reference, recipe_results, run_directory

REPO = Path(__file__).resolve().parent.parent
flags.DEFINE_boolean("check", False, "Write nothing; exit 1 with the paragraph if a generated part on disk is not "
                     "the one its sources give.")
FLAGS = flags.FLAGS


def helpxml(script: Path) -> str:
    """What `python SCRIPT --helpxml` prints: every flag the script defines, with its type and bounds."""
    done = subprocess.run([sys.executable, str(script), "--helpxml"], capture_output=True, text=True, cwd=REPO,
                          env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"})
    if "</AllFlags>" not in done.stdout:  # absl exits 1 after printing the help.
        raise TapeloopError(stage="docs", problem=f"{script.name} --helpxml failed",
                            expected="the script's flags as XML", found=(done.stderr.strip().splitlines() or [""])[-1],
                            fix=f"run python {script} --helpxml and fix what it reports")
    return done.stdout


def generated_pages() -> dict[str, str]:
    """Each file with generated parts, as the sources give it: {path from the repository: text}."""
    scripts = sorted((REPO / "scripts").glob("*.py"))
    results = recipe_results.load_results(REPO / "results")
    readme = (REPO / "README.md").read_text()
    results_page = (REPO / "docs" / "results.md").read_text()
    return {
        "docs/reference/flags.md": flag_reference.render({script.name: helpxml(script) for script in scripts}),
        "README.md": recipe_results.with_generated(readme, "results table", recipe_results.headline_table(results)),
        "docs/results.md": recipe_results.with_generated(results_page, "per-seed tables",
                                                         recipe_results.seeds_table(results)),
    }


def main(argv):
    os.chdir(REPO)
    pages = generated_pages()
    stale = [path for path, text in pages.items() if not os.path.isfile(path) or Path(path).read_text() != text]
    if FLAGS.check and stale:
        raise TapeloopError(stage="docs", problem=f"{', '.join(stale)} not what the sources give",
                            expected="the generated flag reference and results tables",
                            found="a difference (a flag or a result added, changed or removed)",
                            fix="run python scripts/render_docs.py and commit what it writes")
    for path in [] if FLAGS.check else stale:
        os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
        run_directory.write_text_atomic(path, pages[path].encode())
        print(f"{path}: written")
    print(f"{len(pages)} files with generated parts; {len(stale)} {'stale' if FLAGS.check else 'rewritten'}.")


if __name__ == "__main__":
    cli.run(main)
