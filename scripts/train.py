"""Trains a model: `python scripts/train.py --flagfile=configs/fashion_mnist.flags --run_dir=RUN`.

Rerunning the same command on a run directory with checkpoints resumes from the latest.
"""

from trainer import cli  # First: quiets TensorFlow's start-up logging.

from absl import flags

from trainer import loop
from settings.command_line import define_flags
from trainer.flags import config_from_flags

define_flags()
flags.mark_flag_as_required("run_dir")


def main(argv):
    results = loop.train(config_from_flags())
    if "test" not in results:  # A multi_worker worker: the chief writes the run directory.
        print(f"worker finished at step {results['steps']}; the chief wrote {flags.FLAGS.run_dir}")
        return
    split, scores = ("test", results["test"]) if results["test"] else ("validation", results["eval"])
    print(f"{split} accuracy {scores['accuracy']:.4f}, loss {scores['loss']:.4f} "
          f"({results['steps']} steps, {results['wall_seconds']:.0f} s); "
          f"results in {flags.FLAGS.run_dir}/results.json")


if __name__ == "__main__":
    cli.run(main)
