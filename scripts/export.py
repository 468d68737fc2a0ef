"""Converts a finished run's model for deployment: TFLite (float, or int8 by post-training
quantization) or ONNX, with the SavedModel's input contract written beside it:

  python scripts/export.py --run_dir=RUN --format=tflite_int8      # RUN/export/model_int8.tflite(.json)
  python scripts/evaluate.py --run_dir=RUN --weights=tflite_int8   # scored in its own runtime
"""

from trainer import cli  # First: quiets TensorFlow's start-up logging.

import os

from absl import flags

from trainer import conversion

flags.DEFINE_string("run_dir", None, "The finished run to export.", required=True)
flags.DEFINE_enum("format", None, tuple(conversion.FORMATS), "tflite (float32), tflite_int8 (int8 weights and "
                  "activations, calibrated on training images) or onnx (through tf2onnx: pip install -e '.[onnx]').",
                  required=True)
flags.DEFINE_string("output", None, "The file to write (default RUN/export/model.tflite, model_int8.tflite or "
                    "model.onnx); its input contract goes to <output>.json.")
flags.DEFINE_integer("calibration_examples", 300, "tflite_int8: training images the activation ranges are "
                     "calibrated on.", lower_bound=1)
flags.DEFINE_boolean("overwrite", False, "Replace the file and its contract if they exist (without it, an existing "
                     "file is never replaced, not even one export.py wrote).")
flags.DEFINE_string("data_dir", None, "Where the run's dataset is now, if it moved (its flags.txt names the old place).")
FLAGS = flags.FLAGS


def main(argv):
    output = FLAGS.output or conversion.default_path(FLAGS.run_dir, FLAGS.format)
    if os.path.isdir(output):
        cli.check_output_path(output, holds="the converted model")
    cli.refuse_to_overwrite([output, f"{output}.json"], FLAGS.overwrite)
    contract = conversion.export(FLAGS.run_dir, FLAGS.format, output, FLAGS.calibration_examples, FLAGS.data_dir)
    print(f"{FLAGS.format}: {output} ({os.path.getsize(output) / 1024:.0f} KiB); input {contract['input']['dtype']} "
          f"{contract['input']['shape']}, output {contract['output']['name']} over "
          f"{len(contract['output']['class_names'])} classes (contract in {output}.json)")
    print(f"Score it: scripts/evaluate.py --run_dir={FLAGS.run_dir} --weights={FLAGS.format}"
          + (f" --converted={output}" if FLAGS.output else ""))


if __name__ == "__main__":
    cli.run(main)
