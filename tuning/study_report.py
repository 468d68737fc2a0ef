"""What a tune.py study has found: the table of its trials (markdown and CSV), the best trial,
STUDY/best.flags that reproduces it, and the best trial's test accuracy, measured once, after
the search (the search itself only ever sees the validation split)."""

import csv
import io
import os

import optuna

from data import sources
from trainer import run_directory
from trainer.checkpoints import evaluate_saved_model
from trainer.run_directory import load_run_config
from settings.arguments import flag_lines
from tuning.search_space import flag_text
from tuning.studies import StudySettings, counted_trials

LEFT_OUT_OF_BEST_FLAGS = ("--run_dir=", "--noscore_test")  # The trial's own directory; the test split back on.


def trial_rows(study: optuna.Study, settings: StudySettings) -> list[dict]:
    """One row a trial: number, state, parameters, the metric, steps, seconds. A pruned trial's
    metric is the last it reported, with its epoch."""
    rows = []
    for trial in counted_trials(study.get_trials(deepcopy=False)):
        value = "" if trial.value is None else f"{trial.value:.4f}"
        if trial.state == optuna.trial.TrialState.PRUNED and trial.intermediate_values:
            epoch = max(trial.intermediate_values)  # What the pruner judged.
            value = f"{trial.intermediate_values[epoch]:.4f} (epoch {epoch})"
        retried = trial.system_attrs.get("failed_trial")
        rows.append({"trial": trial.number, "state": trial.state.name.lower() + (f" (retry of {retried})"
                                                                                 if retried is not None else ""),
                     **{parameter.name: shown(trial.params.get(parameter.name, "")) for parameter in settings.space},
                     f"validation {settings.metric}": value, "steps": trial.user_attrs.get("steps", ""),
                     "seconds": f"{trial.user_attrs['seconds']:.0f}" if "seconds" in trial.user_attrs else ""})
    return rows


def shown(value) -> str:
    """A parameter as the table shows it: floats to 4 significant digits."""
    return f"{value:.4g}" if isinstance(value, float) else flag_text(value)


def markdown_table(rows: list[dict]) -> str:
    if not rows:
        return "(no trials yet)\n"
    header = list(rows[0])
    lines = ["| " + " | ".join(header) + " |", "|" + " --- |" * len(header)]
    lines += ["| " + " | ".join(str(row[column]) for column in header) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def csv_text(rows: list[dict]) -> str:
    stream = io.StringIO()
    if rows:
        writer = csv.DictWriter(stream, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return stream.getvalue()


def best_trial(study: optuna.Study) -> optuna.trial.FrozenTrial | None:
    """The complete trial with the best validation metric (pruned trials never count)."""
    complete = study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
    return study.best_trial if complete else None


def write_best_flags(settings: StudySettings, trial: optuna.trial.FrozenTrial) -> str:
    """STUDY/best.flags: the best trial's flags.txt without its run directory, the test split on."""
    with open(os.path.join(trial.user_attrs["run_dir"], "flags.txt")) as stream:
        kept = [line for line in stream.read().splitlines() if not line.startswith(LEFT_OUT_OF_BEST_FLAGS)]
    path = os.path.join(settings.folder, "best.flags")
    header = (f"# Trial {trial.number} of study {settings.name}: validation {settings.metric} {trial.value:.6f}.\n"
              f"# Reproduce: python scripts/train.py --flagfile={path} --run_dir=RUN\n")
    run_directory.write_text_atomic(path, header + "\n".join(kept) + "\n")
    return path


def test_accuracy_once(study: optuna.Study, trial: optuna.trial.FrozenTrial) -> dict:
    """The best trial's exported model scored on the test split; measured the first time it is
    asked for that trial and kept in the study, so later summaries print the same number."""
    kept = study.user_attrs.get("test_of_best")
    if kept and kept["trial"] == trial.number:
        return kept
    run_dir = trial.user_attrs["run_dir"]
    config = load_run_config(run_dir)
    spec, splits = sources.load(config)
    images, labels = splits["test"]
    scores = evaluate_saved_model(os.path.join(run_dir, "saved_model"), spec, images, labels,
                                  config.eval_batch_size, config.input_range)
    kept = {"trial": trial.number, "accuracy": scores["accuracy"], "loss": scores["loss/total"],
            "examples": int(len(labels))}
    study.set_user_attr("test_of_best", kept)
    return kept


def write_summary(study: optuna.Study, settings: StudySettings, complete: bool) -> str:
    """Writes STUDY/trials.md, trials.csv and best.flags; returns the text to print. The test
    accuracy is measured only once the study is `complete`."""
    rows = trial_rows(study, settings)
    run_directory.write_text_atomic(os.path.join(settings.folder, "trials.md"), markdown_table(rows))
    run_directory.write_text_atomic(os.path.join(settings.folder, "trials.csv"), csv_text(rows))
    states = [row["state"].split()[0] for row in rows]
    lines = [f"Study {settings.name} ({settings.storage_url}): {len(rows)} of {settings.trials} trials; "
             + ", ".join(f"{states.count(state)} {state}" for state in dict.fromkeys(states)),
             markdown_table(rows)]
    best = best_trial(study)
    if best is None:
        return "\n".join(lines + ["No trial has completed yet."])
    lines.append(f"Best: trial {best.number}, validation {settings.metric} {best.value:.4f}, "
                 + flag_lines(best.params))
    lines.append(f"Reproduce: python scripts/train.py --flagfile={write_best_flags(settings, best)} --run_dir=RUN")
    if complete:
        test = test_accuracy_once(study, best)
        lines.append(f"Test accuracy of trial {test['trial']} (its exported model, measured once, after the search; "
                     f"nothing was chosen on it): {test['accuracy']:.4f} on {test['examples']} examples")
    return "\n".join(lines)
