"""What every entry point shares: quiet TensorFlow start-up, flag errors and TapeloopError as
one `tapeloop: error:` paragraph with a non-zero exit (a traceback only with --verbosity>=1).

The paragraph is always the last line on stderr, whatever TensorFlow printed before it.
Exit codes: 0 success, 1 a TapeloopError (bad input, failed check), 2 invalid flags,
128 + N stopped by signal N (130 Ctrl-C, 143 SIGTERM; training saves a checkpoint first).
Import this module before TensorFlow: it sets TensorFlow's environment (TENSORFLOW_ENVIRONMENT).
"""

import gc
import json
import logging
import os
import signal
import sys
import traceback

# Set before TensorFlow starts (any setting the user exported wins): its C++ start-up logging quiet,
# and oneDNN's kernels on every x86 CPU. TensorFlow turns oneDNN on by itself only where the CPU has
# AVX512_VNNI, AVX512_BF16, AVX_VNNI or AMX; on an AVX2 CPU without them its own convolutions took
# 2.5x oneDNN's time (docs/benchmarks.md, "oneDNN").
TENSORFLOW_ENVIRONMENT = {"TF_CPP_MIN_LOG_LEVEL": "2", "TF_ENABLE_ONEDNN_OPTS": "1"}
for _name, _value in TENSORFLOW_ENVIRONMENT.items():
    os.environ.setdefault(_name, _value)

from absl import app, flags  # noqa: E402  (after the environment is set)
from absl import logging as absl_logging  # noqa: E402

from settings.command_line import require_finite_floats  # noqa: E402
from settings.errors import RunStopped, TapeloopError  # noqa: E402

EXIT_ERROR = 1
EXIT_USAGE = 2
_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PROJECT_DIRS = tuple(os.path.join(_ROOT, name) + os.sep
                     for name in ("settings", "data", "models", "scripts", "trainer", "diagnosis", "tuning"))


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


def _print_last_and_exit(text: str, exit_code: int) -> None:
    """Prints `text` as the last line on stderr and exits.

    Called outside the `except` block, so the exception's frames are gone: collecting them first
    makes TensorFlow's exit-time messages about them (e.g. unused checkpoint values) come before.
    """
    gc.collect()
    sys.stdout.flush()
    sys.stderr.flush()
    print(text, file=sys.stderr, flush=True)
    sys.exit(exit_code)


def check_output_path(path: str | None, holds: str = "the JSON") -> None:
    """Refuses an --output that cannot be written, before any work is done ('-' is stdout)."""
    if not path or path == "-":
        return
    folder = os.path.dirname(os.path.abspath(path))
    problem = ("is a folder" if os.path.isdir(path) else f"is in {folder}, which does not exist"
               if not os.path.isdir(folder) else None)
    if problem:
        raise TapeloopError(stage="flags", problem=f"--output={path} {problem}", expected=f"a file path to write "
                            f"{holds} to, in an existing folder", found=problem,
                            fix="pass a file name, e.g. --output=results.json, or - for stdout"
                            if holds == "the JSON" else "pass a file name")


def refuse_to_overwrite(paths: list[str], overwrite: bool) -> None:
    """The one rule of the scripts that write files a user names: a file already there is never
    replaced unless the user passed --overwrite (then it is said)."""
    existing = [path for path in paths if os.path.lexists(path)]
    if existing and not overwrite:
        raise TapeloopError(
            stage="output", problem=f"{', '.join(existing)} exist{'s' if len(existing) == 1 else ''} already",
            expected="new files (a file already there, yours or one this script wrote before, is never replaced "
                     "without --overwrite)", found=f"{len(existing)} of the {len(paths)} files it writes",
            fix="pass another output path, or --overwrite to replace them; nothing was written")
    for path in existing:
        absl_logging.warning("Replacing %s (--overwrite).", path)


def write_json(path: str, value) -> None:
    """Writes `value` as indented JSON to `path` ('-': stdout); a failed write is the paragraph."""
    text = json.dumps(value, indent=2)
    if path == "-":
        print(text)
        return
    try:
        with open(path, "w") as stream:
            stream.write(text + "\n")
    except OSError as error:
        raise TapeloopError(stage="output", problem=f"cannot write --output={path}", expected="a writable file",
                            found=f"{type(error).__name__}: {error.strerror or error}",
                            fix="pass another path, or - for stdout") from None


def file_system_error(error: OSError) -> TapeloopError:
    """An OSError no stage turned into its own paragraph, as the paragraph naming the path."""
    path = error.filename if error.filename is not None else "a path"
    return TapeloopError(stage="file system", problem=f"{path} could not be used: {error.strerror or error}",
                         expected="paths that exist where they are read, and room and permission where they are "
                                  "written, each name under 255 bytes", found=f"{type(error).__name__} (errno "
                                  f"{error.errno})", fix="check that path (its length, its permissions, the free "
                                                         "space there) or pass another")


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
        sys.stdout.reconfigure(errors="backslashreplace")  # File names need not be valid UTF-8.
        try:
            return main(argv)
        except TapeloopError as error:
            if flags.FLAGS.verbosity >= 1:
                traceback.print_exc()
            last_line = (error.paragraph(), EXIT_ERROR)
        except OSError as error:  # A path the file system refuses (too long, no permission, disk full, ...).
            if flags.FLAGS.verbosity >= 1:
                traceback.print_exc()
            last_line = (file_system_error(error).paragraph(), EXIT_ERROR)
        except RunStopped as stopped:
            last_line = (f"tapeloop: stopped: {stopped}", 128 + stopped.signal_number)
        except KeyboardInterrupt:
            last_line = ("tapeloop: stopped: interrupted (Ctrl-C); what it had finished writing is kept.",
                         128 + signal.SIGINT)
        _print_last_and_exit(*last_line)

    require_finite_floats(flags.FLAGS.get_flags_for_module(sys.modules["__main__"]))  # The script's own, as train.py's.
    app.run(guarded_main, flags_parser=_parse_flags)
