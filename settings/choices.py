"""The named values settings take, shared by the code that acts on them."""

# The catalog's datasets (data/catalog.py), then the formats of a user's own files.
CATALOG_DATASETS = ("mnist", "fashion_mnist", "cifar10", "synthetic")
USER_DATASETS = ("image_folder", "npz", "tfrecord")
DATASETS = (*CATALOG_DATASETS, *USER_DATASETS)
LOSS_TERMS = ("cross_entropy", "binary_cross_entropy", "focal", "l2")
CHECK_LEVELS = ("off", "standard", "full")
OPTIMIZERS = ("adam", "adamw", "sgd")
LR_SCHEDULES = ("constant", "step", "exponential", "cosine", "onecycle", "plateau")
EVAL_METRICS = ("accuracy", "balanced_accuracy", "loss")
STRATEGIES = ("default", "one_device", "mirrored", "multi_worker", "tpu")
