"""Writes a catalog dataset with a known fault, as an .npz folder for --dataset=npz, to measure the
diagnosis against the truth: `python scripts/make_dataset_variant.py --dataset=mnist --output_dir=DIR
--flip_labels=0.1` (or --train_examples=6000, --copy_test_to_train=300).

DIR/data.npz holds x_train, y_train, x_test, y_test and class_names; DIR/truth.json says which
training examples had their label flipped (index, stored label, true label) and which are copies
of test images ([train index, test index]), indices into the .npz arrays.
"""

from trainer import cli  # First: quiets TensorFlow's start-up logging.

import json
import os

import numpy as np
from absl import flags

from data import catalog, sources

flags.DEFINE_enum("dataset", "mnist", sorted(catalog.CATALOG), "Catalog dataset to start from.")
flags.DEFINE_string("data_dir", None, "Folder holding the dataset's files (else searched for, as train.py does).")
flags.DEFINE_string("output_dir", None, "Folder to write data.npz and truth.json into.", required=True)
flags.DEFINE_integer("train_examples", 0, "Keep this many training examples, drawn by --seed (0: all).",
                     lower_bound=0)
flags.DEFINE_float("flip_labels", 0.0, "Fraction of the training labels to replace with another class, "
                   "drawn uniformly.", lower_bound=0.0, upper_bound=1.0)
flags.DEFINE_integer("copy_test_to_train", 0, "Test images copied (with their labels) into the training split "
                     "at random places.", lower_bound=0)
flags.DEFINE_integer("seed", 0, "Seed of every draw.")
FLAGS = flags.FLAGS


def variant(train, test, num_classes: int, rng: np.random.Generator) -> tuple[tuple, dict]:
    """The training split with the flags' faults, and the truth about them."""
    images, labels = train
    if FLAGS.train_examples:
        kept = np.sort(rng.permutation(len(labels))[:FLAGS.train_examples])
        images, labels = images[kept], labels[kept]
    labels = labels.astype(np.int64)
    flipped = np.sort(rng.permutation(len(labels))[:int(round(FLAGS.flip_labels * len(labels)))])
    true_labels = labels[flipped].copy()
    labels[flipped] = (true_labels + rng.integers(1, num_classes, len(flipped))) % num_classes
    copied = np.sort(rng.permutation(len(test[1]))[:FLAGS.copy_test_to_train])
    images = np.concatenate([images, test[0][copied]])
    labels = np.concatenate([labels, test[1][copied].astype(np.int64)])
    order = rng.permutation(len(labels))  # The copies land at random places.
    place = np.argsort(order)  # Old index -> new index.
    truth = {"flipped": [[int(place[index]), int(labels[index]), int(true)]
                         for index, true in zip(flipped, true_labels)],
             "copies": [[int(place[len(labels) - len(copied) + offset]), int(test_index)]
                        for offset, test_index in enumerate(copied)]}
    truth["flipped"].sort()
    truth["copies"].sort()
    return (images[order], labels[order]), truth


def main(argv):
    spec = catalog.get_spec(FLAGS.dataset)
    splits = sources.load_dataset(spec, FLAGS.data_dir)
    (x_train, y_train), truth = variant(splits["train"], splits["test"], spec.num_classes,
                                        np.random.default_rng(FLAGS.seed))
    os.makedirs(FLAGS.output_dir, exist_ok=True)
    path = os.path.join(FLAGS.output_dir, "data.npz")
    np.savez(path, x_train=x_train, y_train=y_train, x_test=splits["test"][0],
             y_test=splits["test"][1].astype(np.int64), class_names=np.array(spec.class_names))
    with open(os.path.join(FLAGS.output_dir, "truth.json"), "w") as stream:
        json.dump(truth, stream)
    print(f"{path}: {len(y_train)} training images ({len(truth['flipped'])} labels flipped, "
          f"{len(truth['copies'])} test copies), {len(splits['test'][1])} test images")


if __name__ == "__main__":
    cli.run(main)
