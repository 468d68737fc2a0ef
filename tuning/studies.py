"""A tune.py study on Optuna: its storage, the worker loop that runs trials until the study has
its N, each trial an ordinary run in STUDY/trial_K judged on the validation split, pruning
reports, and re-queuing of trials whose worker died.

Workers share the study through Optuna's relational storage: SQLite in the study folder by
default, PostgreSQL or MySQL for several machines. Each running trial beats a heartbeat into
the storage; a trial whose heartbeat stops (its worker was killed) is marked failed by the next
worker that looks, and re-queued with the same parameters and run directory, so it resumes
from its last checkpoint.
"""

import contextlib
import dataclasses
import fcntl
import _thread
import json
import os
import signal
import sqlite3
import subprocess
import threading
import time
import urllib.parse
import warnings

import keras
import optuna
import sqlalchemy
from absl import flags, logging

from diagnosis import folds
from trainer import loop, run_directory
from settings.errors import RunStopped, TapeloopError, described
from trainer.flags import parse_config
from trainer.metrics import score_tag
from settings.arguments import flag_line
from tuning.search_space import Parameter, parse_space, space_text

RELATIONAL_SCHEMES = ("sqlite", "postgresql", "mysql")
STORAGE_ATTEMPTS = 3
MAX_RETRIES = 3  # Re-queues of one trial whose worker died, before it stays failed.
PRUNER_STARTUP_TRIALS = 3  # Finished trials the median pruner compares against before it prunes.
IDLE_POLL_SECONDS = 2  # How often a worker with nothing to run reads the study again.
WORKER_ENV = "TAPELOOP_TUNE_WORKER"  # Set for the worker processes that run_workers starts (their index).
OPTUNA_TABLES = {"studies", "trials", "version_info"}  # Among the tables of Optuna's RDB storage.
# A database that stopped answering, as SQLAlchemy reports it, or Optuna wrapping that report.
STORAGE_ERRORS = (sqlalchemy.exc.DBAPIError, optuna.exceptions.StorageInternalError)
FAIL, WAITING, RUNNING = optuna.trial.TrialState.FAIL, optuna.trial.TrialState.WAITING, optuna.trial.TrialState.RUNNING


@dataclasses.dataclass(frozen=True)
class StudySettings:
    """What every worker of one study must agree on."""

    name: str
    folder: str  # STUDY: study.db (by default), base.flags, trial_K/, the summary files.
    storage_url: str
    space: tuple[Parameter, ...]
    trials: int
    metric: str
    prune: bool
    heartbeat_seconds: int
    fold_models: bool = False  # Trials are improve.py's fold models: each scores its held-out fold.

    @property
    def base_flags(self) -> str:
        return os.path.join(self.folder, "base.flags")

    @property
    def direction(self) -> str:
        return "minimize" if self.metric == "loss" else "maximize"


def default_storage_url(folder: str) -> str:
    return f"sqlite:///{os.path.abspath(os.path.join(folder, 'study.db'))}"


def open_storage(settings: StudySettings, must_exist: bool = False) -> optuna.storages.RDBStorage:
    """The study's relational storage with heartbeats on; a URL it cannot use is the paragraph, and
    so is an SQLite file that is missing where it `must_exist` (a study to read, not to start)."""
    scheme = refuse_unusable_storage(settings.storage_url, must_exist)
    engine = {"connect_args": {"timeout": 60}} if scheme == "sqlite" else {"pool_pre_ping": True}
    for attempt in range(STORAGE_ATTEMPTS):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            try:
                return optuna.storages.RDBStorage(
                    settings.storage_url, engine_kwargs=engine, heartbeat_interval=settings.heartbeat_seconds,
                    heartbeat_stale_trial_callback=optuna.storages.RetryHeartbeatStaleTrialCallback(MAX_RETRIES))
            except ImportError as error:
                problem = error
                break
            except Exception as error:  # Drivers and SQLAlchemy raise errors with no common public base.
                problem = error  # Workers that start together race to create the tables: try again.
                if attempt + 1 < STORAGE_ATTEMPTS:
                    time.sleep(1 + attempt)
    raise TapeloopError(
        stage="search", problem=f"cannot open --storage={redacted(settings.storage_url)}",
        expected="a database this machine can reach, with its Python driver installed",
        found=f"{type(problem).__name__}: {str(problem).splitlines()[0].rstrip('.')}",
        fix="check the URL, the server and the credentials; PostgreSQL needs psycopg (`pip install -e '.[postgres]'`), "
            "MySQL `pip install pymysql` (URL mysql+pymysql://...)")


