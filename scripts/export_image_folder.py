"""Writes a catalog dataset as an image folder of PNG files, e.g. to try --dataset=image_folder:
`python scripts/export_image_folder.py --dataset=mnist --output_dir=DIR` makes DIR/train/<class>/
and DIR/test/<class>/, one PNG per image, named by its index in the stored split.
"""

from trainer import cli  # First: quiets TensorFlow's start-up logging.

import os

import tensorflow as tf
from absl import flags

from data import catalog, sources

flags.DEFINE_enum("dataset", "mnist", sorted(catalog.CATALOG), "Catalog dataset to export.")
flags.DEFINE_string("data_dir", None, "Folder holding the dataset's files (else searched for, as train.py does).")
flags.DEFINE_string("output_dir", None, "Folder to write train/ and test/ into.", required=True)
FLAGS = flags.FLAGS


def folder_name(class_name: str) -> str:
    """A class name as a folder name ("T-shirt/top" -> "T-shirt-top")."""
    return class_name.replace(os.sep, "-")


def main(argv):
    spec = catalog.get_spec(FLAGS.dataset)
    for split, (images, labels) in sources.load_dataset(spec, FLAGS.data_dir).items():
        for class_name in spec.class_names:
            os.makedirs(os.path.join(FLAGS.output_dir, split, folder_name(class_name)), exist_ok=True)
        for index, (image, label) in enumerate(zip(images, labels)):
            pixels = image[..., None] if image.ndim == 2 else image
            path = os.path.join(FLAGS.output_dir, split, folder_name(spec.class_names[label]), f"{index:05d}.png")
            tf.io.write_file(path, tf.io.encode_png(pixels))
        print(f"{split}: {len(labels)} images written to {os.path.join(FLAGS.output_dir, split)}")


if __name__ == "__main__":
    cli.run(main)
