"""Scores a run on the test split: `python scripts/evaluate.py --run_dir=RUN [--weights=final]`.

Prints accuracy, balanced accuracy, loss, expected calibration error and per-class precision and
recall as text; `--output=FILE` also writes them as JSON (`-` for stdout).
`--tta=flip|shift` adds the accuracy with test-time augmentation, reported beside (never instead of) the plain one.
"""

from trainer import cli  # First: quiets TensorFlow's start-up logging.

import dataclasses
import os

import keras
import numpy as np
import tensorflow as tf
from absl import flags

from data import pipeline, sources
from data.streaming import pixels_at
from diagnosis import calibration
from trainer import conversion, losses, steps
from trainer.batchnorm import StatisticsEstimator
from trainer.checkpoints import (final_weights_dir, load_saved_model, probability_scores, restore_model_weights,
                                 saved_model_probabilities)
from trainer.evaluation import Evaluator, evaluation_batches, predicted_logits, summarize_split
from settings.command_line import register_run_dir_validator
from trainer.run_directory import load_run_config
from trainer.run_inputs import build_model, make_weight_average

flags.DEFINE_string("run_dir", None, "Run directory written by scripts/train.py.", required=True)
flags.DEFINE_enum("weights", "final", ("final", "best", "latest", "saved_model", *conversion.FORMATS),
                  "What to score: the weights train.py scored (final: best/, or the latest checkpoint "
                  "of a run without a validation split), the best or latest checkpoint, the exported SavedModel, "
                  "or a file scripts/export.py converted (tflite, tflite_int8, onnx), run in its own runtime and "
                  "compared with the SavedModel.")
flags.DEFINE_string("converted", None, "--weights=tflite|tflite_int8|onnx: the file (default: where export.py "
                    "writes it, RUN/export/).")
flags.DEFINE_string("data_dir", None, "Overrides the run's --data_dir (the same files, elsewhere).")
flags.DEFINE_string("output", None, "Also write the results as JSON to this file ('-': stdout only).")
flags.DEFINE_enum("tta", "none", ("none", "flip", "shift"), "Also score with test-time augmentation: class "
                  "probabilities averaged over each image and its mirror (flip; not for digits) or its "
                  "one-pixel shifts (shift). Needs checkpoint weights, not --weights=saved_model.")
flags.register_multi_flags_validator(
    ["tta", "weights"], lambda values: values["tta"] == "none" or values["weights"] in ("final", "best", "latest"),
    "--tta scores checkpoint weights: use --weights=final, best or latest")
register_run_dir_validator()
FLAGS = flags.FLAGS


def tta_accuracy(model, batches, spec, config) -> float:
    """Test accuracy of the probabilities averaged over the --tta views of each batch."""
    tta_step = steps.make_tta_step(model, lambda images: pipeline.test_time_views(
        images, spec, config.standardize, FLAGS.tta))
    accuracy = keras.metrics.SparseCategoricalAccuracy()
    for images, labels in batches:
        accuracy.update_state(losses.class_ids(labels), tta_step(images))
    return float(accuracy.result())


def compared_with_saved_model(spec, labels, saved: np.ndarray, converted: np.ndarray) -> dict:
    """How far a converted file's predictions are from the SavedModel's on the same images."""
    saved_accuracy = probability_scores(spec, labels, saved)["accuracy"]
    converted_accuracy = float(np.mean(converted.argmax(axis=1) == labels))
    return {"saved_model_accuracy": saved_accuracy,
            "accuracy_difference_points": 100 * (converted_accuracy - saved_accuracy),
            "top1_agreement": float(np.mean(converted.argmax(axis=1) == saved.argmax(axis=1))),
            "max_probability_difference": float(np.max(np.abs(converted - saved)))}


def scored_checkpoint(config, data, spec, images, labels):
    """(weights path, scores, probabilities, model, batches) of the checkpoint --weights names."""
    model = build_model(config, spec, pretrained=False)
    folder = {"final": final_weights_dir(FLAGS.run_dir), "best": os.path.join(FLAGS.run_dir, "best"),
              "latest": os.path.join(FLAGS.run_dir, "checkpoints")}[FLAGS.weights]
    source = restore_model_weights(model, folder, make_weight_average(config, model))
    if data:  # As train.py scored and exported it.
        StatisticsEstimator(model, data.train, spec, config).estimate(config.precise_bn_batches)
    batches = evaluation_batches((images, labels), spec, config)
    scores = Evaluator(config, spec, model).run(batches).scores
    return source, scores, calibration.softmax(predicted_logits(model, batches)), model, batches


