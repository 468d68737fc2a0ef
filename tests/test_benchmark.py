"""The benchmark script's contract on tiny synthetic trials: what it writes and prints. Its timings
are not tested (shared cores), and neither are the ratios it derives from them: a test that
recomputes them from its own JSON could only fail on arithmetic."""

import json

import pytest

from data import catalog
from models import registry, size
from tests.documented_outputs import assert_documented
from tests.helpers import run_script
from trainer import precision, run_inputs
from trainer.flags import parse_config

pytestmark = pytest.mark.slow  # Every test here runs a script or trains a model.


def tiny_recipe(path, epochs: int) -> str:
    path.write_text("--dataset=synthetic\n--model=lean_cnn\n--model_width=8\n--batch_size=64\n"
                    f"--epochs={epochs}\n--validation_split=0\n--progress=log\n")
    return str(path)


def test_benchmark_writes_its_measurements_and_the_precision_it_ran_in(tmp_path):
    output = tmp_path / "benchmark.json"
    fast, reference = tiny_recipe(tmp_path / "fast.flags", 1), tiny_recipe(tmp_path / "reference.flags", 2)
    result = run_script("benchmark", "--dataset=synthetic", "--model_width=8", "--batch_size=32", "--repeats=1",
                        "--measure_steps=3", "--warmup_steps_per_trial=1", f"--output={output}",
                        "--fashion_time_to_accuracy", f"--fashion_fast_flagfile={fast}",
                        f"--fashion_reference_flagfile={reference}")
    assert result.returncode == 0, result.stderr
    results = json.loads(output.read_text())
    assert_documented("The benchmark's JSON", results)
    speeds = results["examples_per_sec"]
    assert set(speeds) == {"tapeloop --checks=off", "tapeloop --checks=standard", "tapeloop --checks=full",
                           "keras fit (jit_compile=False)", "keras fit (jit_compile='auto')"}
    assert all(speed > 0 for speed in speeds.values())
    assert {"speedup_vs_keras_fit", "speedup_vs_keras_fit_default_jit", "checks_standard_cost", "checks_full_cost",
            "pipeline_examples_per_sec", "pipeline_headroom"} <= set(results)
    assert results["setup"]["batch_size"] == 32 and results["peak_rss_mb"] > 0
    assert set(results["peak_gflops"]) == {"matmul_float32", "matmul_bfloat16", "conv_float32", "conv_bfloat16"}
    model = registry.build_model("cnn", catalog.SYNTHETIC.image_shape, 10, width=8, depth=2, dropout=0.3)
    assert results["training_flops_per_example"] == size.training_flops(model, catalog.SYNTHETIC.image_shape)
    assert 0 < results["achieved_fraction_of_peak"]["benchmark"] and "achieved_fraction_of_peak" in result.stdout
    assert "speedup_vs_keras_fit" in result.stdout and "time_to_99_ratio" not in results
    race = results["fashion_time_to_accuracy"]
    assert (race["fast"]["flagfile"], race["reference"]["flagfile"]) == (fast, reference)
    assert (race["fast"]["epochs"], race["reference"]["epochs"]) == (1, 2)
    recipe_model = run_inputs.build_model(parse_config([f"--flagfile={fast}", f"--run_dir={tmp_path / 'x'}"]),
                                     catalog.SYNTHETIC, pretrained=False)
    assert race["fast"]["training_flops_per_example"] == size.training_flops(recipe_model,
                                                                            catalog.SYNTHETIC.image_shape)
    assert all(0 <= recipe["test_accuracy"] <= 1 for recipe in race.values())
    assert {"fashion_fast", "fashion_reference"} <= set(results["achieved_fraction_of_peak"])
    assert "fashion_time_to_94_ratio" in results and "fashion_time_to_94_ratio" in result.stdout
    expected_precision = precision.for_run("auto", "default")
    assert results["precision"] == expected_precision.record()  # The choice, with this CPU's vendor and level.
    assert f"precision {expected_precision.reason}" in result.stdout
