"""improve.py: from a finished run's diagnosis to a better run, by trying its findings' flag changes.

Each round diagnoses the current best run on its validation split (never the test split), trains
one trial per fixable finding above `minor` (in rank order, at most --trials_per_round), each an
ordinary run in STUDY_DIR/round_K/<finding>, and keeps the best trial only if its validation
accuracy beats the current best by more than the noise of the split: two standard errors of the
difference of two accuracies on its examples, and at least one example. It stops when nothing
above minor remains, a round keeps nothing, or the rounds are spent; then the final run alone is
scored on the test split. A rerun continues: finished trials are read back, not retrained.
"""

import dataclasses
import json
import math
import os

from data import pipeline
from diagnosis import flag_changes, report
from trainer import loop, run_directory
from trainer.errors import TapeloopError
from trainer.evaluation import Evaluator, evaluation_batches
from trainer.flags import load_run_config, parse_config, serialize_config
from trainer.setup import final_model

HELD_OUT = 0.1  # The validation split improve.py holds out when the run had none.


@dataclasses.dataclass
class Trial:
    """One run of the improvement: the starting run (round 0) or a finding's trial."""

    round: int
    finding: str | None
    flags: dict | None
    run_dir: str
    validation: float
    validation_examples: int
    kept: bool = False


def noise_of(accuracy: float, examples: int) -> float:
    """The smallest validation gain taken as real: two standard errors of the difference of two
    accuracies near `accuracy` on `examples` examples, and at least one example."""
    return max(1 / examples, 2 * math.sqrt(2 * accuracy * (1 - accuracy) / examples))


def keeps(best: Trial, tried: Trial) -> bool:
    """Whether `tried` beats `best` on validation by more than the noise."""
    return tried.validation - best.validation > noise_of(best.validation, best.validation_examples)


def trained(flags_text: str, run_dir: str, round_number: int, finding: str | None, changes: dict | None,
            validation_examples: int) -> Trial:
    """Trains (or resumes, or reads back) the run `flags_text` describes; returns it as a Trial
    (`validation_examples`: its validation split's size, the same for every trial)."""
    os.makedirs(run_dir, exist_ok=True)
    path = os.path.join(run_dir, "improve.flags")
    run_directory.write_text_atomic(path, flags_text)
    results = loop.train(parse_config([f"--flagfile={path}"]))
    return Trial(round_number, finding, changes, run_dir, results["eval"]["accuracy"], validation_examples)


def validation_size(config) -> int:
    """The examples of the run's validation split (the data's labels, read again)."""
    return len(pipeline.prepare_data(config).validation[1])


def starting_trial(run_dir: str, study_dir: str) -> tuple[Trial, list[str]]:
    """The run to improve, as a Trial with a validation score: the run itself, or (without a
    validation split) the same flags retrained with HELD_OUT of the training split held out."""
    config = load_run_config(run_dir)
    results_path = os.path.join(run_dir, "results.json")
    if config.validation_split > 0 and os.path.exists(results_path):
        with open(results_path, encoding="utf-8") as stream:
            results = json.load(stream)
        return Trial(0, None, None, run_dir, results["eval"]["accuracy"], validation_size(config)), []
    retrained = dataclasses.replace(config, validation_split=HELD_OUT, score_test=False,
                                    run_dir=os.path.join(study_dir, "round_0", "start"))
    note = (f"{run_dir} held out no validation split: its flags were retrained with --validation_split={HELD_OUT} "
            "(the same split for every trial) to judge the trials against")
    return trained(serialize_config(retrained), retrained.run_dir, 0, None, {"validation_split": HELD_OUT},
                   validation_size(retrained)), [note]


def run_round(best: Trial, round_number: int, study_dir: str, trials_per_round: int) -> list[Trial]:
    """Diagnoses `best` on validation and trains a trial for each fixable finding above minor."""
    diagnosis = report.diagnose_run(best.run_dir, label_issue_mode="off", read_test=False)
    fixable = [finding for finding in diagnosis.findings
               if finding.flags and finding.severity in ("major", "moderate")][:trials_per_round]
    with open(os.path.join(best.run_dir, "flags.txt"), encoding="utf-8") as stream:
        flags_text = stream.read()
    trials = []
    for finding in fixable:
        trial_dir = os.path.join(study_dir, f"round_{round_number}", finding.kind)
        text = flag_changes.changed_flagfile(flags_text, finding, best.run_dir, trial_dir, {"score_test": False})
        trials.append(trained(text, trial_dir, round_number, finding.kind, finding.flags, best.validation_examples))
    return trials


def improve(run_dir: str, study_dir: str, rounds: int, trials_per_round: int) -> dict:
    """The improvement of `run_dir`: rounds of trials, then the test split scored once, for the final run."""
    best, notes = starting_trial(run_dir, study_dir)
    tried, stopped = [best], f"the {rounds} rounds are spent"
    for round_number in range(1, rounds + 1):
        trials = run_round(best, round_number, study_dir, trials_per_round)
        tried += trials
        if not trials:
            stopped = f"round {round_number}: no finding above minor has a flag change to try"
            break
        winner = max(trials, key=lambda trial: trial.validation)
        if not keeps(best, winner):
            stopped = (f"round {round_number} kept nothing: the best trial ({winner.finding}, validation "
                       f"{winner.validation:.4f}) is within {noise_of(best.validation, best.validation_examples):.4f} "
                       f"of {best.validation:.4f}")
            break
        winner.kept, best = True, winner
    return {"before": {"run_dir": run_dir, "validation": tried[0].validation, "test": recorded_test(run_dir)},
            "rounds": [dataclasses.asdict(trial) for trial in tried[1:]],
            "after": {"run_dir": best.run_dir, "validation": best.validation, "test": test_accuracy(best.run_dir)},
            "stopped": stopped, "notes": notes}


def recorded_test(run_dir: str) -> float | None:
    """The test accuracy the run to improve recorded when it finished (read, never recomputed)."""
    try:
        with open(os.path.join(run_dir, "results.json"), encoding="utf-8") as stream:
            return (json.load(stream).get("test") or {}).get("accuracy")
    except (OSError, ValueError) as error:
        raise TapeloopError(stage="run directory", problem=f"{run_dir} has no readable results.json",
                            expected="a finished run", found=f"{type(error).__name__}: {error}",
                            fix="let the run finish (rerun its train.py command) before improving it") from None


def test_accuracy(run_dir: str) -> float:
    """The final run's test accuracy: its final weights scored once, after every choice is made."""
    config, data, model, _ = final_model(run_dir)
    return Evaluator(config, data.spec, model).run(evaluation_batches(data.test, data.spec, config)).scores["accuracy"]