def refuse_unusable_storage(url: str, must_exist: bool) -> str:
    """Refuses, without connecting, a URL that is no relational database or an SQLite file that
    cannot hold a study; returns the URL's scheme."""
    scheme = url.partition(":")[0].partition("+")[0]
    if scheme not in RELATIONAL_SCHEMES:
        raise TapeloopError(
            stage="search", problem=f"--storage={url} is not a relational database URL",
            expected="sqlite:///PATH, postgresql://USER:PASSWORD@HOST/DB or mysql://USER:PASSWORD@HOST/DB "
                     "(their heartbeats let a study re-queue the trials of a killed worker)",
            found=f"the scheme {scheme!r}",
            fix="leave --storage out for SQLite in the study folder, or pass a PostgreSQL or MySQL URL")
    if scheme == "sqlite":
        refuse_unusable_sqlite(url, must_exist)
    return scheme


def refuse_unusable_sqlite(url: str, must_exist: bool) -> None:
    """Refuses, before anything is written, an in-memory database (the study would vanish with the
    process, and its heartbeat thread finds no tables), a file that is not a study's (another
    program's database, or no database at all), and a missing file where a study must exist."""
    path = sqlalchemy.engine.make_url(url).database
    if not path or path == ":memory:":
        raise TapeloopError(
            stage="search", problem=f"--storage={url} is an in-memory database", expected="an SQLite file "
            "(sqlite:///PATH) or a server URL, where the study outlives the process and every worker sees it",
            found="no file", fix="leave --storage out for study.db in the study folder, or pass sqlite:///PATH")
    if not os.path.exists(path):
        if must_exist:
            raise TapeloopError(stage="search", problem=f"there is no study in {path}", expected="the storage "
                                "of a study that tune.py started", found="no such file",
                                fix="check --study, --study_dir and --storage")
        return
    tables = sqlite_tables(path)
    if tables is None or (tables and not OPTUNA_TABLES <= tables):
        raise TapeloopError(
            stage="search", problem=f"{path} is not a study's database", expected="an SQLite file that tune.py "
            "created (Optuna's tables), or none yet", found="no SQLite database" if tables is None else
            f"another program's tables ({', '.join(sorted(tables)[:5])})", fix="pass a --study_dir or --storage of "
            "its own to the study; tune.py never writes into another database")


