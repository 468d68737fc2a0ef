"""The benchmark script's arithmetic and contract, on tiny synthetic trials (its timings are not tested)."""

import json

import pytest

from tests.helpers import run_script
from trainer import precision

pytestmark = pytest.mark.slow  # Every test here runs a script or trains a model.


def test_benchmark_reports_ratios_of_its_own_measurements(tmp_path):
    output = tmp_path / "benchmark.json"
    result = run_script("benchmark", "--dataset=synthetic", "--model_width=8", "--batch_size=32", "--repeats=1",
                        "--measure_steps=3", "--warmup_steps_per_trial=1", f"--output={output}")
    assert result.returncode == 0, result.stderr
    results = json.loads(output.read_text())
    speeds = results["examples_per_sec"]
    assert set(speeds) == {"tapeloop --checks=off", "tapeloop --checks=standard", "tapeloop --checks=full",
                           "keras fit (jit_compile=False)", "keras fit (jit_compile='auto')"}
    assert all(speed > 0 for speed in speeds.values())
    standard = speeds["tapeloop --checks=standard"]
    assert results["speedup_vs_keras_fit"] == pytest.approx(standard / speeds["keras fit (jit_compile=False)"])
    assert results["checks_standard_cost"] == pytest.approx(1 - standard / speeds["tapeloop --checks=off"])
    assert results["checks_full_cost"] == pytest.approx(
        1 - speeds["tapeloop --checks=full"] / speeds["tapeloop --checks=off"])
    assert results["pipeline_headroom"] == pytest.approx(results["pipeline_examples_per_sec"] / standard)
    assert results["setup"]["batch_size"] == 32 and results["peak_rss_mb"] > 0
    assert "speedup_vs_keras_fit" in result.stdout and "time_to_99_ratio" not in results
    expected_precision = precision.for_run("auto", "default")
    assert results["precision"] == expected_precision.record()  # The choice, with this CPU's vendor and level.
    assert f"precision {expected_precision.reason}" in result.stdout
