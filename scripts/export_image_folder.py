"""Writes a catalog dataset as an image folder of PNG files, e.g. to try --dataset=image_folder:
`python scripts/export_image_folder.py --dataset=mnist --output_dir=DIR` makes DIR/train/<class>/
and DIR/test/<class>/, one PNG per image, named by its index in the stored split. --size, --channels
and --copies make larger folders from it (e.g. to measure streaming: 64x64 RGB, each image 4 times).
"""

from trainer import cli  # First: quiets TensorFlow's start-up logging.

import os

import tensorflow as tf
from absl import flags

from data import catalog, sources

flags.DEFINE_enum("dataset", "mnist", sorted(catalog.CATALOG), "Catalog dataset to export.")
flags.DEFINE_string("data_dir", None, "Folder holding the dataset's files (else searched for, as train.py does).")
flags.DEFINE_string("output_dir", None, "Folder to write train/ and test/ into.", required=True)
flags.DEFINE_integer("size", 0, "Resize every image to SIZExSIZE (bilinear; 0: as stored).", lower_bound=0)
flags.DEFINE_integer("channels", 0, "3: write grayscale images as RGB (0: as stored).", lower_bound=0, upper_bound=3)
flags.DEFINE_integer("copies", 1, "Write each training image this many times (<index>_<copy>.png): a larger folder "
                     "of the same images.", lower_bound=1)
FLAGS = flags.FLAGS


def folder_name(class_name: str) -> str:
    """A class name as a folder name ("T-shirt/top" -> "T-shirt-top")."""
    return class_name.replace(os.sep, "-")


def main(argv):
    spec = catalog.get_spec(FLAGS.dataset)
    for split, (images, labels) in sources.load_dataset(spec, FLAGS.data_dir).items():
        for class_name in spec.class_names:
            os.makedirs(os.path.join(FLAGS.output_dir, split, folder_name(class_name)), exist_ok=True)
        copies = FLAGS.copies if split == "train" else 1
        for index, (image, label) in enumerate(zip(images, labels)):
            encoded = tf.io.encode_png(exported_pixels(image))
            for copy in range(copies):
                name = f"{index:05d}.png" if copies == 1 else f"{index:05d}_{copy}.png"
                tf.io.write_file(os.path.join(FLAGS.output_dir, split, folder_name(spec.class_names[label]), name),
                                 encoded)
        print(f"{split}: {len(labels) * copies} images written to {os.path.join(FLAGS.output_dir, split)}")


def exported_pixels(image):
    """uint8 [H, W, C] as --size and --channels ask."""
    pixels = image[..., None] if image.ndim == 2 else image
    if FLAGS.size:
        pixels = tf.cast(tf.round(tf.image.resize(pixels, (FLAGS.size, FLAGS.size))), tf.uint8)
    if FLAGS.channels == 3 and pixels.shape[-1] == 1:
        pixels = tf.image.grayscale_to_rgb(pixels)
    return pixels


if __name__ == "__main__":
    cli.run(main)
