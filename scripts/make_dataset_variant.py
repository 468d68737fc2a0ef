"""Writes a catalog dataset with a known fault, as an .npz folder for --dataset=npz, to measure the
diagnosis against the truth: `python scripts/make_dataset_variant.py --dataset=mnist --output_dir=DIR
--flip_labels=0.1` (or --train_examples=6000, --copy_test_to_train=300); and the subsets of a
transfer experiment: `--classes=5,6,7,8,9 --train_per_class=50` keeps five classes (renumbered
0-4 in that order, both splits) and 50 training images of each.

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
flags.DEFINE_list("classes", [], "Keep only these class ids (both splits), renumbered from 0 in this order "
                  "(empty: all).")
flags.DEFINE_integer("train_per_class", 0, "Keep this many training examples of each class, drawn by --seed "
                     "(0: all).", lower_bound=0)
flags.DEFINE_integer("train_examples", 0, "Keep this many training examples, drawn by --seed (0: all).",
                     lower_bound=0)
flags.DEFINE_float("flip_labels", 0.0, "Fraction of the training labels to replace with another class, "
                   "drawn uniformly.", lower_bound=0.0, upper_bound=1.0)
flags.DEFINE_integer("copy_test_to_train", 0, "Test images copied (with their labels) into the training split "
                     "at random places.", lower_bound=0)
flags.DEFINE_integer("seed", 0, "Seed of every draw.")
flags.DEFINE_boolean("overwrite", False, "Replace data.npz and truth.json if the folder holds them (without it, they "
                     "are never replaced: a dataset of yours, or the data a run trained on).")
flags.register_validator("classes", lambda values: all(value.isdigit() for value in values)
                         and len(set(values)) == len(values), "--classes needs distinct class ids, e.g. 5,6,7,8,9")
flags.register_multi_flags_validator(
    ["classes", "dataset"], lambda values: all(int(value) < len(catalog.CATALOG[values["dataset"]].class_names)
                                               for value in values["classes"] if value.isdigit()),
    "--classes names a class id the --dataset does not have (its ids run from 0 to its class count - 1)")
flags.register_multi_flags_validator(
    ["classes", "flip_labels"], lambda values: not values["flip_labels"] or len(values["classes"]) != 1,
    "--flip_labels needs two classes or more to flip a label to another")
FLAGS = flags.FLAGS


def class_subset(split, classes: list[int]):
    """The examples of `classes` only, their labels renumbered to positions in `classes`."""
    images, labels = split
    kept = np.isin(labels, classes)
    renumbered = np.full(max(int(labels.max()), max(classes)) + 1, -1, np.int64)
    renumbered[classes] = np.arange(len(classes))
    return images[kept], renumbered[labels[kept]]


def per_class_sample(split, count: int, rng: np.random.Generator):
    """`count` examples of each class (all of a smaller class), in stored order."""
    images, labels = split
    kept = np.sort(np.concatenate([rng.permutation(np.flatnonzero(labels == label))[:count]
                                   for label in np.unique(labels)]))
    return images[kept], labels[kept]


def variant(train, test, num_classes: int, rng: np.random.Generator) -> tuple[tuple, dict]:
    """The training split with the flags' faults, and the truth about them."""
    images, labels = per_class_sample(train, FLAGS.train_per_class, rng) if FLAGS.train_per_class else train
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
    path = os.path.join(FLAGS.output_dir, "data.npz")
    cli.refuse_to_overwrite([path, os.path.join(FLAGS.output_dir, "truth.json")], FLAGS.overwrite)
    splits = sources.load_dataset(spec, FLAGS.data_dir)
    class_names = spec.class_names
    if FLAGS.classes:
        classes = [int(value) for value in FLAGS.classes]
        splits = {name: class_subset(split, classes) for name, split in splits.items()}
        class_names = tuple(spec.class_names[index] for index in classes)
    (x_train, y_train), truth = variant(splits["train"], splits["test"], len(class_names),
                                        np.random.default_rng(FLAGS.seed))
    os.makedirs(FLAGS.output_dir, exist_ok=True)
    np.savez(path, x_train=x_train, y_train=y_train, x_test=splits["test"][0],
             y_test=splits["test"][1].astype(np.int64), class_names=np.array(class_names))
    with open(os.path.join(FLAGS.output_dir, "truth.json"), "w") as stream:
        json.dump(truth, stream)
    print(f"{path}: {len(y_train)} training images ({len(truth['flipped'])} labels flipped, "
          f"{len(truth['copies'])} test copies), {len(splits['test'][1])} test images")


if __name__ == "__main__":
    cli.run(main)
