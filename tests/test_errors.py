from settings.errors import TapeloopError, TapeloopWarning


def test_paragraph_names_stage_expectation_finding_and_fix():
    error = TapeloopError(stage="data", problem="the labels are off", expected="integers in [0, 10)",
                          found="a label of 12", fix="pass --dataset=mnist")
    text = error.paragraph()
    assert text.startswith("tapeloop: error: [data] the labels are off.")
    assert "Expected integers in [0, 10); found a label of 12." in text
    assert text.endswith("Fix: pass --dataset=mnist")
    assert "\n" not in text
    assert str(error) == text


def test_a_warning_reads_like_an_error_and_is_a_python_warning():
    warning = TapeloopWarning(stage="raw data", problem="classes are imbalanced", expected="balance",
                              found="99:1", fix="--class_weights=balanced")
    assert warning.paragraph().startswith("tapeloop: warning: [raw data] classes are imbalanced.")
    assert isinstance(warning, UserWarning) and not isinstance(warning, TapeloopError)
