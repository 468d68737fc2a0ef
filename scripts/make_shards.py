"""Writes an image folder as TFRecord shards for --dataset=tfrecord, which streams them (data larger than memory):
`python scripts/make_shards.py --data_dir=FOLDER --output_dir=DIR` (FOLDER/<class>/<image>, or FOLDER/train/
and FOLDER/test/ with class folders; the images keep their encoding). A rerun keeps the finished shards.
"""

from trainer import cli  # First: quiets TensorFlow's start-up logging.

import os
from pathlib import Path

from absl import flags

from data import shards

flags.DEFINE_string("data_dir", None, "The image folder (class folders, or train/ and test/ with class folders).",
                    required=True)
flags.DEFINE_string("output_dir", None, "Folder to write the shards, shards.json and index-<split>.npz into.",
                    required=True)
flags.DEFINE_float("shard_size_mb", 64.0, "Encoded images per shard, in MiB (TensorFlow's guide: shards of "
                   "10-200 MiB, and several per reader).", lower_bound=0.001)
flags.DEFINE_float("test_split", 0.2, "A folder without train/ and test/: the fraction held out as the test split "
                   "(fixed, as --dataset=image_folder holds it out).", lower_bound=0.01, upper_bound=0.9)
flags.DEFINE_boolean("skip_bad_images", False, "Leave out (and list) files that cannot be decoded, instead of stopping.")
flags.DEFINE_integer("workers", 0, "Shards written at once (0: one per core).", lower_bound=0)
FLAGS = flags.FLAGS


def main(argv):
    description = shards.make_shards(Path(FLAGS.data_dir).expanduser(), Path(FLAGS.output_dir).expanduser(),
                                     FLAGS.shard_size_mb, FLAGS.test_split, FLAGS.skip_bad_images,
                                     FLAGS.workers or os.cpu_count() or 1)
    for split, entry in description["splits"].items():
        print(f"{split}: {entry['examples']} images in {len(entry['shards'])} shards "
              f"({sum(shard['bytes'] for shard in entry['shards']) / 2**20:.1f} MiB), height "
              f"{entry['image_height']['min']}-{entry['image_height']['max']}, width "
              f"{entry['image_width']['min']}-{entry['image_width']['max']}")
    print(f"Train with --dataset=tfrecord --data_dir={FLAGS.output_dir} --image_size=H,W.")


if __name__ == "__main__":
    cli.run(main)
