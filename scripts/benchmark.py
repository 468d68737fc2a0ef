"""Measures tapeloop against keras.Model.fit: `python scripts/benchmark.py --dataset=mnist --data_dir=DIR`.

On one model, data, batch size, optimizer and precision it alternates trials of
tapeloop's training loop (at --checks=off, standard and full) and of
`model.fit`, each timed over --measure_steps steps after --warmup_steps, and
reports medians over --repeats rounds: throughput, tapeloop / fit, the cost of
the checks, the input pipeline alone against what the model consumes, and peak
memory; the machine's attainable peak (large matrix products and the recipe's convolution, float32
and bfloat16), the training FLOPs per example and the share of the peak the loop achieves.
`--time_to_accuracy` also races --fast_flagfile against the keras-io "simple
MNIST convnet" trained with fit until 99.0% test accuracy, and, with
--pytorch_python, against the PyTorch speed recipe
(comparisons/pytorch_mnist_speedrun.py, run in that interpreter's environment),
each side once a seed of --race_seeds; `--fashion_time_to_accuracy` trains the fast
and the default Fashion-MNIST recipes and compares theirs. Prints a table;
`--output=FILE` writes JSON.
"""

from trainer import cli  # First: quiets TensorFlow's start-up logging.

import dataclasses
import json
import os
import platform
import resource
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf
from absl import flags

from data import catalog, pipeline
from data.streaming import pixels_at
from data.sources import dataset_spec, load_dataset
from models import size
from settings.errors import TapeloopError
from trainer import loop, run_inputs, steps
from settings.command_line import define_flags
from trainer.flags import config_from_flags, parse_config

PYTORCH_SCRIPT = Path(__file__).resolve().parent.parent / "comparisons" / "pytorch_mnist_speedrun.py"
define_flags()
flags.DEFINE_integer("repeats", 3, "Rounds of alternating trials; medians are reported.", lower_bound=1)
flags.DEFINE_integer("measure_steps", 40, "Timed steps per trial.", lower_bound=1)
flags.DEFINE_integer("warmup_steps_per_trial", 5, "Untimed steps at the start of each trial.", lower_bound=1)
flags.DEFINE_boolean("time_to_accuracy", False, "Also race --fast_flagfile against the keras-io "
                     "MNIST convnet trained by fit to 99.0% test accuracy (needs MNIST; minutes).")
flags.DEFINE_string("fast_flagfile", "configs/mnist_fastest.flags", "The tapeloop recipe for --time_to_accuracy.")
flags.DEFINE_float("target_accuracy", 0.99, "Test accuracy both sides of --time_to_accuracy must reach.")
flags.DEFINE_list("race_seeds", ["0"], "--time_to_accuracy: the seeds each side trains with, one run each; the "
                  "race compares median training seconds.")
flags.DEFINE_string("pytorch_python", None, "--time_to_accuracy: a Python interpreter with torch installed (an "
                    "environment of its own: torch is no dependency of tapeloop) that runs the PyTorch side, "
                    f"{PYTORCH_SCRIPT.relative_to(PYTORCH_SCRIPT.parents[1])}, on --data_dir's MNIST files with "
                    "the same seeds and threads.")
flags.DEFINE_integer("keras_max_epochs", 15, "Epochs the keras-io example may take (it trains 15).")
flags.DEFINE_boolean("fashion_time_to_accuracy", False, "Also train --fashion_fast_flagfile and "
                     "--fashion_reference_flagfile (Fashion-MNIST; about half an hour) and compare their "
                     "training seconds and test accuracies.")
flags.DEFINE_string("fashion_fast_flagfile", "configs/fashion_mnist_fast.flags",
                    "The fast Fashion-MNIST recipe for --fashion_time_to_accuracy.")
flags.DEFINE_string("fashion_reference_flagfile", "configs/fashion_mnist.flags",
                    "The recipe --fashion_time_to_accuracy times the fast one against.")
