"""The benchmark script's contract on tiny synthetic trials: what it writes and prints. Its timings
are not tested (shared cores), and neither are the ratios it derives from them: a test that
recomputes them from its own JSON could only fail on arithmetic."""

import json
import os

import pytest

from data import catalog
from models import registry, size
from tests.documented_outputs import assert_documented
from tests.helpers import assert_one_paragraph_error, run_script, write_mnist_subset
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


STAND_IN_FOR_TORCH = '''#!/usr/bin/env python3
"""Answers as a Python with torch would: the import check passes, and the script prints what
comparisons/pytorch_mnist_speedrun.py prints (a run line a seed, then the summary)."""
import json, sys
if sys.argv[1] == "-c":
    sys.exit(0)
args = dict(arg[2:].split("=", 1) for arg in sys.argv[2:])
seeds = args["seeds"].split(",")
for seed in seeds:
    print(json.dumps({"seed": int(seed), "training_seconds": 2.0 + int(seed), "test_accuracy": 0.99,
                      "examples_per_sec": 30000.0, "epochs": 1}))
print(json.dumps({"recipe": "stand-in", "torch": "0.0-stand-in", "threads": int(args["threads"]),
                  "seeds": len(seeds), "training_flops_per_example": 7.0e6, "script": sys.argv[1],
                  "data_dir": args["data_dir"]}))
'''


def test_the_race_runs_every_side_once_a_seed_and_records_the_pytorch_side_and_the_step_profile(tmp_path, mnist_dir):
    recipe = tmp_path / "fast.flags"
    recipe.write_text("--dataset=mnist\n--model=lean_cnn\n--model_width=4\n--batch_size=64\n--epochs=1\n"
                      "--max_steps=6\n--validation_split=0\n")
    stand_in = tmp_path / "python"
    stand_in.write_text(STAND_IN_FOR_TORCH)
    stand_in.chmod(0o755)
    output = tmp_path / "benchmark.json"
    # Real digits, few of them: the keras-io side trains a whole epoch of what it is given.
    digits = write_mnist_subset(tmp_path / "mnist", mnist_dir, train_size=3000, test_size=1000)
    result = run_script("benchmark", "--dataset=mnist", f"--data_dir={digits}", "--model_width=4",
                        "--batch_size=32", "--repeats=1", "--measure_steps=2", "--warmup_steps_per_trial=1",
                        "--time_to_accuracy", f"--fast_flagfile={recipe}", "--race_seeds=4",
                        "--keras_max_epochs=1", f"--pytorch_python={stand_in}", "--profile_step",
                        f"--output={output}")
    assert result.returncode == 0, result.stderr
    results = json.loads(output.read_text())
    assert_documented("The benchmark's JSON", results)
    race = results["time_to_accuracy"]
    assert race["seeds"] == [4]
    assert [run["seed"] for run in race["tapeloop"]["runs"]] == [4] == [
        run["seed"] for run in race["keras_example"]["runs"]]
    assert race["keras_example"]["epochs"] == 1 and race["tapeloop"]["flagfile"] == str(recipe)
    assert race["tapeloop"]["training_seconds"] == race["tapeloop"]["runs"][0]["training_seconds"]
    pytorch = race["pytorch"]
    assert pytorch["runs"] == [{"seed": 4, "training_seconds": 6.0, "test_accuracy": 0.99,
                                "examples_per_sec": 30000.0, "epochs": 1}]
    assert (pytorch["training_seconds"], pytorch["torch"], pytorch["training_flops_per_example"]) == (
        6.0, "0.0-stand-in", 7.0e6)
    assert pytorch["threads"] == os.cpu_count() and pytorch["script"] == "comparisons/pytorch_mnist_speedrun.py"
    assert pytorch["achieved_fraction_of_peak"] == pytest.approx(
        30000.0 * 7.0e6 / (results["peak_gflops"]["matmul_float32"] * 1e9))
    assert results["time_vs_pytorch_ratio"] == pytest.approx(race["tapeloop"]["training_seconds"] / 6.0)
    assert "time_vs_pytorch_ratio" in result.stdout and "torch 0.0-stand-in" in result.stdout
    profile = results["step_profile"]
    timed = profile["milliseconds"]
    assert set(timed) == {"convolution_stages", "forward_and_backward", "with_optimizer", "tapeloop_step"}
    assert all(value > 0 for value in timed.values())  # Their order is a timing: the benchmark's, not a test's.
    assert profile["parts"]["optimizer"] == pytest.approx(timed["with_optimizer"] - timed["forward_and_backward"])
    assert profile["batch_size"] == 64 and "one training step of" in result.stdout


def test_a_pytorch_side_that_cannot_run_is_the_paragraph_before_anything_is_measured(tmp_path, mnist_dir):
    for python, found in (("/bin/false", "exit code 1"), (str(tmp_path / "missing"), "FileNotFoundError")):
        result = run_script("benchmark", "--dataset=mnist", f"--data_dir={mnist_dir}", "--time_to_accuracy",
                            f"--pytorch_python={python}")
        assert_one_paragraph_error(result, 1, f"[benchmark] --pytorch_python={python} cannot run the PyTorch side",
                                   found, "-m pip install torch numpy")
        assert "examples/s" not in result.stdout
