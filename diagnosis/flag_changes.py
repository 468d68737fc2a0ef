"""A diagnosis turned into a run to try: the run's flags.txt with the top fixable finding's flag
changes applied (`diagnose.py --write_flags=FILE`), each changed line under a comment naming the
finding and its evidence, and a run directory of its own."""

import os

from diagnosis.findings import Finding
from settings.arguments import flag_line


def top_fixable(findings: list[Finding]) -> Finding | None:
    """The costliest finding that a flag change can try (findings come ranked)."""
    return next((finding for finding in findings if finding.flags), None)


def changed_flagfile(flags_text: str, finding: Finding, run_dir: str) -> str:
    """`flags_text` (the flags.txt of the run in `run_dir`) with `finding`'s changes, and
    --run_dir=<run_dir>_<kind> so that the new run starts afresh beside the old one instead of
    resuming it."""
    lines = flags_text.splitlines()
    changes = {name: (value, f"# {finding.kind} ({finding.severity}): {finding.evidence}")
               for name, value in finding.flags.items()}
    changes["run_dir"] = (f"{os.path.normpath(run_dir)}_{finding.kind}",
                          f"# a run directory of its own: {run_dir} stays as it was")
    for name, (value, comment) in changes.items():
        new = [comment, flag_line(name, value)]
        spelled = (f"--{name}=", f"--{name}", f"--no{name}")
        at = next((index for index, line in enumerate(lines)
                   if line.startswith(spelled[0]) or line.strip() in spelled[1:]), None)
        if at is None:
            lines += new
        else:
            lines[at:at + 1] = new
    return "\n".join(lines) + "\n"
