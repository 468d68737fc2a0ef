"""Settings written as train.py takes them: the one rule, booleans as --name / --noname."""


def flag_line(name: str, value) -> str:
    """One argument or flagfile line: --name / --noname for booleans, else --name=value."""
    if isinstance(value, bool):
        return f"--{name}" if value else f"--no{name}"
    return f"--{name}={value}"


def flag_lines(changes: dict) -> str:
    """`changes` as train.py arguments on one line."""
    return " ".join(flag_line(name, value) for name, value in changes.items())
