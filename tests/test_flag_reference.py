"""The flag reference: rendered from each script's own --helpxml, and the committed page is the generated one."""

import io
import re

import pytest
from absl import flags

from tests.helpers import REPO, run_script
from trainer import flag_reference
from settings.command_line import define_flags
from settings.declarations import SECTIONS

SMALL_HELPXML = """<?xml version="1.0" encoding="utf-8"?>
<AllFlags><program>tool.py</program><usage>Does one thing.

More words.</usage>
<flag><file>absl.app</file><name>help</name><meaning>show this help</meaning><default>false</default><type>bool</type></flag>
<flag><key>yes</key><file>scripts/tool.py</file><name>rate</name><meaning>A | rate.</meaning><default>0.5</default>
<type>float</type><lower_bound>0.0</lower_bound><upper_bound>1.0</upper_bound></flag>
<flag><key>yes</key><file>scripts/tool.py</file><name>kind</name><meaning>A kind.</meaning><default>a</default>
<type>string enum</type><enum_value>a</enum_value><enum_value>b</enum_value></flag>
<flag><file>tapeloop settings 05, optimization</file><name>epochs</name><meaning>Epochs.</meaning><default>1</default><type>int</type></flag>
</AllFlags>"""


def test_a_scripts_own_flags_are_read_with_type_default_bounds_and_values():
    usage, own, takes_training_flags = flag_reference.flags_of(SMALL_HELPXML)
    assert usage.startswith("Does one thing.") and takes_training_flags
    assert [(flag["name"], flag["default"], flag["allowed"]) for flag in own] == [
        ("kind", "a", "`a`, `b`"), ("rate", "0.5", "0.0 to 1.0")]


def test_the_page_has_a_row_per_flag_and_says_which_scripts_take_train_pys():
    page = flag_reference.render({"tool.py": SMALL_HELPXML})
    assert "## tool.py\n\nDoes one thing.\n" in page and "It also takes every flag of [train.py]" in page
    assert "| `--rate` | float | 0.5 | 0.0 to 1.0 | A \\| rate. |" in page and "--help`" not in page


def test_the_train_py_rows_of_the_committed_reference_are_the_flag_definitions():
    values = flags.FlagValues()
    define_flags(values)
    helpxml = io.StringIO()
    values.write_help_in_xml_format(helpxml)
    as_train_py = re.sub("<program>.*?</program>", "<program>train.py</program>", helpxml.getvalue())
    rendered = flag_reference.render({"train.py": as_train_py})
    committed = (REPO / "docs" / "reference" / "flags.md").read_text().split("\n## train.py\n")[1].split("\n## ")[0]
    assert ([line for line in rendered.splitlines() if line.startswith("| `--")]
            == [line for line in committed.splitlines() if line.startswith("| `--")])


@pytest.mark.slow  # Every script's --helpxml imports what the script imports (Optuna, cleanlab): about 20 s.
def test_the_committed_reference_is_the_one_the_flag_definitions_give():
    scripts = sorted((REPO / "scripts").glob("*.py"))
    generated = flag_reference.render({path.name: run_script(path.stem, "--helpxml").stdout for path in scripts})
    assert (REPO / "docs" / "reference" / "flags.md").read_text() == generated, (
        "docs/reference/flags.md is stale: run python scripts/render_docs.py")


def test_train_pys_flags_are_listed_under_their_sections_in_declared_order():
    values = flags.FlagValues()
    define_flags(values)
    helpxml = io.StringIO()
    values.write_help_in_xml_format(helpxml)
    page = flag_reference.render({"train.py": re.sub("<program>.*?</program>", "<program>train.py</program>",
                                                     helpxml.getvalue())})
    headings = re.findall(r"^### (.+)$", page, flags=re.MULTILINE)
    assert headings == [section.title.capitalize() for section in SECTIONS]
    assert page.index("| `--dataset` |") < page.index("### Augmentation") < page.index("| `--mixup_alpha` |")