def scored_export(config, spec, images, labels):
    """(file, scores, probabilities, comparison with the SavedModel or None) of the SavedModel or a
    converted file, each fed raw images in its own runtime."""
    source = os.path.join(FLAGS.run_dir, "saved_model")
    probabilities = saved_model_probabilities(source, images, config.eval_batch_size, config.input_range)
    comparison = None
    if FLAGS.weights != "saved_model":
        saved_probabilities = probabilities
        source = FLAGS.converted or conversion.default_path(FLAGS.run_dir, FLAGS.weights)
        predict, contract = conversion.converted_model(source, FLAGS.weights)
        conversion.refuse_another_models_contract(contract, spec, source)
        probabilities = conversion.converted_probabilities(predict, images, config.eval_batch_size)
        comparison = compared_with_saved_model(spec, labels, saved_probabilities, probabilities)
    else:
        serve = load_saved_model(source).signatures["serving_default"]
        predict = lambda batch: serve(images=tf.constant(batch))  # noqa: E731
    scores = probability_scores(spec, labels, probabilities)
    scores["single_image_ms"] = conversion.single_image_milliseconds(predict, pixels_at(images, np.array([0]))[0])
    return source, scores, probabilities, comparison


def file_bytes(path: str) -> int:
    """The size of a file, or of a folder's files (a SavedModel)."""
    if os.path.isfile(path):
        return os.path.getsize(path)
    return sum(os.path.getsize(os.path.join(folder, name)) for folder, _, names in os.walk(path) for name in names)


def main(argv):
    cli.check_output_path(FLAGS.output)
    config = load_run_config(FLAGS.run_dir)
    config = dataclasses.replace(config, data_dir=FLAGS.data_dir or config.data_dir)
    # --precise_bn_batches estimates statistics on the training split exactly as train.py held it.
    data = pipeline.prepare_data(config) if config.precise_bn_batches else None
    spec, splits = (data.spec, {"test": data.test}) if data else sources.load(config)
    images, labels = splits["test"]
    if FLAGS.weights in ("final", "best", "latest"):
        source, scores, probabilities, model, batches = scored_checkpoint(config, data, spec, images, labels)
        comparison = None
    else:
        source, scores, probabilities, comparison = scored_export(config, spec, images, labels)
    results = {"dataset": config.dataset, "split": "test", "examples": int(len(labels)), "weights": source,
               **summarize_split(scores, spec.class_names),
               "expected_calibration_error": calibration.expected_calibration_error(probabilities, labels),
               **({"saved_model_comparison": comparison} if comparison else {}),
               **({"single_image_ms": scores["single_image_ms"], "file_bytes": file_bytes(source)}
                  if "single_image_ms" in scores else {})}
    if FLAGS.tta != "none":
        results["tta"] = {"views": FLAGS.tta, "accuracy": tta_accuracy(model, batches, spec, config)}
    if FLAGS.output == "-":
        cli.write_json("-", results)
        return
    print(f"test accuracy {results['accuracy']:.4f}, balanced accuracy {results['balanced_accuracy']:.4f}, "
          f"loss {results['loss']:.4f}, expected calibration error {results['expected_calibration_error']:.4f} "
          f"({results['examples']} examples, weights {source})")
    for name, scores in results["per_class"].items():
        recall = "n/a (no examples)" if scores["recall"] is None else f"{scores['recall']:.4f}"
        print(f"  {name:>12}  precision {scores['precision']:.4f}  recall {recall}")
    if "single_image_ms" in results:
        print(f"one image takes {results['single_image_ms']:.2f} ms (median of {conversion.LATENCY_REPEATS}); "
              f"{results['file_bytes'] / 1024:.0f} KiB on disk")
    if comparison:
        print(f"against the SavedModel ({comparison['saved_model_accuracy']:.4f}): "
              f"{comparison['accuracy_difference_points']:+.2f} points, the same top-1 class for "
              f"{comparison['top1_agreement']:.2%} of the images, probabilities within "
              f"{comparison['max_probability_difference']:.2g}")
    if "tta" in results:
        print(f"test accuracy with test-time augmentation ({FLAGS.tta}): {results['tta']['accuracy']:.4f} "
              "(not the headline number)")
    if FLAGS.output:
        cli.write_json(FLAGS.output, results)


if __name__ == "__main__":
    cli.run(main)
