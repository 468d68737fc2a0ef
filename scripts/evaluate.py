"""Scores a run on the test split: `python scripts/evaluate.py --run_dir=RUN [--weights=best]`.

Prints accuracy, balanced accuracy, loss and per-class precision and recall as text; `--output=FILE` also writes them as JSON (`-` for stdout).
"""

from trainer import cli  # First: quiets TensorFlow's start-up logging.

import json
import os

from absl import flags

from data import catalog
from data.sources import load_dataset
from trainer import losses, loop, steps
from trainer.checkpoints import evaluate_saved_model, restore_model_weights
from trainer.flags import load_run_config

flags.DEFINE_string("run_dir", None, "Run directory written by scripts/train.py.", required=True)
flags.DEFINE_enum("weights", "best", ("best", "latest", "saved_model"),
                  "What to score: the best or latest checkpoint, or the exported SavedModel.")
flags.DEFINE_string("data_dir", None, "Overrides the run's --data_dir (the same files, elsewhere).")
flags.DEFINE_string("output", None, "Also write the results as JSON to this file ('-': stdout only).")
FLAGS = flags.FLAGS


def main(argv):
    config = load_run_config(FLAGS.run_dir)
    spec = catalog.get_spec(config.dataset)
    images, labels = load_dataset(spec, FLAGS.data_dir or config.data_dir, config.download)["test"]
    if FLAGS.weights == "saved_model":
        source = os.path.join(FLAGS.run_dir, "saved_model")
        scores = evaluate_saved_model(source, spec, images, labels, config.eval_batch_size)
    else:
        model = loop.build_model(config, spec)
        folder = "best" if FLAGS.weights == "best" else "checkpoints"
        source = restore_model_weights(model, os.path.join(FLAGS.run_dir, folder))
        loss = losses.from_config(config, spec.num_classes)
        metrics = steps.make_metrics(loss, class_names=spec.class_names)
        eval_step = steps.make_eval_step(model, loss, metrics, loop.make_stage_checks(config, spec))
        scores = loop.evaluate(eval_step, metrics,
                               loop.evaluation_batches((images, labels), spec, config)).scores
    results = {"dataset": config.dataset, "split": "test", "examples": int(len(labels)), "weights": source,
               **loop.summarize_split(scores, spec.class_names)}
    if FLAGS.output == "-":
        print(json.dumps(results, indent=2))
        return
    print(f"test accuracy {results['accuracy']:.4f}, balanced accuracy {results['balanced_accuracy']:.4f}, "
          f"loss {results['loss']:.4f} ({results['examples']} examples, weights {source})")
    for name, scores in results["per_class"].items():
        recall = "n/a (no examples)" if scores["recall"] is None else f"{scores['recall']:.4f}"
        print(f"  {name:>12}  precision {scores['precision']:.4f}  recall {recall}")
    if FLAGS.output:
        with open(FLAGS.output, "w") as stream:
            json.dump(results, stream, indent=2)


if __name__ == "__main__":
    cli.run(main)
