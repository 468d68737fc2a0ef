from trainer.errors import TapeloopError


def test_paragraph_names_stage_expectation_finding_and_fix():
    error = TapeloopError(stage="data", problem="the labels are off", expected="integers in [0, 10)",
                          found="a label of 12", fix="pass --dataset=mnist")
    text = error.paragraph()
    assert text.startswith("tapeloop: error: [data] the labels are off.")
    assert "Expected integers in [0, 10); found a label of 12." in text
    assert text.endswith("Fix: pass --dataset=mnist")
    assert "\n" not in text
    assert str(error) == text
