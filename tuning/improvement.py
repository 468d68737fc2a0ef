"""improve.py: from a finished run's diagnosis to a better run, by trying its findings' flag changes.

Each round diagnoses the current best run on its validation split (never the test split) and
trains one trial per fixable finding above `minor` (in rank order, at most --trials_per_round):
an Optuna study of tune.py's (tuning/studies.py) whose trials are enqueued, one per finding, each
an ordinary run in STUDY_DIR/round_K/<finding>, trained by this process or by tune.py workers
(--workers, or other machines on a shared --storage). It keeps the best trial only if its metric
(balanced accuracy for a run that selects by it, else accuracy) beats the current best's on the
same examples by more than chance: two standard errors of the paired difference (McNemar's test),
and at least one example's worth. The examples are the validation split's, or, when one of them
moves the metric by over half a point (a long tail's rarest class), every training and validation
example, each predicted by a fold model that never saw it (tuning/cross_validation.py). With
--max_compute, a finding whose changes would train more than that many times the starting run's
compute is noted instead of tried. It stops when nothing above minor remains, a round keeps
nothing, or the rounds are spent; then the final run alone is scored on the test split. A rerun
continues: finished trials and fold models are read back; a killed one resumes.
"""

import dataclasses
import json
import math
import os
import sys

import numpy as np
import optuna
from absl import flags, logging

from data import diagnostics, pipeline
from data.streaming import StreamedImages
from diagnosis import report
from trainer import loop, run_directory
from settings.errors import TapeloopError, described
from trainer.evaluation import Evaluator, evaluation_batches, predicted_logits
from settings.command_line import define_flags
from trainer.flags import parse_config, serialize_config
from trainer.run_directory import load_run_config
from trainer.finished_run import final_model
from tuning import studies
from tuning.compute_budget import ComputeBudget
from tuning.cross_validation import CrossValidation
from tuning.search_space import flag_text, parse_space, space_text

HELD_OUT = 0.1  # The validation split improve.py holds out when the run had none.
HEARTBEAT_SECONDS = 10  # A trial's heartbeat; one killed is re-queued (and resumes) after twice this.
SCRIPTS = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "scripts")


@dataclasses.dataclass
class Trial:
    """One run of the improvement: the starting run (round 0) or a finding's trial."""

    round: int
    finding: str | None
    flags: dict | None
    run_dir: str
    validation: float  # The judged metric (Judge.metric) on the validation split.
    kept: bool = False
    gain: float | None = None  # Over the best run of its round, on the same validation examples ...
    noise: float | None = None  # ... and what it had to beat (Judge.compare).


@dataclasses.dataclass(frozen=True, eq=False)
class Judge:
    """How trials are compared: on the judged examples (the validation split's, or every training example
    under cross-validation), paired (every trial and the best run score the same examples), in the run's
    own selection metric when that is balanced accuracy, else accuracy. Each example weighs 1/N in
    accuracy, 1/(K n_k) in balanced accuracy (K classes present, n_k examples of its class)."""

    metric: str
    labels: np.ndarray  # The judged examples', in their order.

    @property
    def weights(self) -> np.ndarray:
        if self.metric != "balanced_accuracy":
            return np.full(len(self.labels), 1 / len(self.labels))
        counts = np.bincount(self.labels)
        return 1 / (np.count_nonzero(counts) * counts[self.labels])

    def compare(self, best_correct: np.ndarray, tried_correct: np.ndarray) -> tuple[float, float]:
        """The gain in the metric and its noise: two standard errors of a paired difference (McNemar's
        test: only the examples one run gets right and the other wrong vary), and at least one
        example's worth, so that a single example never decides."""
        change = tried_correct.astype(float) - best_correct.astype(float)
        weights = self.weights
        noise = max(weights.min(), 2 * math.sqrt(float(np.sum(weights ** 2 * np.abs(change)))))
        return float(np.sum(weights * change)), noise


