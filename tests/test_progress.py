import io

from trainer import progress


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
    reporter.log_interval(1, 15, {"loss/total": 0.5, "accuracy": 0.875, "perf/examples_per_sec": 1234.0,
                                  "learning_rate": 0.001})
    assert "epoch 2 step 15/30: loss 0.5000, accuracy 0.8750, 1234 examples/s, lr 0.001" in caplog.text


def test_the_bar_shows_the_epoch_and_the_interval_metrics(capsys):
    reporter = progress.Progress("bar", steps_per_epoch=10, total_steps=30)
    reporter.start_epoch(2, 0)
    reporter.log_interval(2, 30, {"loss/total": 0.5, "accuracy": 0.875, "perf/examples_per_sec": 1234.0,
                                  "learning_rate": 0.001})
    shown = capsys.readouterr().out
    assert "Epoch 3/3" in shown
    assert "loss: 0.5000" in shown and "accuracy: 0.8750" in shown and "examples/s: 1234" in shown


def test_eval_lines_report_balanced_accuracy_and_a_new_best(caplog):
    caplog.set_level("INFO", logger="absl")
    reporter = progress.Progress("log", steps_per_epoch=10, total_steps=30)
    reporter.log_eval(0, 10, {"loss/total": 0.25, "accuracy": 0.9, "balanced_accuracy": 0.75}, improved=True)
    assert "epoch 1 step 10 eval: loss 0.2500, accuracy 0.9000, balanced accuracy 0.7500 (best so far)" in caplog.text
