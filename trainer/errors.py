"""The one error type users see: a paragraph naming stage, expectation, finding and fix."""

class TapeloopError(Exception):
    """A problem the user can fix: bad input, a failed check, a diverged run.

    Entry points print it as one paragraph beginning `tapeloop: error:` and exit
    non-zero, without a traceback.
    """

    def __init__(self, stage: str, problem: str, expected: str, found: str, fix: str):
        self.stage = stage
        self.problem = problem
        self.expected = expected
        self.found = found
        self.fix = fix
        super().__init__(self.paragraph())

    def paragraph(self) -> str:
        """One line (the terminal wraps it), so that it greps whole."""
        return (f"tapeloop: error: [{self.stage}] {self.problem}. "
                f"Expected {self.expected}; found {self.found}. Fix: {self.fix}")
