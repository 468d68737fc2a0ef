"""The learning-rate range test, the cheap first step before a search:
`python scripts/lr_range_test.py --flagfile=configs/mnist_fast.flags --run_dir=runs/range_test`.

A fresh model of the flags trains --range_test_steps batches while the rate rises exponentially
from --range_test_min_rate to --range_test_max_rate. Writes RUN/lr_range_test.png (the loss against
the rate), RUN/lr_range_test.json, and the curve to TensorBoard (RUN/lr_range_test); prints the
suggested rate with how sure it is, or why there is none.
"""

from trainer import cli  # First: quiets TensorFlow's start-up logging.

import json
import os

import tensorflow as tf
from absl import flags

from trainer import run_directory, summaries
from tuning import lr_range_test
from settings.command_line import define_flags
from trainer.flags import config_from_flags

define_flags()
flags.mark_flag_as_required("run_dir")
flags.DEFINE_float("range_test_min_rate", 1e-6, "The first rate of the range test.", lower_bound=1e-12)
flags.DEFINE_float("range_test_max_rate", 1.0, "The last rate of the range test (it stops earlier if the "
                   "loss diverges).", lower_bound=1e-12)
flags.DEFINE_integer("range_test_steps", 300, "Training steps from the first rate to the last.", lower_bound=20)
flags.DEFINE_integer("range_test_repeats", 3, "Fresh models (seeds --seed, --seed + 1, ...) whose curves are "
                     "averaged; their spread says how sure the suggestion is.", lower_bound=1)
flags.register_multi_flags_validator(
    ["range_test_min_rate", "range_test_max_rate"],
    lambda values: values["range_test_min_rate"] < values["range_test_max_rate"],
    "--range_test_min_rate must be below --range_test_max_rate")
FLAGS = flags.FLAGS


def write_outputs(run_dir: str, test: lr_range_test.RangeTest, suggestion: lr_range_test.Suggestion) -> None:
    """RUN/lr_range_test.json and .png, and the curve in TensorBoard under RUN/lr_range_test."""
    record = {"suggested_learning_rate": suggestion.rate, "confidence": suggestion.confidence,
              "reasons": list(suggestion.reasons), "valley_bottom_rate": suggestion.minimum_rate,
              "seeds": list(test.seeds), "seed_lowest_loss_rates": list(suggestion.seed_minimum_rates),
              "stopped_at": test.stopped, "rates": test.rates.tolist(), "losses": test.losses.tolist(),
              "smoothed": test.smoothed.tolist()}
    run_directory.write_text_atomic(os.path.join(run_dir, "lr_range_test.json"), json.dumps(record, indent=2) + "\n")
    figure = lr_range_test.curve_figure(test, suggestion)
    figure.savefig(os.path.join(run_dir, "lr_range_test.png"))
    writer = tf.summary.create_file_writer(os.path.join(run_dir, "lr_range_test"))
    for step, (rate, losses, smoothed) in enumerate(zip(test.rates, test.losses.T, test.smoothed)):
        summaries.write_scalars(writer, {"lr_range_test/learning_rate": rate, "lr_range_test/smoothed_loss": smoothed,
                                         **{f"lr_range_test/loss_seed_{seed}": loss
                                            for seed, loss in zip(test.seeds, losses)}}, step)
    summaries.write_figure(writer, "lr_range_test/curve", figure, 0)  # Closes the figure.
    writer.close()


def main(argv):
    config = config_from_flags()
    with run_directory.claim(config.run_dir):
        test = lr_range_test.run_range_test(config, FLAGS.range_test_min_rate, FLAGS.range_test_max_rate,
                                            FLAGS.range_test_steps, FLAGS.range_test_repeats)
        suggestion = lr_range_test.suggest(test)
        write_outputs(config.run_dir, test, suggestion)
    print(f"range test: {len(test.seeds)} seeds, {len(test.rates)} steps from {test.rates[0]:.2g} to {test.rates[-1]:.2g} "
          f"({config.optimizer}, batch {config.batch_size}); curve in {config.run_dir}/lr_range_test.png")
    for reason in suggestion.reasons:
        print(f"  {reason}")
    if suggestion.rate is None:
        print("no rate suggested")
        return
    print(f"suggested learning rate {suggestion.rate:.2g} ({suggestion.confidence}: a third of the rate at the "
          f"bottom of the first valley); e.g. --learning_rate={suggestion.rate:.2g} as the peak of --lr_schedule=onecycle")


if __name__ == "__main__":
    cli.run(main)
