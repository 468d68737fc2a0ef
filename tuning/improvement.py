"""improve.py: from a finished run's diagnosis to a better run, by trying its findings' flag changes.

Each round diagnoses the current best run on its validation split (never the test split), trains
one trial per fixable finding above `minor` (in rank order, at most --trials_per_round), each an
ordinary run in STUDY_DIR/round_K/<finding>, and keeps the best trial only if its validation
accuracy (balanced accuracy for a run that selects by it) beats the current best by more than the
noise of the split: two standard errors of the difference of two scores on its examples, and at
least one example's worth. It stops when nothing
above minor remains, a round keeps nothing, or the rounds are spent; then the final run alone is
scored on the test split. A rerun continues: finished trials are read back, not retrained.
"""

import dataclasses
import json
import math
import os

import numpy as np

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
    validation: float  # The judged metric (Judge.metric) on the validation split.
    kept: bool = False


@dataclasses.dataclass(frozen=True)
class Judge:
    """How trials are compared: the validation metric (the run's own selection metric when that is
    balanced accuracy, else accuracy) and the split's examples per class, which set its noise."""

    metric: str
    class_counts: tuple[int, ...]

    def noise(self, score: float) -> float:
        """The smallest validation gain taken as real: two standard errors of the difference of two
        scores near `score`, and at least one example's worth. Balanced accuracy averages the
        classes' accuracies, so its variance is sum(a(1 - a) / n_k) / K^2: the small classes set it."""
        counts = np.array([count for count in self.class_counts if count], float)
        if self.metric == "balanced_accuracy":
            variance, one_example = score * (1 - score) * np.sum(1 / counts) / len(counts) ** 2, 1 / (
                len(counts) * counts.max())
        else:
            variance, one_example = score * (1 - score) / counts.sum(), 1 / counts.sum()
        return max(one_example, 2 * math.sqrt(2 * variance))

    def keeps(self, best: Trial, tried: Trial) -> bool:
        """Whether `tried` beats `best` on validation by more than the noise."""
        return tried.validation - best.validation > self.noise(best.validation)


def trained(flags_text: str, run_dir: str, round_number: int, finding: str | None, changes: dict | None,
            judge: Judge) -> Trial:
    """Trains (or resumes, or reads back) the run `flags_text` describes; returns it as a Trial."""
    os.makedirs(run_dir, exist_ok=True)
    path = os.path.join(run_dir, "improve.flags")
    run_directory.write_text_atomic(path, flags_text)
    results = loop.train(parse_config([f"--flagfile={path}"]))
    return Trial(round_number, finding, changes, run_dir, results["eval"][judge.metric])


def judge_for(config) -> Judge:
    """The Judge of a run's trials (its validation split's labels, read again)."""
    data = pipeline.prepare_data(config)
    metric = "balanced_accuracy" if config.early_stopping_metric == "balanced_accuracy" else "accuracy"
    return Judge(metric, tuple(int(count) for count in np.bincount(data.validation[1],
                                                                    minlength=data.spec.num_classes)))


def starting_trial(run_dir: str, study_dir: str) -> tuple[Trial, Judge, list[str]]:
    """The run to improve, as a Trial with a validation score, and the Judge of its trials: the run
    itself, or (without a validation split) the same flags retrained with HELD_OUT of the training
    split held out."""
    config = load_run_config(run_dir)
    results_path = os.path.join(run_dir, "results.json")
    if config.validation_split > 0 and os.path.exists(results_path):
        with open(results_path, encoding="utf-8") as stream:
            results = json.load(stream)
        judge = judge_for(config)
        return Trial(0, None, None, run_dir, results["eval"][judge.metric]), judge, []
    retrained = dataclasses.replace(config, validation_split=HELD_OUT, score_test=False,
                                    run_dir=os.path.join(study_dir, "round_0", "start"))
    note = (f"{run_dir} held out no validation split: its flags were retrained with --validation_split={HELD_OUT} "
            "(the same split for every trial) to judge the trials against")
    judge = judge_for(retrained)
    return trained(serialize_config(retrained), retrained.run_dir, 0, None, {"validation_split": HELD_OUT},
                   judge), judge, [note]


def run_round(best: Trial, round_number: int, study_dir: str, trials_per_round: int, judge: Judge) -> list[Trial]:
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
        trials.append(trained(text, trial_dir, round_number, finding.kind, finding.flags, judge))
    return trials


def improve(run_dir: str, study_dir: str, rounds: int, trials_per_round: int) -> dict:
    """The improvement of `run_dir`: rounds of trials, then the test split scored once, for the final run."""
    best, judge, notes = starting_trial(run_dir, study_dir)
    tried, stopped = [best], f"the {rounds} rounds are spent"
    for round_number in range(1, rounds + 1):
        trials = run_round(best, round_number, study_dir, trials_per_round, judge)
        tried += trials
        if not trials:
            stopped = f"round {round_number}: no finding above minor has a flag change to try"
            break
        winner = max(trials, key=lambda trial: trial.validation)
        if not judge.keeps(best, winner):
            stopped = (f"round {round_number} kept nothing: the best trial ({winner.finding}, validation "
                       f"{judge.metric} {winner.validation:.4f}) is within {judge.noise(best.validation):.4f} of "
                       f"{best.validation:.4f}")
            break
        winner.kept, best = True, winner
    return {"metric": judge.metric,
            "before": {"run_dir": run_dir, "validation": tried[0].validation,
                       "test": recorded_test(run_dir, judge.metric)},
            "rounds": [dataclasses.asdict(trial) for trial in tried[1:]],
            "after": {"run_dir": best.run_dir, "validation": best.validation, "test": test_score(best.run_dir, judge.metric)},
            "stopped": stopped, "notes": notes}


def recorded_test(run_dir: str, metric: str) -> float | None:
    """The test `metric` the run to improve recorded when it finished (read, never recomputed)."""
    try:
        with open(os.path.join(run_dir, "results.json"), encoding="utf-8") as stream:
            return (json.load(stream).get("test") or {}).get(metric)
    except (OSError, ValueError) as error:
        raise TapeloopError(stage="run directory", problem=f"{run_dir} has no readable results.json",
                            expected="a finished run", found=f"{type(error).__name__}: {error}",
                            fix="let the run finish (rerun its train.py command) before improving it") from None


def test_score(run_dir: str, metric: str) -> float:
    """The final run's test `metric`: its final weights scored once, after every choice is made."""
    config, data, model, _ = final_model(run_dir)
    return Evaluator(config, data.spec, model).run(evaluation_batches(data.test, data.spec, config)).scores[metric]