def sqlite_tables(path: str) -> set[str] | None:
    """The table names of the SQLite file at `path`, read without writing; None if it is none."""
    try:
        with contextlib.closing(sqlite3.connect(f"file:{urllib.parse.quote(path)}?mode=ro", uri=True)) as database:
            return {name for (name,) in database.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    except sqlite3.DatabaseError:
        return None


def open_study(settings: StudySettings, storage: optuna.storages.RDBStorage) -> optuna.Study:
    """Creates the study, or loads it if it exists after checking it searches the same space."""
    pruner = (optuna.pruners.MedianPruner(n_startup_trials=PRUNER_STARTUP_TRIALS, n_warmup_steps=0)
              if settings.prune else optuna.pruners.NopPruner())
    sampler = optuna.samplers.TPESampler(n_startup_trials=min(10, max(3, settings.trials // 3)), constant_liar=True)
    study = optuna.create_study(study_name=settings.name, storage=storage, direction=settings.direction,
                                sampler=sampler, pruner=pruner, load_if_exists=True)
    wanted = {"search": space_text(settings.space), "metric": settings.metric}
    stored = {key: study.user_attrs.get(key) for key in wanted}
    if stored == {"search": None, "metric": None}:
        for key, value in wanted.items():
            study.set_user_attr(key, value)
    elif stored != wanted:
        raise TapeloopError(
            stage="search", problem=f"study {settings.name!r} exists with another search",
            expected=f"--search={wanted['search']} --metric={wanted['metric']} to continue it",
            found=f"--search={stored['search']} --metric={stored['metric']} in {settings.storage_url}",
            fix="rerun with the study's --search and --metric to continue it, or pass a new --study")
    return study


def counted_trials(trials: list[optuna.trial.FrozenTrial]) -> list[optuna.trial.FrozenTrial]:
    """The trials that count towards --trials: all but failed ones that were re-queued."""
    retried = {number for trial in trials for number in trial.system_attrs.get("retry_history", ())}
    return [trial for trial in trials if trial.state != FAIL or trial.number not in retried]


@contextlib.contextmanager
def next_trial_lock(settings: StudySettings):
    """Makes counting and asking one step for the workers of one machine sharing an SQLite file.

    Workers on a server database, on several machines, are not kept apart: together they may
    start up to (workers - 1) trials more than --trials."""
    if not settings.storage_url.startswith("sqlite"):
        yield
        return
    with open(os.path.join(settings.folder, ".next-trial.lock"), "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def is_done(study: optuna.Study, settings: StudySettings, trials: list | None = None) -> bool:
    """Whether the study has --trials trials and none still running or waiting to run (`trials`:
    the study's, if already read)."""
    trials = study.get_trials(deepcopy=False) if trials is None else trials
    return (len(counted_trials(trials)) >= settings.trials
            and not any(trial.state in (RUNNING, WAITING) for trial in trials))


def next_trial(study: optuna.Study, settings: StudySettings) -> tuple[optuna.Trial | None, bool]:
    """(a trial to run, whether the study is done): a re-queued or new trial while the study has
    fewer than --trials; none while other workers' trials still run (one of them may die)."""
    with next_trial_lock(settings), warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        warnings.filterwarnings("ignore", message="Heartbeat of storage is supposed to be used with Study.optimize")
        optuna.storages.fail_stale_trials(study)
        trials = study.get_trials(deepcopy=False)
        waiting = any(trial.state == WAITING for trial in trials)
        if waiting or len(counted_trials(trials)) < settings.trials:
            return study.ask(), False
        return None, is_done(study, settings, trials)


def refuse_a_study_that_only_failed(study: optuna.Study, settings: StudySettings) -> None:
    """A done study none of whose trials finished is an error that says why its first trial failed,
    so that a script checking the exit code does not carry on with no result."""
    trials = study.get_trials(deepcopy=False)
    if not is_done(study, settings, trials) or any(trial.state != FAIL for trial in trials):
        return
    first = trials[0].user_attrs.get("error") or "no paragraph recorded (its worker died)"
    raise TapeloopError(
        stage="search", problem=f"every trial of study {settings.name!r} failed", expected="trials that train",
        found=f"{len(counted_trials(trials))} failed trials; the first: {first.removeprefix('tapeloop: error: ')}",
        fix="fix what the first failure says (its run directory is STUDY/trial_0), then start a new --study")


def stored_settings(settings: StudySettings, storage: optuna.storages.RDBStorage, flag_values) -> StudySettings:
    """`settings` with the space, metric and --trials of an existing study (for --summary alone)."""
    try:
        stored = optuna.load_study(study_name=settings.name, storage=storage).user_attrs
    except KeyError:
        raise TapeloopError(stage="search", problem=f"no study {settings.name!r} in {settings.storage_url}",
                            expected="a study that tune.py started", found="no study of that name",
                            fix="check --study, --study_dir and --storage") from None
    return dataclasses.replace(settings, space=parse_space(stored["search"], flag_values), metric=stored["metric"],
                               trials=stored.get("trials", settings.trials))


def run_workers(command: list[str], count: int) -> None:
    """Starts `count` processes of `command` (a tune.py worker command line), each with WORKER_ENV set
    to its index, and waits for them all; one that fails is the paragraph."""
    workers = [subprocess.Popen(command, env={**os.environ, WORKER_ENV: str(index)}) for index in range(count)]
    try:
        codes = [worker.wait() for worker in workers]
    except KeyboardInterrupt:  # The workers got the Ctrl-C too: they save their trials and re-queue them.
        for worker in workers:
            worker.wait()
        raise
    failed = [f"worker {index} exited with {code}" for index, code in enumerate(codes) if code]
    if failed:
        raise TapeloopError(stage="search", problem="a worker stopped before the study was done",
                            expected="every worker to exit 0", found=", ".join(failed),
                            fix="read that worker's paragraph above; rerun the command to continue the study")


def run_worker(study: optuna.Study, settings: StudySettings, storage: optuna.storages.RDBStorage) -> int:
    """Runs trials until the study has --trials of them finished; returns how many this worker ran.
    A database that stops answering ends the worker with the paragraph."""
    ran = 0
    try:
        study.set_user_attr("trials", settings.trials)  # What --summary reports against.
        while True:
            trial, done = next_trial(study, settings)
            if done:
                return ran
            if trial is None:
                # Wait for the other workers' trials to finish (or go stale); a long heartbeat must not
                # keep a worker, and tune.py waiting on it, idle long after the study is done.
                time.sleep(min(settings.heartbeat_seconds, IDLE_POLL_SECONDS))
                continue
            run_trial(study, trial, settings, storage)
            ran += 1
    except STORAGE_ERRORS as error:
        raise storage_lost(settings, error) from None


class Heartbeat:
    """Records a trial's heartbeat every interval from a thread. A beat the database refuses (the server
    went away) is kept in `lost`, and stops the training as SIGTERM does: it saves a checkpoint, from
    which the re-queued trial resumes once the database is back."""

    def __init__(self, storage: optuna.storages.RDBStorage, trial: optuna.Trial):
        self.storage, self.trial_id, self.trial_number = storage, trial._trial_id, trial.number
        self.lost: Exception | None = None
        self.stopping = threading.Event()
        self.thread = threading.Thread(target=self.beat, daemon=True)

    def beat(self) -> None:
        while True:
            try:
                self.storage.record_heartbeat(self.trial_id)
            except STORAGE_ERRORS as error:
                self.lost = error
                logging.warning("The study's database refused trial %d's heartbeat (%s): stopping the trial with a "
                                "checkpoint.", self.trial_number, type(error).__name__)
                _thread.interrupt_main(signal.SIGTERM)  # Nothing happens outside a training, which asks next.
                return
            if self.stopping.wait(self.storage.get_heartbeat_interval()):
                return

    def __enter__(self) -> "Heartbeat":
        self.thread.start()
        return self

    def __exit__(self, *exception) -> None:
        self.stopping.set()
        self.thread.join()


def redacted(url: str) -> str:
    """The storage URL with its password, if any, as ***."""
    try:
        return sqlalchemy.engine.make_url(url).render_as_string(hide_password=True)
    except sqlalchemy.exc.ArgumentError:
        return url


def storage_lost(settings: StudySettings, error: Exception) -> TapeloopError:
    """The paragraph for a study database that stopped answering mid-study (`error`: SQLAlchemy's, or
    Optuna's with SQLAlchemy's as its cause)."""
    error = error.__cause__ or error
    return TapeloopError(
        stage="search", problem=f"the study's database stopped answering ({redacted(settings.storage_url)})",
        expected="a database that stays reachable while the workers run",
        found=described(error),
        fix="bring the database back and rerun the same command: the study continues, and a trial that was "
            "running resumes from its last checkpoint once its heartbeat goes stale")


def trial_run_dir(settings: StudySettings, trial: optuna.Trial) -> str:
    """STUDY/trial_K; a re-queued trial keeps the run directory of the trial it retries."""
    if "run_dir" not in trial.user_attrs:  # Re-queued trials inherit the original's user attributes.
        trial.set_user_attr("run_dir", os.path.join(settings.folder, f"trial_{trial.number}"))
    return trial.user_attrs["run_dir"]


def trial_arguments(settings: StudySettings, params: dict, run_dir: str) -> list[str]:
    """The trial's train.py flags: the study's base flags, --metric as the early-stopping metric
    unless a trial's values set it, the values, its run directory."""
    return [f"--flagfile={settings.base_flags}", f"--early_stopping_metric={settings.metric}",
            *(flag_line(name, value) for name, value in params.items()),
            *([] if settings.fold_models else ["--noscore_test"]), f"--run_dir={run_dir}"]


def run_trial(study: optuna.Study, trial: optuna.Trial, settings: StudySettings,
              storage: optuna.storages.RDBStorage) -> None:
    """Trains one trial and tells the study how it ended: complete, pruned or failed."""
    params = {parameter.name: parameter.suggest(trial) for parameter in settings.space}
    run_dir = trial_run_dir(settings, trial)
    logging.info("Trial %d (%s): %s", trial.number, run_dir, " ".join(flag_line(*item) for item in params.items()))
    started = time.monotonic()
    with Heartbeat(storage, trial) as beating:
        try:
            config = parse_config(trial_arguments(settings, params, run_dir))
            if settings.fold_models:
                folds.refuse_other_data(config)
            results = loop.train(config, after_evaluation=pruning_report(trial, settings.metric))
        except (TapeloopError, flags.Error) as error:  # flags.Error: this combination of values.
            trial.set_user_attr("error", str(error))
            finish_trial(study, trial, FAIL, None, run_dir)
            logging.warning("Trial %d failed: %s", trial.number, error)
            return
        except RunStopped:
            if beating.lost is not None:
                raise storage_lost(settings, beating.lost) from None
            finish_trial(study, trial, FAIL, None, run_dir)
            optuna.storages.RetryHeartbeatStaleTrialCallback(MAX_RETRIES)(study, study.trials[trial.number])
            raise
        finally:
            keras.backend.clear_session()
    scored = "test" if settings.fold_models else "eval"  # A fold model's test split is its held-out fold.
    value = results[scored][settings.metric]  # results.json names the metrics as --metric does.
    trial.set_user_attr("steps", results["steps"])
    trial.set_user_attr("seconds", trial.user_attrs.get("seconds", 0) + time.monotonic() - started)
    state = optuna.trial.TrialState.PRUNED if results["stopped_by_caller"] else optuna.trial.TrialState.COMPLETE
    finish_trial(study, trial, state, value, run_dir)
    logging.info("Trial %d %s: %s %s %.4f after %d steps.", trial.number, state.name.lower(),
                 "held-out fold" if settings.fold_models else "validation", settings.metric, value, results["steps"])


def finish_trial(study: optuna.Study, trial: optuna.Trial, state, value: float | None, run_dir: str) -> None:
    """Tells the study, and writes RUN/trial.json, so the run directory says how its trial ended."""
    study.tell(trial, value if state == optuna.trial.TrialState.COMPLETE else None, state=state)
    record = {"study": study.study_name, "trial": trial.number, "state": state.name, "params": trial.params,
              "value": value, "intermediate_values": study.trials[trial.number].intermediate_values,
              "error": trial.user_attrs.get("error")}
    if os.path.isdir(run_dir):
        run_directory.write_text_atomic(os.path.join(run_dir, "trial.json"), json.dumps(record, indent=2) + "\n")


def pruning_report(trial: optuna.Trial, metric: str) -> loop.AfterEvaluation:
    """The loop's after-evaluation call: reports the validation metric, and stops a trial the
    pruner finds behind the median of earlier trials at the same epoch."""

    def after_evaluation(epochs_done: int, scores: dict[str, float]) -> bool:
        value = scores[score_tag(metric)]
        trial.report(value, step=epochs_done)
        if not trial.should_prune():
            return False
        logging.info("Trial %d pruned after epoch %d: validation %s %.4f is behind the median of the "
                     "earlier trials at that epoch.", trial.number, epochs_done, metric, value)
        return True

    return after_evaluation
