"""The JSON keys docs/reference/outputs.md documents, checked against a file a real run wrote."""

import re
from pathlib import Path

OUTPUTS_PAGE = Path(__file__).resolve().parent.parent / "docs" / "reference" / "outputs.md"
DEPTH = 3  # Deeper keys are described in their parent's row.


def documented_keys(section: str, page: str | None = None) -> dict[str, bool]:
    """{key pattern: whether it is always there} from the table under `## section`: a key whose meaning
    starts with "Only", and every key beneath it, is not."""
    text = OUTPUTS_PAGE.read_text() if page is None else page
    body = text.split(f"\n## {section}\n", 1)[1].split("\n## ", 1)[0]
    rows = re.findall(r"^\| `([^`]+)` \| (.*) \|$", body, flags=re.MULTILINE)
    optional = [key for key, meaning in rows if meaning.startswith("Only")]
    return {key: not any(key == parent or key.startswith(parent + ".") for parent in optional) for key, _ in rows}


def key_paths(value, prefix: str = "", depth: int = DEPTH) -> set[str]:
    """Every key path of `value` down to `depth` levels; `[]` marks the elements of a list of objects."""
    paths = set()
    if depth and isinstance(value, dict):
        for key, child in value.items():
            path = f"{prefix}.{key}" if prefix else str(key)
            paths |= {path} | key_paths(child, path, depth - 1)
    elif isinstance(value, list):
        for child in value:
            if isinstance(child, dict):
                paths |= key_paths(child, prefix + "[]", depth)
    return paths


def matches(pattern: str, path: str) -> bool:
    """Whether `path` is `pattern`, where a `<name>` segment stands for any key."""
    expression = r"\.".join(r"[^.]+" if re.fullmatch(r"<[^>]+>(\[\])?", segment) else re.escape(segment)
                            for segment in pattern.split("."))
    return re.fullmatch(expression, path) is not None


def undocumented_and_stale(section: str, written: dict, page: str | None = None) -> tuple[list, list]:
    """Keys `written` has that the page does not document, and keys the page says are always there that
    `written` lacks. A key under a documented row with no rows beneath it is described by that row."""
    documented = documented_keys(section, page)
    leaves = [pattern for pattern in documented
              if not any(other.startswith(pattern + ".") or other.startswith(pattern + "[]") for other in documented)]
    paths = key_paths(written)

    def described(path):
        parts = path.split(".")
        return any(matches(pattern, path) for pattern in documented) or any(
            matches(leaf, ".".join(parts[:cut])) for leaf in leaves for cut in range(1, len(parts)))
    undocumented = sorted(path for path in paths if not described(path))
    stale = sorted(pattern for pattern, always in documented.items()
                   if always and not any(matches(pattern, path) for path in paths))
    return undocumented, stale


def assert_documented(section: str, written: dict) -> None:
    undocumented, stale = undocumented_and_stale(section, written)
    assert (undocumented, stale) == ([], []), f"docs/reference/outputs.md, {section}: undocumented keys " \
        f"{undocumented}, documented keys the file lacks {stale}"
