"""Checks a recipe without training: `python scripts/diagnose.py --flagfile=configs/mnist.flags`.

Prints the pre-flight report on the data (sizes, classes, pixel range, duplicates),
then runs one training step on one batch with every stage check on (--checks=full)
and prints its loss against chance level. Writes nothing; exit 1 on a failed check.
"""

from trainer import cli  # First: quiets TensorFlow's start-up logging.

import math

from trainer import setup
from trainer.flags import config_from_flags, define_flags

define_flags()


def main(argv):
    config = config_from_flags()
    diagnosis = setup.diagnose(config)
    for line in diagnosis["report"]:
        print(line)
    for warning in diagnosis["warnings"]:
        print(warning.paragraph())
    print(f"one checked step (--checks=full): loss {diagnosis['loss']:.4f} (cross-entropy at chance: "
          f"{math.log(diagnosis['num_classes']):.4f}), gradient norm {diagnosis['gradient_norm']:.4g}; "
          f"every check passed, {len(diagnosis['warnings'])} warning(s)")


if __name__ == "__main__":
    cli.run(main)
