"""What every entry point shares: quiet TensorFlow start-up, flag errors and TapeloopError as
one `tapeloop: error:` paragraph with a non-zero exit (a traceback only with --verbosity>=1).

Exit codes: 0 success, 1 a TapeloopError (bad input, failed check), 2 invalid flags.
Import this module before TensorFlow so its C++ start-up logging stays quiet.
"""

import logging
import os
import sys
import traceback

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from absl import app, flags  # noqa: E402  (after the environment is set)
from absl import logging as absl_logging  # noqa: E402

from trainer.errors import TapeloopError  # noqa: E402

EXIT_ERROR = 1
EXIT_USAGE = 2
_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PROJECT_DIRS = tuple(os.path.join(_ROOT, name) + os.sep for name in ("data", "models", "scripts", "trainer"))


def _is_shown(record: logging.LogRecord) -> bool:
    """Below --verbosity=1, INFO lines come from tapeloop only, not from TensorFlow's internals."""
    return record.levelno >= logging.WARNING or record.pathname.startswith(PROJECT_DIRS)


def _parse_flags(argv: list[str]) -> list[str]:
    try:
        return flags.FLAGS(argv)
    except flags.Error as error:
        print(f"tapeloop: error: [flags] {error}. Nothing was run. Fix: correct the flag; "
              f"`{os.path.basename(argv[0])} --helpfull` lists every flag with its allowed values "
              "and default.", file=sys.stderr)
        sys.exit(EXIT_USAGE)


def run(main, takes_arguments: bool = False) -> None:
    """Runs `main(argv)` as an absl app, turning TapeloopError into the user-facing paragraph.

    Arguments other than flags are refused unless `takes_arguments` (e.g. predict.py's files).
    """

    def guarded_main(argv):
        if len(argv) > 1 and not takes_arguments:
            print(f"tapeloop: error: [flags] unexpected arguments {argv[1:]}; every setting is a "
                  "--flag. Fix: write them as --name=value.", file=sys.stderr)
            sys.exit(EXIT_USAGE)
        if flags.FLAGS.verbosity < 1:
            logging.getLogger("tensorflow").setLevel(logging.WARNING)
            absl_logging.get_absl_handler().addFilter(_is_shown)
        try:
            return main(argv)
        except TapeloopError as error:
            if flags.FLAGS.verbosity >= 1:
                traceback.print_exc()
            print(error.paragraph(), file=sys.stderr)
            sys.exit(EXIT_ERROR)

    app.run(guarded_main, flags_parser=_parse_flags)
