"""Writes docs/reference/flags.md from every script's flag definitions (each script's --helpxml),
or with --check says whether the page on disk is the one they give: `python scripts/flag_reference.py`."""

from trainer import cli  # First: quiets TensorFlow's start-up logging.

import os
import subprocess
import sys
from pathlib import Path

from absl import flags

from trainer import flag_reference, run_directory
from settings.errors import TapeloopError

REPO = Path(__file__).resolve().parent.parent
flags.DEFINE_string("output", "docs/reference/flags.md", "The page to write (or to check), from the repository's folder.")
flags.DEFINE_boolean("check", False, "Write nothing; exit 1 with the paragraph if the page is not the generated one.")
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


def main(argv):
    os.chdir(REPO)
    scripts = sorted(path for path in (REPO / "scripts").glob("*.py"))
    page = flag_reference.render({script.name: helpxml(script) for script in scripts})
    if not FLAGS.check:
        os.makedirs(os.path.dirname(FLAGS.output), exist_ok=True)
        run_directory.write_text_atomic(FLAGS.output, page.encode())
        print(f"{FLAGS.output}: the flags of {len(scripts)} scripts")
        return
    on_disk = Path(FLAGS.output).read_text() if os.path.isfile(FLAGS.output) else ""
    if on_disk != page:
        raise TapeloopError(stage="docs", problem=f"{FLAGS.output} is not the page the flag definitions give",
                            expected="the generated page", found="a difference (a flag added, changed or removed)",
                            fix="run python scripts/flag_reference.py and commit the page")
    print(f"{FLAGS.output} matches the flag definitions.")


if __name__ == "__main__":
    cli.run(main)
