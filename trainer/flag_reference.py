"""The flag reference (docs/reference/flags.md), rendered from what each entry point's absl flags
say of themselves (`SCRIPT --helpxml`): name, type, default, allowed values or bounds and help,
so that it cannot drift from the definitions. scripts/render_docs.py writes and checks it."""

import itertools
import xml.etree.ElementTree as ElementTree

from settings.command_line import SECTION_MODULE_PREFIX
from settings.declarations import SETTINGS

DECLARED_ORDER = {setting.name: number for number, setting in enumerate(SETTINGS)}

HEADER = ("# Flag reference\n\nEvery flag of every script, generated from the flag definitions by "
          "`python scripts/render_docs.py` (the tests regenerate it and fail on any difference: edit the "
          "definitions, then rerun that command). A script that takes train.py's flags says so and lists only "
          "its own here.\n")


def flags_of(helpxml: str) -> tuple[str, list[dict], bool]:
    """(the script's usage text, its own flags, whether it takes train.py's flags) from its --helpxml.
    Each flag has its section: for train.py's, the settings section it is declared in; "" for a script's own."""
    root = ElementTree.fromstring(helpxml)
    own, takes_training_flags = [], False
    for flag in root.iter("flag"):
        module = flag.findtext("file", "")
        is_setting = module.startswith(SECTION_MODULE_PREFIX)
        takes_training_flags |= is_setting
        if flag.findtext("key") == "yes" or (is_setting and root.findtext("program") == "train.py"):
            own.append({"name": flag.findtext("name"), "type": flag.findtext("type"),
                        "default": flag.findtext("default", ""), "meaning": flag.findtext("meaning", ""),
                        "allowed": allowed_values(flag), "section": module if is_setting else ""})
    in_order = sorted(own, key=lambda flag: (flag["section"], DECLARED_ORDER.get(flag["name"], 0), flag["name"]))
    return root.findtext("usage", ""), in_order, takes_training_flags


def allowed_values(flag: ElementTree.Element) -> str:
    """An enum's values, or a number's bounds, as the reference shows them ("" if neither)."""
    values = [value.text for value in flag.iter("enum_value")]
    if values:
        return ", ".join(f"`{value}`" for value in values)
    lower, upper = flag.findtext("lower_bound"), flag.findtext("upper_bound")
    if lower is not None and upper is not None:
        return f"{lower} to {upper}"
    return f">= {lower}" if lower is not None else f"<= {upper}" if upper is not None else ""


def cell(text: str) -> str:
    """Text as one Markdown table cell."""
    return " ".join(text.split()).replace("|", "\\|")


def render(helpxml_by_script: dict[str, str]) -> str:
    """The reference page: train.py first, then every other script in name order."""
    sections = [HEADER]
    for script in sorted(helpxml_by_script, key=lambda name: (name != "train.py", name)):
        usage, own, takes_training_flags = flags_of(helpxml_by_script[script])
        sections.append(f"\n## {script}\n\n{cell(usage.split(chr(10) + chr(10))[0])}\n")
        if takes_training_flags and script != "train.py":
            sections.append("\nIt also takes every flag of [train.py](#trainpy).\n")
        for section, flags in itertools.groupby(own, key=lambda flag: flag["section"]):
            if section:
                sections.append(f"\n### {section.split(', ', 1)[1].capitalize()}\n")
            sections.append(table(list(flags)))
    return "".join(sections)


def table(flags: list[dict]) -> str:
    """A Markdown table of flags, a row each."""
    rows = [f"| `--{flag['name']}` | {cell(flag['type'])} | {cell(flag['default']) or '(none)'} | "
            f"{flag['allowed']} | {cell(flag['meaning'])} |\n" for flag in flags]
    return "\n| flag | type | default | allowed | meaning |\n| --- | --- | --- | --- | --- |\n" + "".join(rows)
