"""Progress display: a bar on a terminal, one log line per interval otherwise."""

import sys
import time

import keras
from absl import logging

BAR_METRICS = {"loss/total": "loss", "accuracy": "accuracy", "perf/examples_per_sec": "examples/s"}


def use_bar(mode: str) -> bool:
    """`--progress=auto` shows a bar only when stdout is a terminal."""
    return mode == "bar" or (mode == "auto" and sys.stdout.isatty())


class Progress:
    """Reports training progress at each log interval and each evaluation."""

    def __init__(self, mode: str, steps_per_epoch: int, total_steps: int):
        self.bar_enabled = use_bar(mode)
        self.steps_per_epoch = steps_per_epoch
        self.total_steps = total_steps
        self.bar = None
        self.intervals_logged = 0

    def start_epoch(self, epoch: int, step_in_epoch: int) -> None:
        if self.bar_enabled:
            epochs = -(-self.total_steps // self.steps_per_epoch)
            print(f"Epoch {epoch + 1}/{epochs}", flush=True)
            self.bar = keras.utils.Progbar(self.steps_per_epoch, stateful_metrics=BAR_METRICS.values())
            self.bar.update(step_in_epoch)

    def log_interval(self, epoch: int, step: int, scalars: dict[str, float], steps_per_second: float) -> None:
        self.intervals_logged += 1
        if self.intervals_logged == 2:  # The first interval of a process includes tracing the steps.
            self.log_time_estimate(step, steps_per_second)
        if self.bar:
            self.bar.update(step - epoch * self.steps_per_epoch,
                            [(label, scalars[tag]) for tag, label in BAR_METRICS.items()])
            return
        logging.info("epoch %d step %d/%d: loss %.4f, accuracy %.4f, %.0f examples/s, lr %.3g",
                     epoch + 1, step, self.total_steps, scalars["loss/total"], scalars["accuracy"],
                     scalars["perf/examples_per_sec"], scalars["learning_rate"])

    def log_time_estimate(self, step: int, steps_per_second: float) -> None:
        """How long the rest of the run should take at the speed just measured."""
        remaining = self.total_steps - step
        if remaining > 0:
            logging.info("Time estimate: the remaining %d of %d steps should take about %s at this speed "
                         "(%.1f steps/s; evaluations not included).", remaining, self.total_steps,
                         duration(remaining / steps_per_second), steps_per_second)

    def log_eval(self, epoch: int, step: int, results: dict[str, float], improved: bool) -> None:
        logging.info("epoch %d step %d eval: loss %.4f, accuracy %.4f, balanced accuracy %.4f%s", epoch + 1,
                     step, results["loss/total"], results["accuracy"], results["balanced_accuracy"],
                     " (best so far)" if improved else "")


def duration(seconds: float) -> str:
    """Seconds as a person reads a wait: '40 s', '12 min', '2 h 05 min'."""
    if seconds < 90:
        return f"{seconds:.0f} s"
    minutes = round(seconds / 60)
    return f"{minutes} min" if minutes < 90 else f"{minutes // 60} h {minutes % 60:02d} min"


class IntervalTimer:
    """Times the training steps between two logs; evaluation and epoch-end checkpoints fall outside."""

    def __init__(self):
        self.restart()

    def restart(self) -> None:
        self.start = time.perf_counter()
        self.steps = 0

    def tick(self, steps: int = 1) -> None:
        self.steps += steps

    def close(self) -> tuple[int, float]:
        """Returns the interval's (steps, seconds) and starts the next one."""
        steps, seconds = self.steps, time.perf_counter() - self.start
        self.restart()
        return steps, seconds
