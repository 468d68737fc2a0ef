import io

from trainer import progress

SCALARS = {"loss/total": 0.5, "accuracy": 0.875, "perf/examples_per_sec": 1234.0, "learning_rate": 0.001}


def test_auto_shows_a_bar_only_on_a_terminal(monkeypatch):
    terminal = io.StringIO()
    terminal.isatty = lambda: True
    monkeypatch.setattr(progress.sys, "stdout", terminal)
    assert progress.use_bar("auto") and progress.use_bar("bar") and not progress.use_bar("log")
    monkeypatch.setattr(progress.sys, "stdout", io.StringIO())
    assert not progress.use_bar("auto") and progress.use_bar("bar")


def test_interval_timer_reports_steps_and_seconds_then_restarts(monkeypatch):
    clock = iter([100.0, 102.5, 102.5, 104.0, 104.0])
    monkeypatch.setattr(progress.time, "perf_counter", lambda: next(clock))
    timer = progress.IntervalTimer()
    for _ in range(4):
        timer.tick()
    assert timer.close() == (4, 2.5)
    timer.tick()
    assert timer.close() == (1, 1.5)


def test_log_lines_report_step_loss_accuracy_and_speed(caplog):
    caplog.set_level("INFO", logger="absl")
    reporter = progress.Progress("log", steps_per_epoch=10, total_steps=30)
    reporter.start_epoch(1, 0)
    reporter.log_interval(1, 15, SCALARS, steps_per_second=9.6)
    assert "epoch 2 step 15/30: loss 0.5000, accuracy 0.8750, 1234 examples/s, lr 0.001" in caplog.text


def test_the_bar_shows_the_epoch_and_the_interval_metrics(capsys):
    reporter = progress.Progress("bar", steps_per_epoch=10, total_steps=30)
    reporter.start_epoch(2, 0)
    reporter.log_interval(2, 30, SCALARS, steps_per_second=9.6)
    shown = capsys.readouterr().out
    assert "Epoch 3/3" in shown
    assert "loss: 0.5000" in shown and "accuracy: 0.8750" in shown and "examples/s: 1234" in shown


def test_eval_lines_report_balanced_accuracy_and_a_new_best(caplog):
    caplog.set_level("INFO", logger="absl")
    reporter = progress.Progress("log", steps_per_epoch=10, total_steps=30)
    reporter.log_eval(0, 10, {"loss/total": 0.25, "accuracy": 0.9, "balanced_accuracy": 0.75}, improved=True)
    assert "epoch 1 step 10 eval: loss 0.2500, accuracy 0.9000, balanced accuracy 0.7500 (best so far)" in caplog.text


def test_the_second_interval_estimates_the_time_left_at_its_speed(caplog):
    caplog.set_level("INFO", logger="absl")
    reporter = progress.Progress("log", steps_per_epoch=100, total_steps=9400)
    reporter.log_interval(0, 100, SCALARS, steps_per_second=1.0)  # Includes tracing: no estimate.
    assert "Time estimate" not in caplog.text
    reporter.log_interval(1, 200, SCALARS, steps_per_second=0.5)
    assert ("Time estimate: the remaining 9200 of 9400 steps should take about 5 h 07 min at this speed "
            "(0.5 steps/s; evaluations not included)") in caplog.text
    reporter.log_interval(2, 300, SCALARS, steps_per_second=4.0)
    assert caplog.text.count("Time estimate") == 1


def test_durations_read_as_a_wait():
    assert [progress.duration(seconds) for seconds in (40, 89.4, 90, 719, 5369, 5400, 7260)] == [
        "40 s", "89 s", "2 min", "12 min", "89 min", "1 h 30 min", "2 h 01 min"]