def validation_correct(run_dir: str) -> np.ndarray:
    """Which validation examples the run's final weights classify right (as the run scored them)."""
    config, data, model, _ = final_model(run_dir)
    logits = predicted_logits(model, pipeline.eval_batches(data.validation, data.spec, config))
    return logits.argmax(axis=1) == data.validation[1]


def retrained_with_validation(config, metric: str) -> Trial:
    """Trains (or resumes, or reads back) `config`, a run's flags with a validation split held out; round 0."""
    os.makedirs(config.run_dir, exist_ok=True)
    path = os.path.join(config.run_dir, "improve.flags")
    run_directory.write_text_atomic(path, serialize_config(config))
    results = loop.train(parse_config([f"--flagfile={path}"]))
    return Trial(0, None, {"validation_split": config.validation_split}, config.run_dir, results["eval"][metric])


JUDGE_RULES = ("auto", "split", "cross_validation")


def judged_metric(config) -> str:
    """The metric trials are judged on: the run's own selection metric when it is balanced accuracy, else accuracy."""
    return "balanced_accuracy" if config.early_stopping_metric == "balanced_accuracy" else "accuracy"


@dataclasses.dataclass(frozen=True, eq=False)
class Judging:
    """How a round's trials are judged: `judge` (the metric, the judged examples' labels) and where each
    run's per-example results come from: its validation split, or its fold models (`cross_validation`)."""

    judge: Judge
    reason: str
    cross_validation: CrossValidation | None = None

    @property
    def rule(self) -> str:
        return "cross_validation" if self.cross_validation else "split"

    @property
    def trainings_per_trial(self) -> int:
        """A trial's trainings, in runs of its settings: its run, and under cross-validation its K fold
        models on (K - 1) / K of the examples each (K in all)."""
        return self.cross_validation.folds.count if self.cross_validation else 1

    def correct(self, run_dir: str) -> np.ndarray:
        """Which judged examples the run classifies right."""
        return self.cross_validation.correct(run_dir) if self.cross_validation else validation_correct(run_dir)

    def record(self) -> dict:
        return {"rule": self.rule, "reason": self.reason, "examples": len(self.judge.labels),
                "folds": self.cross_validation.folds.count if self.cross_validation else None}


def judging_for(rule: str, config, data: pipeline.PreparedData, study_dir: str) -> tuple[Judging, list[str]]:
    """The Judging of a run's trials by `rule` (JUDGE_RULES; auto: cross-validation exactly when the
    pre-flight says the validation split judges the metric coarsely, one example moving it by over half
    a point), and a note if the split judges coarsely and is kept."""
    metric = judged_metric(config)
    labels = np.asarray(data.validation[1])
    coarse = diagnostics.validation_too_coarse((None, labels),
                                               dataclasses.replace(config, early_stopping_metric=metric))
    coarsely = f"the validation split judges {metric} coarsely ({coarse.found.split(', so')[0]})" if coarse else ""
    if rule == "split" or (rule == "auto" and not coarse):
        reason = "--judge=split" if rule == "split" else f"the validation split judges {metric} finely enough"
        notes = [f"{coarsely}: a gain of a few such examples cannot be told from chance; --judge=cross_validation "
                 "judges every training example once"] if coarse else []
        return Judging(Judge(metric, labels), reason), notes
    if isinstance(data.train[0], StreamedImages):
        if rule == "cross_validation":
            raise TapeloopError(stage="flags", problem="--judge=cross_validation needs the run's examples in memory",
                                expected="an in-memory dataset", found=f"--dataset={config.dataset}, streamed",
                                fix="use --judge=split, or a larger --validation_split for the run")
        return Judging(Judge(metric, labels), f"{coarsely}, but the data is streamed: judged on the split"), []
    cross_validation = CrossValidation.of(config, data, study_dir)
    reason = coarsely if rule == "auto" else "--judge=cross_validation"
    return Judging(Judge(metric, cross_validation.labels), f"{reason}: {cross_validation.describe()}",
                   cross_validation), []


