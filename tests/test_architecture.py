"""The layout docs/development.md describes, read from the source: which package imports which, and no
function longer than about a screen."""

import ast
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
LONGEST_FUNCTION = 60
# Each package and the project packages it may import: shared ground at the bottom, scripts on top.
LAYERS = {"settings": set(), "models": {"settings"}, "data": {"settings"},
          "trainer": {"settings", "models", "data"}, "diagnosis": {"settings", "models", "data", "trainer"},
          "tuning": {"settings", "models", "data", "trainer", "diagnosis"}}


def imported_modules(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.update([node.module] + [f"{node.module}.{alias.name}" for alias in node.names])
    return names


def project_imports(package: str, imported: str = "trainer") -> dict[str, set[str]]:
    """File -> the modules of package `imported` it imports, for every file of `package`."""
    return {str(path.relative_to(REPO)): {name for name in imported_modules(path)
                                          if name == imported or name.startswith(f"{imported}.")}
            for path in sorted((REPO / package).glob("*.py"))}


def forbidden_imports(package: str) -> dict[str, set[str]]:
    """File -> the project packages it imports that LAYERS does not let `package` import."""
    forbidden = set(LAYERS) - LAYERS[package] - {package}
    found = {}
    for other in sorted(forbidden):
        for path, names in project_imports(package, other).items():
            if names:
                found.setdefault(path, set()).update(names)
    return found


@pytest.mark.parametrize("package", sorted(LAYERS))
def test_each_package_imports_only_the_layers_below_it(package):
    assert forbidden_imports(package) == {}


def test_the_layer_check_sees_a_planted_violation(tmp_path, monkeypatch):
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "bad.py").write_text("from settings.config import TrainConfig\nfrom trainer import loop\n")
    (tmp_path / "settings").mkdir()
    (tmp_path / "settings" / "bad.py").write_text("import data.pipeline\n")
    monkeypatch.setattr(sys.modules[__name__], "REPO", tmp_path)
    assert forbidden_imports("data") == {"data/bad.py": {"trainer", "trainer.loop"}}
    assert forbidden_imports("settings") == {"settings/bad.py": {"data.pipeline"}}


@pytest.mark.parametrize("package", [*sorted(LAYERS), "tests"])
def test_nothing_imports_the_scripts(package):
    assert {path: names for path, names in project_imports(package, "scripts").items() if names} == {}


@pytest.mark.parametrize("package", [*sorted(LAYERS), "scripts"])
def test_no_function_is_longer_than_a_screen(package):
    long = []
    for path in sorted((REPO / package).glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                length = node.end_lineno - node.lineno + 1
                name = (str(path.relative_to(REPO)), node.name)
                if length > LONGEST_FUNCTION:
                    long.append(f"{name[0]}:{node.lineno} {node.name} ({length} lines)")
    assert long == []


def test_the_import_check_sees_a_forbidden_import(tmp_path, monkeypatch):
    (tmp_path / "models").mkdir()
    (tmp_path / "models" / "bad.py").write_text("from trainer.loop import train\nimport keras\n")
    monkeypatch.setattr(sys.modules[__name__], "REPO", tmp_path)
    assert project_imports("models") == {"models/bad.py": {"trainer.loop", "trainer.loop.train"}}


def test_the_import_check_sees_trainer_importing_the_diagnosis(tmp_path, monkeypatch):
    (tmp_path / "trainer").mkdir()
    (tmp_path / "trainer" / "bad.py").write_text("from diagnosis import findings\nimport tuning.studies\n")
    monkeypatch.setattr(sys.modules[__name__], "REPO", tmp_path)
    assert project_imports("trainer", "diagnosis") == {"trainer/bad.py": {"diagnosis", "diagnosis.findings"}}
    assert project_imports("trainer", "tuning") == {"trainer/bad.py": {"tuning.studies"}}
