"""Classifies image files with a run's exported model:
`python scripts/predict.py --run_dir=RUN FILE_OR_FOLDER...` prints the top classes of each file
(every image file under a folder) with their probabilities, after decoding and resizing it as
training did (`--output=-` for JSON).
"""

from trainer import cli  # First: quiets TensorFlow's start-up logging.

import os

import numpy as np
import tensorflow as tf
from absl import flags

from data.image_folder import IMAGE_SUFFIXES, read_images
from trainer import conversion
from trainer.checkpoints import load_saved_model
from settings.errors import TapeloopError
from settings.command_line import register_run_dir_validator
from trainer.run_directory import load_run_config

flags.DEFINE_string("run_dir", None, "Run directory written by scripts/train.py (its saved_model/ is used).",
                    required=True)
flags.DEFINE_enum("weights", "saved_model", ("saved_model", *conversion.FORMATS), "The model: RUN/saved_model, or a "
                  "file scripts/export.py converted (run in its own runtime: the TFLite interpreter, onnxruntime).")
flags.DEFINE_string("converted", None, "--weights=tflite|tflite_int8|onnx: the file (default: RUN/export/).")
flags.DEFINE_integer("top_k", 3, "Classes printed per file, most probable first.", lower_bound=1)
flags.DEFINE_integer("batch_size", 256, "Files classified per call of the model.", lower_bound=1)
flags.DEFINE_string("output", None, "Also write the predictions as JSON to this file ('-': stdout only).")
register_run_dir_validator()
FLAGS = flags.FLAGS


def predict(probabilities_of, files: list[str], image_shape, resize: str, batch_size: int) -> np.ndarray:
    """Class probabilities [len(files), num_classes] of the exported model for the files."""
    height, width, channels = image_shape
    stacked, _, unreadable = read_images(files, (height, width), channels, resize)
    if unreadable:
        raise TapeloopError(
            stage="data", problem=f"{len(unreadable)} of {len(files)} files cannot be read as images or brought "
            f"to the model's {height}x{width}", expected="JPEG, PNG, BMP or GIF files", found="; ".join(unreadable[:10]),
            fix="pass only image files that decode (each file's reason is in parentheses)")
    if channels == 1:
        stacked = stacked[..., 0]  # Stored grayscale images have no channel axis.
    return np.concatenate([probabilities_of(stacked[start:start + batch_size])
                           for start in range(0, len(stacked), batch_size)])


def chosen_model() -> tuple:
    """(uint8 images -> probabilities, class names, image shape [H, W, C]) of --weights."""
    if FLAGS.weights == "saved_model":
        exported = load_saved_model(os.path.join(FLAGS.run_dir, "saved_model"))
        serve = exported.signatures["serving_default"]
        return (lambda images: serve(images=tf.constant(images))["probabilities"].numpy(),
                [name.decode() for name in exported.class_names.numpy()], exported.image_shape.numpy().tolist())
    path = FLAGS.converted or conversion.default_path(FLAGS.run_dir, FLAGS.weights)
    predict_file, contract = conversion.converted_model(path, FLAGS.weights)
    stored = contract["input"]["shape"][1:]
    return (predict_file, contract["output"]["class_names"],
            stored if len(stored) == 3 else [*stored, 1])


def expand(paths: list[str]) -> list[str]:
    """The files named, with each folder replaced by the image files under it, in sorted order."""
    files = []
    for path in paths:
        if os.path.isdir(path):
            files.extend(sorted(os.path.join(folder, name) for folder, _, names in os.walk(path)
                                for name in names if name.lower().endswith(IMAGE_SUFFIXES)))
        else:
            files.append(path)
    return files


def main(argv):
    cli.check_output_path(FLAGS.output)
    files = expand(argv[1:])
    if not files:
        raise TapeloopError(stage="flags", problem="no image files to classify", expected="FILE... after the flags",
                            found="none", fix="e.g. scripts/predict.py --run_dir=RUN photo.jpg scan.png")
    config = load_run_config(FLAGS.run_dir)
    probabilities_of, class_names, image_shape = chosen_model()
    probabilities = predict(probabilities_of, files, image_shape, config.image_resize, FLAGS.batch_size)
    predictions = []
    for file, row in zip(files, probabilities):
        top = np.argsort(-row)[:FLAGS.top_k]
        predictions.append({"file": file, "top": [{"class": class_names[index], "probability": float(row[index])}
                                                  for index in top]})
    if FLAGS.output == "-":
        cli.write_json("-", predictions)
        return
    for prediction in predictions:
        print(prediction["file"] + ": " + ", ".join(f"{entry['class']} {entry['probability']:.4f}"
                                                    for entry in prediction["top"]))
    if FLAGS.output:
        cli.write_json(FLAGS.output, predictions)


if __name__ == "__main__":
    cli.run(main, takes_arguments=True)