flags.DEFINE_string("fashion_data_dir", None, "Fashion-MNIST's directory (default: tapeloop's lookup).")
flags.DEFINE_boolean("profile_step", False, "Also time the parts of one training step of --fast_flagfile's "
                     "recipe: its convolution stages, the rest of the forward and backward pass, the optimizer, "
                     "and the loop around them (checks, metrics, input).")
flags.DEFINE_string("output", None, "Also write the results as JSON to this file.")
FLAGS = flags.FLAGS
PEAK_MATMUL_SIZE = 2048  # A product of 17 GFLOPs: tenths of a second here, far past every cache.
PEAK_REPEATS = 5


def timed_steps(run_step, warmup: int, measured: int) -> tuple[int, float]:
    """(batches done, seconds) over `measured` timed calls of run_step(), which returns its batch count."""
    for _ in range(warmup):
        run_step()
    start = time.perf_counter()
    done = 0
    for _ in range(measured):
        done += run_step()
    return done, time.perf_counter() - start


class TapeloopTrial:
    """tapeloop's own training loop (steps, pipeline, checks) on a fresh model, ready for timed trials."""

    def __init__(self, config):
        run = run_inputs.prepare_run(config)
        checks = run_inputs.make_stage_checks(config, run.spec, training=True)
        metrics = steps.make_metrics(run.loss, with_gradients=True)
        self.train_steps = steps.make_train_loop(run.model, run.optimizer, run.loss, metrics, checks,
                                                 config.clip_grad_norm, config.jit_compile,
                                                 accumulate_steps=config.accumulate_steps, backbone=run.backbone)
        self.batches = iter(pipeline.train_batches(run.data.train, run.example_weights, run.spec, config,
                                                   epoch=0).repeat())
        self.steps_per_call = config.steps_per_loop
        self.batch_size = pipeline.update_batch_size(config)
        self.model, self.image_shape = run.model, run.spec.image_shape
        self.run = run

    def examples_per_sec(self, warmup: int, measured: int) -> float:
        calls = max(1, measured // self.steps_per_call)

        def call():
            float(self.train_steps(self.batches, self.steps_per_call))  # float(): waits for the steps to end.
            return self.steps_per_call

        done, seconds = timed_steps(call, max(1, warmup // self.steps_per_call), calls)
        return done * self.batch_size / seconds


class KerasFitTrial:
    """The same model, optimizer and data trained by keras.Model.fit, as a Keras user would."""

    def __init__(self, config, jit_compile):
        run = run_inputs.prepare_run(config)
        self.model = run.model
        self.model.compile(optimizer=run_inputs.make_optimizer(config),
                           loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                           metrics=["accuracy"], jit_compile=jit_compile)
        images, labels = run.data.train
        used = np.arange(min(len(labels), (FLAGS.warmup_steps_per_trial + FLAGS.measure_steps + 1) * config.batch_size))
        self.labels = labels[used]  # A streamed split (--dataset=tfrecord) is decoded for what fit trains on.
        self.images = pipeline.to_model_input(pixels_at(images, used), run.spec, config.standardize,
                                              config.input_range).numpy()
        self.batch_size = config.batch_size

    def examples_per_sec(self, warmup: int, measured: int) -> float:
        timer = StepTimer(warmup, warmup + measured)
        count = (warmup + measured + 1) * self.batch_size
        self.model.fit(self.images[:count], self.labels[:count], batch_size=self.batch_size, epochs=1,
                       shuffle=True, verbose=0, callbacks=[timer])
        return measured * self.batch_size / timer.seconds


class StepTimer(keras.callbacks.Callback):
    """Seconds between the end of batch `start` and the end of batch `stop` of a fit."""

    def __init__(self, start: int, stop: int):
        super().__init__()
        self.start, self.stop = start, stop

    def on_train_batch_end(self, batch, logs=None):
        if batch + 1 == self.start:
            self.started = time.perf_counter()
        if batch + 1 == self.stop:
            self.seconds = time.perf_counter() - self.started


def best_flops_per_sec(compute, flops: float, repeats: int = PEAK_REPEATS) -> float:
    """`flops` over the fastest of `repeats` timed calls of compute() (after one untimed)."""
    compute()
    seconds = []
    for _ in range(repeats):
        start = time.perf_counter()
        compute()
        seconds.append(time.perf_counter() - start)
    return flops / min(seconds)


def attainable_peak(config, image_shape: tuple[int, int, int]) -> dict:
    """GFLOP/s this machine attains on a large square matrix product and on the recipe's widest
    full-resolution convolution (--batch_size images of its size, --model_width channels in and out,
    3x3), each in float32 and bfloat16: the ceilings a training step's arithmetic runs under."""
    random = tf.random.Generator.from_seed(0)
    height, width = image_shape[:2]
    channels = config.model_width
    shapes = {"matmul": ([PEAK_MATMUL_SIZE] * 2, [PEAK_MATMUL_SIZE] * 2, 2 * PEAK_MATMUL_SIZE ** 3),
              "conv": ([config.batch_size, height, width, channels], [3, 3, channels, channels],
                       2 * config.batch_size * height * width * channels * channels * 9)}
    peaks = {}
    for kind, (left_shape, right_shape, flops) in shapes.items():
        for dtype in (tf.float32, tf.bfloat16):
            left, right = (tf.cast(random.normal(shape), dtype) for shape in (left_shape, right_shape))
            operation = tf.function(lambda x, y, kind=kind: tf.reduce_sum(tf.cast(
                tf.matmul(x, y) if kind == "matmul" else tf.nn.conv2d(x, y, 1, "SAME"), tf.float32)))
            peaks[f"{kind}_{dtype.name}"] = best_flops_per_sec(lambda: operation(left, right).numpy(), flops) / 1e9
    return peaks


def fraction_of_peak(examples_per_sec: float, training_flops: int, precision_setting: str, peaks: dict) -> float:
    """The share of the matrix-product peak, in the run's compute type, that its training steps do."""
    dtype = "bfloat16" if precision_setting == "bfloat16" else "float32"
    return examples_per_sec * training_flops / (peaks[f"matmul_{dtype}"] * 1e9)


def pipeline_examples_per_sec(config, batches: int = 300) -> float:
    """The training input pipeline alone: batches gathered, normalized and prefetched, nothing trained."""
    data = pipeline.prepare_data(config)
    dataset = pipeline.train_batches(data.train, np.ones(len(data.train[1]), np.float32), data.spec, config,
                                     epoch=0).repeat()
    iterator = iter(dataset)

    def next_batch():
        next(iterator)
        return 1

    done, seconds = timed_steps(next_batch, 20, batches)
    return done * config.batch_size / seconds


def keras_example_to_accuracy(data_dir, target: float, max_epochs: int, seed: int) -> dict:
    """keras-io "Simple MNIST convnet", as published (fit's default jit_compile="auto"), trained
    epoch by epoch until its test accuracy reaches `target`; seconds exclude the test evaluations."""
    keras.utils.set_random_seed(seed)
    splits = load_dataset(catalog.MNIST, data_dir)
    (x_train, y_train), (x_test, y_test) = splits["train"], splits["test"]
    x_train = (x_train.astype("float32") / 255)[..., None]
    x_test = (x_test.astype("float32") / 255)[..., None]
    y_train, y_test = keras.utils.to_categorical(y_train, 10), keras.utils.to_categorical(y_test, 10)
    model = keras.Sequential([
        keras.Input(shape=(28, 28, 1)),
        keras.layers.Conv2D(32, kernel_size=(3, 3), activation="relu"),
        keras.layers.MaxPooling2D(pool_size=(2, 2)),
        keras.layers.Conv2D(64, kernel_size=(3, 3), activation="relu"),
        keras.layers.MaxPooling2D(pool_size=(2, 2)),
        keras.layers.Flatten(),
        keras.layers.Dropout(0.5),
        keras.layers.Dense(10, activation="softmax"),
    ])
    model.compile(loss="categorical_crossentropy", optimizer="adam", metrics=["accuracy"])
    held_out = int(len(x_train) * 0.1)  # The example's validation_split=0.1 (not evaluated here).
    seconds, accuracy, epochs = 0.0, 0.0, 0
    while accuracy < target and epochs < max_epochs:
        start = time.perf_counter()
        model.fit(x_train[:-held_out], y_train[:-held_out], batch_size=128, epochs=1, verbose=0)
        seconds += time.perf_counter() - start
        epochs += 1
        accuracy = float(model.evaluate(x_test, y_test, verbose=0)[1])
    return {"seed": seed, "training_seconds": seconds, "epochs": epochs, "test_accuracy": accuracy,
            "parameters": model.count_params()}


def tapeloop_recipe_to_accuracy(flagfile: str, data_dir: str | None, seed: int | None = None) -> dict:
    """Trains the recipe (with `seed`, if given) in a temporary run directory; its training seconds
    exclude evaluation."""
    with tempfile.TemporaryDirectory() as run_dir:
        config = parse_config([f"--flagfile={flagfile}", f"--run_dir={run_dir}", "--progress=log",
                               *([f"--data_dir={data_dir}"] if data_dir else []),
                               *([f"--seed={seed}"] if seed is not None else [])])
        results = loop.train(config)
    spec = dataset_spec(config)
    model = run_inputs.build_model(config, spec, pretrained=False)  # Its twin, for the FLOPs.
    return {"seed": config.seed, "training_seconds": results["training_seconds"], "epochs": results["epochs"],
            "test_accuracy": results["test"]["accuracy"], "flagfile": flagfile,
            "examples_per_sec": results["examples_per_sec"], "precision": results["precision"]["computed_in"],
            "training_flops_per_example": size.training_flops(model, spec.image_shape)}


def median_milliseconds(function, calls: int = 10, repeats: int = 5) -> float:
    """The median over `repeats` of the milliseconds a call of function() takes (after one untimed call)."""
    function()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        for _ in range(calls):
            function()
        times.append((time.perf_counter() - start) * 1000 / calls)
    return statistics.median(times)


def step_profile(flagfile: str, data_dir: str | None, peaks: dict) -> dict:
    """Where a training step of the recipe goes, in milliseconds a step on one batch: its convolution
    stages forward and backward; the whole forward and backward pass; that and the optimizer's update;
    tapeloop's compiled loop (--steps_per_loop steps a call, with its checks, metrics and input
    pipeline). The parts are differences of these; the fraction of peak is the step's FLOPs over
    the precision's matrix-product peak."""
    with tempfile.TemporaryDirectory() as run_dir:
        config = parse_config([f"--flagfile={flagfile}", f"--run_dir={run_dir}",
                               *([f"--data_dir={data_dir}"] if data_dir else [])])
        trial = TapeloopTrial(config)
    model, optimizer = trial.run.model, trial.run.optimizer
    images, labels, _ = next(trial.batches)
    stages = model.stages if hasattr(model, "stages") else model

    def gradients(part, variables):
        with tf.GradientTape() as tape:
            outputs = tf.cast(part(images, training=True), tf.float32)
            value = tf.reduce_mean(tf.nn.sparse_softmax_cross_entropy_with_logits(labels, outputs)) \
                if part is model else tf.reduce_sum(outputs)
        return tape.gradient(value, variables)

    timed = {
        "convolution_stages": tf.function(lambda: gradients(stages, stages.trainable_variables)),
        "forward_and_backward": tf.function(lambda: gradients(model, model.trainable_variables)),
        "with_optimizer": tf.function(lambda: optimizer.apply_gradients(
            zip(gradients(model, model.trainable_variables), model.trainable_variables))),
    }
    milliseconds = {name: median_milliseconds(lambda f=function: tf.nest.map_structure(
        lambda tensor: tensor.numpy(), f())) for name, function in timed.items()}
    milliseconds["tapeloop_step"] = median_milliseconds(
        lambda: float(trial.train_steps(trial.batches, trial.steps_per_call)), calls=2) / trial.steps_per_call
    flops_per_example = size.training_flops(model, trial.image_shape)
    return {"flagfile": flagfile, "batch_size": trial.batch_size, "milliseconds": milliseconds, "parts": {
        "convolution_stages": milliseconds["convolution_stages"],
        "dense_layers_and_loss": milliseconds["forward_and_backward"] - milliseconds["convolution_stages"],
        "optimizer": milliseconds["with_optimizer"] - milliseconds["forward_and_backward"],
        "loop_checks_metrics_input": milliseconds["tapeloop_step"] - milliseconds["with_optimizer"]},
        "achieved_fraction_of_peak": fraction_of_peak(trial.batch_size * 1000 / milliseconds["tapeloop_step"],
                                                      flops_per_example, run_inputs.run_precision(config).setting,
                                                      peaks)}


def over_seeds(runs: list[dict]) -> dict:
    """One side of a race over its seeds' `runs`: the first run's settings, its seeds' median seconds,
    throughput and epochs, and their mean, lowest and highest test accuracy."""
    accuracies = [run["test_accuracy"] for run in runs]
    summary = {key: value for key, value in runs[0].items() if key not in RUN_FIELDS}
    return {**summary, "runs": [{key: run[key] for key in RUN_FIELDS if key in run} for run in runs],
            "training_seconds": statistics.median(run["training_seconds"] for run in runs),
            **({"examples_per_sec": statistics.median(run["examples_per_sec"] for run in runs)}
               if "examples_per_sec" in runs[0] else {}),
            "epochs": statistics.median(run["epochs"] for run in runs),
            "test_accuracy": statistics.mean(accuracies), "min_test_accuracy": min(accuracies),
            "max_test_accuracy": max(accuracies)}


RUN_FIELDS = ("seed", "training_seconds", "test_accuracy", "examples_per_sec", "epochs")


def refuse_unusable_pytorch(python: str, data_dir: str | None) -> None:
    """The paragraph for a PyTorch side that cannot run: no --data_dir for it to read, or an interpreter
    that cannot import torch and numpy."""
    if not data_dir:
        raise TapeloopError(
            stage="benchmark", problem="--pytorch_python needs the MNIST files' folder",
            expected="--data_dir, the folder of MNIST's IDX files that both sides of the race read",
            found="no --data_dir", fix="pass --data_dir=DIR (e.g. ../shared/data/mnist)")
    try:
        checked = subprocess.run([python, "-c", "import torch, numpy"], capture_output=True, text=True, timeout=300)
        found = f"exit code {checked.returncode}: {checked.stderr.strip()[-300:] or 'no message'}"
    except OSError as error:
        checked, found = None, f"{type(error).__name__}: {error}"
    if checked is None or checked.returncode:
        raise TapeloopError(
            stage="benchmark", problem=f"--pytorch_python={python} cannot run the PyTorch side of the race",
            expected="a Python interpreter that imports torch and numpy", found=found,
            fix=f"install them into its environment (`{python} -m pip install torch numpy`), or drop --pytorch_python")


def pytorch_recipe_to_accuracy(python: str, data_dir: str, seeds: list[int], peaks: dict) -> dict:
    """The PyTorch speed recipe, run by `python` (an interpreter with torch) on the same files, seeds and
    thread count: each seed's run and the summary line its script prints, with the share of the
    float32 matrix-product peak its training steps achieved."""
    command = [python, str(PYTORCH_SCRIPT), f"--data_dir={data_dir}", f"--seeds={','.join(map(str, seeds))}",
               f"--threads={os.cpu_count()}"]
    finished = subprocess.run(command, capture_output=True, text=True)
    lines = [json.loads(line) for line in finished.stdout.splitlines() if line.startswith("{")]
    if finished.returncode or len(lines) != len(seeds) + 1:
        raise TapeloopError(
            stage="benchmark", problem="the PyTorch side of the race did not finish",
            expected=f"{len(seeds)} runs and a summary line from `{' '.join(command)}`",
            found=f"exit code {finished.returncode}, {len(lines)} JSON lines; stderr ends: "
                  f"{finished.stderr.strip()[-400:] or 'nothing'}",
            fix=f"check that {python} has torch (`{python} -m pip install torch numpy`) and that --data_dir "
                "holds MNIST")
    *runs, summary = lines
    side = {**over_seeds(runs), "script": str(PYTORCH_SCRIPT.relative_to(PYTORCH_SCRIPT.parents[1])),
            "torch": summary["torch"], "threads": summary["threads"], "precision": "float32",
            "training_flops_per_example": summary["training_flops_per_example"]}
    side["achieved_fraction_of_peak"] = fraction_of_peak(side["examples_per_sec"],
                                                         side["training_flops_per_example"], "none", peaks)
    return side


def main(argv):
    config = config_from_flags()
    if FLAGS.time_to_accuracy and FLAGS.pytorch_python:
        refuse_unusable_pytorch(FLAGS.pytorch_python, config.data_dir)  # Before minutes of other measurements.
    configs = {level: dataclasses.replace(config, checks=level) for level in ("off", "standard", "full")}
    trials = {f"tapeloop --checks={level}": TapeloopTrial(level_config) for level, level_config in configs.items()}
    trials["keras fit (jit_compile=False)"] = KerasFitTrial(config, jit_compile=False)
    trials["keras fit (jit_compile='auto')"] = KerasFitTrial(config, jit_compile="auto")
    measured = {name: [] for name in trials}
    for _ in range(FLAGS.repeats):
        for name, trial in trials.items():
            measured[name].append(trial.examples_per_sec(FLAGS.warmup_steps_per_trial, FLAGS.measure_steps))
    results = {**machine_and_setup(config), **loop_against_fit(config, measured)}
    standard = trials["tapeloop --checks=standard"]
    results["peak_gflops"] = attainable_peak(config, standard.image_shape)
    results["training_flops_per_example"] = size.training_flops(standard.model, standard.image_shape)
    results["achieved_fraction_of_peak"] = {"benchmark": fraction_of_peak(
        results["examples_per_sec"]["tapeloop --checks=standard"], results["training_flops_per_example"],
        results["precision"]["computed_in"], results["peak_gflops"])}
    if FLAGS.time_to_accuracy:
        results.update(time_to_accuracy(config, results["peak_gflops"]))
        for side in ("tapeloop", "pytorch"):
            if side in results["time_to_accuracy"]:
                results["achieved_fraction_of_peak"][f"race_{side}"] = results["time_to_accuracy"][side][
                    "achieved_fraction_of_peak"]
    if FLAGS.profile_step:
        results["step_profile"] = step_profile(FLAGS.fast_flagfile, config.data_dir, results["peak_gflops"])
    if FLAGS.fashion_time_to_accuracy:
        results.update(fashion_time_to_accuracy(results["peak_gflops"]))
        for side, recipe in results["fashion_time_to_accuracy"].items():
            results["achieved_fraction_of_peak"][f"fashion_{side}"] = recipe["achieved_fraction_of_peak"]
    results["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print_table(results)
    if FLAGS.output:
        with open(FLAGS.output, "w") as stream:
            json.dump(results, stream, indent=2)


def machine_and_setup(config) -> dict:
    return {
        "device": platform.processor() or platform.machine(),
        "tensorflow": tf.__version__, "keras": keras.__version__, "cpu_count": os.cpu_count(),
        "gpus": len(tf.config.list_physical_devices("GPU")),
        "precision": run_inputs.run_precision(config).record(),
        "setup": {"dataset": config.dataset, "model": config.model, "model_width": config.model_width,
                  "batch_size": config.batch_size, "optimizer": config.optimizer,
                  "mixed_precision": config.mixed_precision, "jit_compile": config.jit_compile,
                  "steps_per_loop": config.steps_per_loop, "repeats": FLAGS.repeats,
                  "measure_steps": FLAGS.measure_steps}}


def loop_against_fit(config, measured: dict) -> dict:
    """Throughputs (medians), tapeloop / fit and the checks' costs (medians of per-round ratios), the
    input pipeline alone and its headroom over what the standard loop consumes."""
    def median_ratio(numerator, denominator):
        return statistics.median(a / b for a, b in zip(measured[numerator], measured[denominator]))

    standard = "tapeloop --checks=standard"
    throughput = {name: statistics.median(values) for name, values in measured.items()}
    pipeline_speed = pipeline_examples_per_sec(config)
    return {
        "examples_per_sec": throughput,
        "speedup_vs_keras_fit": median_ratio(standard, "keras fit (jit_compile=False)"),
        "speedup_vs_keras_fit_default_jit": median_ratio(standard, "keras fit (jit_compile='auto')"),
        "checks_standard_cost": 1 - median_ratio(standard, "tapeloop --checks=off"),
        "checks_full_cost": 1 - median_ratio("tapeloop --checks=full", "tapeloop --checks=off"),
        "pipeline_examples_per_sec": pipeline_speed,
        "pipeline_headroom": pipeline_speed / throughput[standard],
    }


def timed_recipe(flagfile: str, data_dir: str | None, peaks: dict, seeds: tuple = (None,)) -> dict:
    """A recipe's training runs, one a seed (None: the flagfile's own), with the share of the machine's
    peak its steps achieved."""
    recipe = over_seeds([tapeloop_recipe_to_accuracy(flagfile, data_dir, seed) for seed in seeds])
    recipe["achieved_fraction_of_peak"] = fraction_of_peak(recipe["examples_per_sec"],
                                                           recipe["training_flops_per_example"],
                                                           recipe["precision"], peaks)
    return recipe


def time_to_accuracy(config, peaks: dict) -> dict:
    """--time_to_accuracy: the fast recipe against the keras-io example and (with --pytorch_python) the
    PyTorch speed recipe, each to --target_accuracy once a seed; ratios of median training seconds."""
    seeds = [int(seed) for seed in FLAGS.race_seeds]
    race = {"target": FLAGS.target_accuracy, "seeds": seeds,
            "tapeloop": timed_recipe(FLAGS.fast_flagfile, config.data_dir, peaks, tuple(seeds))}
    if FLAGS.pytorch_python:
        race["pytorch"] = pytorch_recipe_to_accuracy(FLAGS.pytorch_python, config.data_dir, seeds, peaks)
    race["keras_example"] = over_seeds([keras_example_to_accuracy(config.data_dir, FLAGS.target_accuracy,
                                                                  FLAGS.keras_max_epochs, seed) for seed in seeds])
    seconds = {side: recipe["training_seconds"] for side, recipe in race.items() if isinstance(recipe, dict)}
    ratios = {"time_to_99_ratio": seconds["tapeloop"] / seconds["keras_example"]}
    if "pytorch" in seconds:
        ratios["time_vs_pytorch_ratio"] = seconds["tapeloop"] / seconds["pytorch"]
    return {"time_to_accuracy": race, **ratios}


def fashion_time_to_accuracy(peaks: dict) -> dict:
    """--fashion_time_to_accuracy: the fast Fashion-MNIST recipe's training time over the default's."""
    race = {side: timed_recipe(flagfile, FLAGS.fashion_data_dir, peaks)
            for side, flagfile in (("fast", FLAGS.fashion_fast_flagfile),
                                   ("reference", FLAGS.fashion_reference_flagfile))}
    return {"fashion_time_to_accuracy": race,
            "fashion_time_to_94_ratio": race["fast"]["training_seconds"] / race["reference"]["training_seconds"]}


def print_table(results: dict) -> None:
    setup = results["setup"]
    print(f"\n{setup['dataset']}, {setup['model']} width {setup['model_width']}, batch {setup['batch_size']}, "
          f"{setup['optimizer']}, precision {results['precision']['reason']}, jit {setup['jit_compile']}, "
          f"steps_per_loop {setup['steps_per_loop']}; TensorFlow {results['tensorflow']}, "
          f"{results['cpu_count']} CPUs, {results['gpus']} GPUs; median of {setup['repeats']} rounds")
    print(f"{'':40s} {'examples/s':>12s}")
    for name, value in results["examples_per_sec"].items():
        print(f"{name:40s} {value:12.0f}")
    print(f"{'input pipeline alone':40s} {results['pipeline_examples_per_sec']:12.0f}")
    print(f"speedup_vs_keras_fit              {results['speedup_vs_keras_fit']:.3f}  "
          f"(default jit: {results['speedup_vs_keras_fit_default_jit']:.3f})")
    print(f"checks_standard_cost              {results['checks_standard_cost']:+.3f}")
    print(f"checks_full_cost                  {results['checks_full_cost']:+.3f}")
    print(f"pipeline_headroom                 {results['pipeline_headroom']:.1f}x")
    peaks = results["peak_gflops"]
    print("attainable peak, GFLOP/s          " + ", ".join(f"{name} {value:.1f}" for name, value in peaks.items()))
    print(f"training FLOPs per example        {results['training_flops_per_example'] / 1e6:.1f} M")
    for recipe, fraction in results["achieved_fraction_of_peak"].items():
        print(f"achieved_fraction_of_peak, {recipe + ':':12s} {fraction:.3f}")
    if "time_to_99_ratio" in results:
        print_race(results)
    if "step_profile" in results:
        profile = results["step_profile"]
        print(f"one training step of {profile['flagfile']} (batch {profile['batch_size']}), ms: " + ", ".join(
            f"{part} {value:.2f}" for part, value in profile["parts"].items())
            + f"; fraction of peak {profile['achieved_fraction_of_peak']:.3f}")
    if "fashion_time_to_94_ratio" in results:
        for side, recipe in results["fashion_time_to_accuracy"].items():
            print(f"Fashion-MNIST {side:9s} {recipe['flagfile']:34s} {recipe['training_seconds']:7.1f} s, "
                  f"{recipe['epochs']:g} epochs, test accuracy {recipe['test_accuracy']:.4f}")
        print(f"fashion_time_to_94_ratio          {results['fashion_time_to_94_ratio']:.3f}")
    print(f"peak_rss_mb                       {results['peak_rss_mb']:.0f}")


def print_race(results: dict) -> None:
    """Each side of --time_to_accuracy over its seeds, and the ratios of their median seconds."""
    race = results["time_to_accuracy"]
    print(f"time to {race['target']:.1%} test accuracy, seeds {','.join(map(str, race['seeds']))} (median seconds; "
          "mean, lowest and highest accuracy):")
    for side in ("tapeloop", "pytorch", "keras_example"):
        if side in race:
            recipe = race[side]
            print(f"  {side:14s} {recipe['training_seconds']:7.2f} s, test accuracy {recipe['test_accuracy']:.4f} "
                  f"({recipe['min_test_accuracy']:.4f}-{recipe['max_test_accuracy']:.4f})"
                  + (f", {recipe['examples_per_sec']:.0f} examples/s, {recipe['training_flops_per_example'] / 1e6:.1f}"
                     f" MFLOPs a training example" if "examples_per_sec" in recipe else ""))
    print(f"time_to_99_ratio                  {results['time_to_99_ratio']:.3f}")
    if "time_vs_pytorch_ratio" in results:
        print(f"time_vs_pytorch_ratio             {results['time_vs_pytorch_ratio']:.3f}  "
              f"(torch {race['pytorch']['torch']}, {race['pytorch']['threads']} threads)")


if __name__ == "__main__":
    cli.run(main)