def starting_trial(run_dir: str, study_dir: str) -> tuple[Trial, object, pipeline.PreparedData, list[str]]:
    """The run to improve, as a Trial with a validation score, with its settings and data: the run itself,
    or (without a validation split) the same flags retrained with HELD_OUT of the training split held out."""
    config = load_run_config(run_dir)
    results_path = os.path.join(run_dir, "results.json")
    metric = judged_metric(config)
    if config.validation_split > 0 and os.path.exists(results_path):
        with open(results_path, encoding="utf-8") as stream:
            results = json.load(stream)
        return Trial(0, None, None, run_dir, results["eval"][metric]), config, pipeline.prepare_data(config), []
    retrained = dataclasses.replace(config, validation_split=HELD_OUT, score_test=False,
                                    run_dir=os.path.join(study_dir, "round_0", "start"))
    note = (f"{run_dir} held out no validation split: its flags were retrained with --validation_split={HELD_OUT} "
            "(the same split for every trial) to judge the trials against")
    data = pipeline.prepare_data(retrained)
    return retrained_with_validation(retrained, metric), retrained, data, [note]


@dataclasses.dataclass(frozen=True)
class Workers:
    """Who trains a round's trials: `count` tune.py worker processes here (1: this process), through
    the round's study in `storage_url` (None: SQLite in the study folder), which tune.py workers on
    other machines may join."""

    count: int = 1
    storage_url: str | None = None
    heartbeat_seconds: int = HEARTBEAT_SECONDS


def run_round(best: Trial, round_number: int, study_dir: str, trials_per_round: int, judge: Judge,
              budget: ComputeBudget, workers: Workers) -> tuple[list[Trial], list[str], list[str]]:
    """Diagnoses `best` on validation and trains a trial for each fixable finding above minor within the
    compute budget, as an Optuna study of tune.py's (each finding's changes one enqueued trial); returns
    the trials that finished, in rank order, a note for each that failed, and one for each over budget."""
    diagnosis = report.diagnose_run(best.run_dir, label_issue_mode="off", read_test=False)
    config = load_run_config(best.run_dir)
    fixable, over_budget = budget.affordable(
        [finding for finding in diagnosis.findings if finding.flags and finding.severity in ("major", "moderate")],
        config)
    over_budget = [f"round {round_number}: {note}" for note in over_budget]
    fixable = fixable[:trials_per_round]
    if not fixable:
        return [], [], over_budget
    folder = os.path.join(study_dir, f"round_{round_number}")
    settings = studies.StudySettings(
        name=f"improve_round_{round_number}", folder=folder,
        storage_url=workers.storage_url or studies.default_storage_url(study_dir), space=round_space(fixable, config),
        trials=len(fixable), metric=config.early_stopping_metric, prune=False,
        heartbeat_seconds=workers.heartbeat_seconds)
    os.makedirs(folder, exist_ok=True)
    run_directory.write_flags_file(dataclasses.replace(config, run_dir=None), folder,
                                   os.path.basename(settings.base_flags))
    storage = studies.open_storage(settings)
    study = studies.open_study(settings, storage)
    enqueue_findings(study, settings, fixable, config)
    if workers.count > 1:
        studies.run_workers(tune_worker_command(settings), workers.count)
    else:
        studies.run_worker(study, settings, storage)
    return (*finished_trials(study, round_number, judge), over_budget)


def round_space(fixable: list, config) -> tuple:
    """One choice per flag the findings change: the run's value and each finding's, typed by the flag's
    own parser (as a tune.py worker reads the space back)."""
    choices = {}
    for finding in fixable:
        for name, value in finding.flags.items():
            choices.setdefault(name, [getattr(config, name)]).append(value)
    return space_of_choices(choices)


def space_of_choices(choices: dict) -> tuple:
    """A search space of one categorical parameter per flag, `choices` its values, typed by the flag's own
    parser (as a tune.py worker reads the space back)."""
    flag_values = flags.FlagValues()
    define_flags(flag_values)
    return parse_space(",".join(f"{name}={'|'.join(map(flag_text, values))}" for name, values in choices.items()),
                       flag_values)


