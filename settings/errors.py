"""What users see when something is wrong: a paragraph naming stage, expectation, finding and fix."""


class _Paragraph:
    """Stage, problem, expected, found and fix, rendered as one `tapeloop: <label>:` line."""

    label = ""

    def __init__(self, stage: str, problem: str, expected: str, found: str, fix: str):
        self.stage = stage
        self.problem = problem
        self.expected = expected
        self.found = found
        self.fix = fix
        super().__init__(self.paragraph())

    def paragraph(self) -> str:
        """One line (the terminal wraps it), so that it greps whole."""
        return (f"tapeloop: {self.label}: [{self.stage}] {self.problem}. "
                f"Expected {self.expected}; found {self.found}. Fix: {self.fix}")


class TapeloopError(_Paragraph, Exception):
    """A problem the user can fix: bad input, a failed check, a diverged run.

    Entry points print it as one paragraph beginning `tapeloop: error:` and exit
    non-zero, without a traceback.
    """

    label = "error"


class TapeloopWarning(_Paragraph, UserWarning):
    """A likely mistake that does not stop the run; logged once as `tapeloop: warning:`."""

    label = "warning"


class RunStopped(Exception):
    """Training stopped on a signal after saving a checkpoint; entry points print the message
    as one `tapeloop: stopped:` line and exit with 128 + `signal_number`."""

    def __init__(self, signal_number: int, message: str):
        self.signal_number = signal_number
        super().__init__(message)


def first_line(error: Exception, limit: int = 300) -> str:
    """The first line of an exception's message, at most `limit` characters, for a paragraph's "found"."""
    return str(error).splitlines()[0][:limit] if str(error) else ""


def described(error: Exception, limit: int = 300) -> str:
    """An exception as a paragraph's "found": its type and the first line of its message."""
    return f"{type(error).__name__}: {first_line(error, limit)}"
