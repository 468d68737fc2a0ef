"""The Markdown documentation against the code: every script and config it names exists, every
--flag given to a script is one of that script's (docs/reference/flags.md, itself checked against
the definitions), and every train.py command in a shell block parses."""

import json
import re
import shlex
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf
from absl import flags

from tests.helpers import REPO, run_script
from settings.command_line import define_flags

ABSL_FLAGS = {"flagfile", "helpfull", "help", "helpshort", "helpxml", "verbosity", "only_check_args"}
OTHER_TOOLS_FLAGS = {"durations", "logdir",  # pytest's and TensorBoard's, named in prose;
                     "seeds", "threads"}  # comparisons/pytorch_mnist_speedrun.py's.
FLAG = re.compile(r"(?<![\w-])--(no)?([a-z][a-z0-9_]*)(=\S*)?")
SHELL_BLOCK = re.compile(r"```[a-z]*\n(.*?)```", re.S)
PLACEHOLDER = re.compile(r"\$|\b[A-Z][A-Z_]{2,}\b")  # $seed, RUN, DIR: values the reader fills in.


def markdown_files() -> list[Path]:
    return [REPO / "README.md", REPO / "BUILD.md"] + sorted((REPO / "docs").rglob("*.md"))


def flags_by_script(reference: str) -> dict[str, set[str]]:
    """Each script's flags from the reference page: its own, train.py's if it takes them, absl's."""
    own, takes_training, current = {}, set(), None
    for line in reference.splitlines():
        if line.startswith("## "):
            current = line[3:].strip()
            own[current] = set()
        elif current and line.startswith("It also takes every flag of [train.py]"):
            takes_training.add(current)
        elif current and (match := re.match(r"\| `--(\w+)`", line)):
            own[current].add(match.group(1))
    return {script: names | ABSL_FLAGS | (own["train.py"] if script in takes_training else set())
            for script, names in own.items()}


def script_commands(text: str):
    """(line, script, the rest of the command) of each project script a shell block runs."""
    for block in SHELL_BLOCK.finditer(text):
        line = text[:block.start()].count("\n") + 2
        for command in re.split(r"\n|&&|;| \| ", block.group(1).replace("\\\n", " ")):
            for match in re.finditer(r"scripts/(\w+\.py)\b(.*)", command.split(" #")[0]):
                yield line, match.group(1), match.group(2)


def stale_flags(text: str, known: dict[str, set[str]]) -> list[str]:
    """Flags a shell block gives a script that lacks them, and flags no script has anywhere."""
    problems = [f"line {line}: {script} has no --{name}" for line, script, rest in script_commands(text)
                if script in known for negated, name, _ in FLAG.findall(rest)
                if name not in known[script] and not (negated and f"no{name}" in known[script])]
    every = set().union(*known.values()) | OTHER_TOOLS_FLAGS
    problems += [f"line {text[:match.start()].count(chr(10)) + 1}: no script has --{match.group(2)}"
                 for match in FLAG.finditer(text) if match.group(2) not in every
                 and not text[match.end():match.end() + 1] == "*" and not match.group(2).endswith("_")]
    return problems


@pytest.fixture(scope="module")
def known_flags() -> dict[str, set[str]]:
    return flags_by_script((REPO / "docs" / "reference" / "flags.md").read_text())


@pytest.mark.parametrize("path", markdown_files(), ids=lambda path: str(path.relative_to(REPO)))
def test_every_flag_the_docs_give_a_script_is_one_of_its_flags(path, known_flags):
    assert stale_flags(path.read_text(), known_flags) == []


def test_a_planted_stale_flag_is_caught(known_flags):
    planted = "Run\n\n```sh\npython scripts/export.py --run_dir=RUN --epochs=3\n```\n\nthen `--learning_rat=0.1`.\n"
    assert stale_flags(planted, known_flags) == ["line 4: export.py has no --epochs",
                                                 "line 7: no script has --learning_rat"]


@pytest.mark.parametrize("path", markdown_files(), ids=lambda path: str(path.relative_to(REPO)))
def test_every_script_and_config_the_docs_name_exists(path):
    text = path.read_text()
    named = set(re.findall(r"\b(?:scripts/[\w.]+\.(?:py|sh)|configs/[\w.]+\.flags)\b", text))
    assert sorted(name for name in named if not (REPO / name).exists() and not PLACEHOLDER.search(name)) == []


@pytest.mark.parametrize("path", markdown_files(), ids=lambda path: str(path.relative_to(REPO)))
def test_every_train_py_command_in_the_docs_parses(path):
    failures = []
    for line, script, rest in script_commands(path.read_text()):
        if script != "train.py":
            continue
        arguments = [re.sub("[\"']", "", argument) for argument in rest.split()  # Quotes the shell would take.
                     if argument.startswith("--") and not PLACEHOLDER.search(argument)]
        values = flags.FlagValues()
        define_flags(values)
        try:
            values(["train.py", *arguments])
        except (flags.Error, ValueError) as error:
            failures.append(f"line {line}: {error}")
    assert failures == []


def readme_command(script: str, containing: str) -> str:
    """The arguments of the first command of README that runs `script` with `containing` in them."""
    return next(rest for _, name, rest in script_commands((REPO / "README.md").read_text())
                if name == script and containing in rest)


def write_photos(folder: Path) -> None:
    """Three classes of eight JPEG photos each, of a few sizes, as a user's folder holds them."""
    generator = np.random.default_rng(0)
    for label in ("cat", "dog", "owl"):
        (folder / label).mkdir(parents=True)
        for index in range(8):
            pixels = generator.integers(0, 256, size=(40 + 4 * index, 56, 3), dtype=np.uint8)
            (folder / label / f"{index}.jpg").write_bytes(tf.io.encode_jpeg(pixels).numpy())


@pytest.mark.slow  # README's task "your own folder of photos", as written, for two steps.
def test_the_readme_photo_commands_train_and_predict_as_written(tmp_path):
    write_photos(tmp_path / "photos")
    train = readme_command("train.py", "--dataset=image_folder")
    arguments = shlex.split(train.replace("DIR", str(tmp_path / "photos")).replace("runs/", f"{tmp_path}/")
                            .replace("--pretrained=imagenet", "--pretrained=none"))  # CI reaches no Keras download.
    trained = run_script("train", *arguments, "--max_steps=2", "--batch_size=8", "--progress=log")
    assert trained.returncode == 0, trained.stderr
    predict = readme_command("predict.py", "runs/photos").replace("runs/", f"{tmp_path}/")
    photo = next((tmp_path / "photos" / "owl").glob("*.jpg"))
    predicted = run_script("predict", *shlex.split(predict.replace("photo.jpg", str(photo))))
    assert predicted.returncode == 0, predicted.stderr
    assert str(photo) in predicted.stdout and "owl" in predicted.stdout


@pytest.mark.slow  # README's task "several GPUs on one machine": on a CPU, one replica.
@pytest.mark.skipif(not Path("/usr/share/datasets/fashion-mnist").is_dir(),
                    reason="Debian's dataset-fashion-mnist is not installed")
def test_the_readme_mirrored_command_trains_as_written(tmp_path):
    command = readme_command("train.py", "--strategy=mirrored").replace("runs/", f"{tmp_path}/")
    trained = run_script("train", *shlex.split(command), "--max_steps=2", "--progress=log")
    assert trained.returncode == 0, trained.stderr
    assert json.loads((tmp_path / "fashion_4gpu" / "results.json").read_text())["steps"] == 2