def enqueue_findings(study, settings: studies.StudySettings, fixable: list, config) -> None:
    """One waiting trial per finding not yet in the study (a rerun enqueues none): the run's values
    with that finding's changes, in its run directory STUDY_DIR/round_K/<finding>."""
    enqueued = {trial.user_attrs.get("finding") for trial in study.get_trials(deepcopy=False)}
    for rank, finding in enumerate(fixable):
        if finding.kind in enqueued:
            continue
        params = {parameter.name: next(choice for choice in parameter.choices
                                       if choice == finding.flags.get(parameter.name, getattr(config, parameter.name)))
                  for parameter in settings.space}
        study.enqueue_trial(params, user_attrs={
            "finding": finding.kind, "rank": rank, "changes": finding.flags,
            "run_dir": os.path.join(settings.folder, finding.kind)})


def tune_worker_command(settings: studies.StudySettings) -> list[str]:
    """The tune.py command of a worker of the round's study (what a machine sharing its storage runs to help)."""
    return [sys.executable, os.path.join(SCRIPTS, "tune.py"), f"--study={settings.name}",
            f"--study_dir={settings.folder}", f"--storage={settings.storage_url}",
            f"--search={space_text(settings.space)}", f"--metric={settings.metric}", f"--trials={settings.trials}",
            f"--heartbeat_seconds={settings.heartbeat_seconds}", "--workers=1",
            *(["--fold_models"] if settings.fold_models else [])]


def train_fold_models(cross_validation: CrossValidation, run_dirs: list[str], round_number: int, study_dir: str,
                      workers: Workers) -> None:
    """The fold models the round's judging still needs (of the incumbent and of each trial), trained as a
    study of tune.py's like the trials: one enqueued trial per fold model, in its folder under
    STUDY_DIR/folds, trained by this process, --workers tune.py processes or machines sharing --storage."""
    pending = [run for run_dir in run_dirs for run in cross_validation.pending(run_dir)]
    if not pending:
        return
    base = dataclasses.replace(pending[0], run_dir=None)
    varying = ["data_dir", *(field.name for field in dataclasses.fields(base) if field.name not in ("data_dir", "run_dir")
                             and any(getattr(run, field.name) != getattr(base, field.name) for run in pending))]
    space = space_of_choices({name: list(dict.fromkeys(getattr(run, name) for run in pending)) for name in varying})
    folder = os.path.join(study_dir, "folds", f"round_{round_number}_study")
    settings = studies.StudySettings(
        name=f"improve_round_{round_number}_folds", folder=folder,
        storage_url=workers.storage_url or studies.default_storage_url(study_dir), space=space, trials=len(pending),
        metric="accuracy", prune=False, heartbeat_seconds=workers.heartbeat_seconds, fold_models=True)
    os.makedirs(folder, exist_ok=True)
    run_directory.write_flags_file(base, folder, os.path.basename(settings.base_flags))
    storage = studies.open_storage(settings)
    study = studies.open_study(settings, storage)
    enqueued = {trial.user_attrs.get("run_dir") for trial in study.get_trials(deepcopy=False)}
    for run in pending:
        if run.run_dir not in enqueued:
            study.enqueue_trial({parameter.name: getattr(run, parameter.name) for parameter in space},
                                user_attrs={"run_dir": run.run_dir})
    if workers.count > 1:
        studies.run_workers(tune_worker_command(settings), workers.count)
    else:
        studies.run_worker(study, settings, storage)


def finished_trials(study, round_number: int, judge: Judge) -> tuple[list[Trial], list[str]]:
    """The round's trials that finished, in rank order, judged from their results.json; a note per failed one."""
    trials, notes = [], []
    for frozen in sorted(studies.counted_trials(study.get_trials(deepcopy=False)),
                         key=lambda trial: trial.user_attrs["rank"]):
        attrs = frozen.user_attrs
        if frozen.state != optuna.trial.TrialState.COMPLETE:
            notes.append(f"round {round_number}: the {attrs['finding']} trial failed: "
                         f"{attrs.get('error') or 'its worker died'}")
            continue
        with open(os.path.join(attrs["run_dir"], "results.json"), encoding="utf-8") as stream:
            validation = json.load(stream)["eval"][judge.metric]
        trials.append(Trial(round_number, attrs["finding"], attrs["changes"], attrs["run_dir"], validation))
    return trials, notes


def improve(run_dir: str, study_dir: str, rounds: int, trials_per_round: int, workers: Workers = Workers(),
            max_compute: float | None = None, judge_rule: str = "auto") -> dict:
    """The improvement of `run_dir`: rounds of trials (each at most `max_compute` times the starting run's
    training compute, if given, its judging included), judged by `judge_rule` (JUDGE_RULES), then the test
    split scored once, for the final run."""
    best, config, data, notes = starting_trial(run_dir, study_dir)
    judging, judging_notes = judging_for(judge_rule, config, data, study_dir)
    budget = ComputeBudget.of(max_compute, config, data, judging.trainings_per_trial)
    logging.info("Judged by %s: %s.", judging.rule.replace("_", "-"), judging.reason)
    tried, stopped, correct, notes = [best], f"the {rounds} rounds are spent", {}, notes + judging_notes
    for round_number in range(1, rounds + 1):
        trials, failed, over_budget = run_round(best, round_number, study_dir, trials_per_round, judging.judge,
                                                budget, workers)
        tried, notes = tried + trials, notes + over_budget + failed
        if not trials:
            stopped = (f"round {round_number}: every trial failed" if failed else
                       f"round {round_number}: no finding above minor has a flag change to try"
                       + (f" within --max_compute={max_compute:g}" if over_budget else ""))
            break
        if judging.cross_validation:
            train_fold_models(judging.cross_validation, [best.run_dir, *(trial.run_dir for trial in trials)],
                              round_number, study_dir, workers)
        winner = judged_round(best, trials, judging, correct)
        if winner is None:
            stopped = (f"round {round_number} kept nothing: no trial gained more than its noise over "
                       f"{best.validation:.4f} (" + "; ".join(f"{trial.finding} {trial.gain:+.4f} within "
                                                            f"{trial.noise:.4f}" for trial in trials) + ")")
            break
        winner.kept, best = True, winner
    metric = judging.judge.metric
    return {"metric": metric, "judge": judging.record(),
            "before": {"run_dir": run_dir, "validation": tried[0].validation, "test": recorded_test(run_dir, metric)},
            "rounds": [dataclasses.asdict(trial) for trial in tried[1:]],
            "after": {"run_dir": best.run_dir, "validation": best.validation, "test": test_score(best.run_dir, metric)},
            "stopped": stopped, "notes": notes}


def judged_round(best: Trial, trials: list[Trial], judging: Judging, correct: dict) -> Trial | None:
    """Compares each trial with `best` on the judged examples (setting its gain and noise) and returns the
    trial of the largest gain beyond its noise, if any. `correct` caches each run's per-example results by
    run directory."""
    for run in (best, *trials):
        if run.run_dir not in correct:
            correct[run.run_dir] = judging.correct(run.run_dir)
    for trial in trials:
        trial.gain, trial.noise = judging.judge.compare(correct[best.run_dir], correct[trial.run_dir])
    passing = [trial for trial in trials if trial.gain > trial.noise]
    return max(passing, key=lambda trial: trial.gain) if passing else None


def recorded_test(run_dir: str, metric: str) -> float | None:
    """The test `metric` the run to improve recorded when it finished (read, never recomputed)."""
    try:
        with open(os.path.join(run_dir, "results.json"), encoding="utf-8") as stream:
            return (json.load(stream).get("test") or {}).get(metric)
    except (OSError, ValueError) as error:
        raise TapeloopError(stage="run directory", problem=f"{run_dir} has no readable results.json",
                            expected="a finished run", found=described(error),
                            fix="let the run finish (rerun its train.py command) before improving it") from None


def test_score(run_dir: str, metric: str) -> float:
    """The final run's test `metric`: its final weights scored once, after every choice is made."""
    config, data, model, _ = final_model(run_dir)
    return Evaluator(config, data.spec, model).run(evaluation_batches(data.test, data.spec, config)).scores[metric]
