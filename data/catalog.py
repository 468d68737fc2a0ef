"""Named datasets: where their files live, how to verify them, what they contain."""

import dataclasses

import numpy as np

from settings.errors import TapeloopError

IDX_FILES = {
    "train": ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"),
    "test": ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"),
}

@dataclasses.dataclass(frozen=True)
class DatasetSpec:
    """Everything tapeloop knows about one dataset before reading it.

    `files` names each split's files: (images, labels) for the IDX format, the
    pickled batches for `cifar_pickle`. `sha256` holds the digests of the
    canonical downloads (of `archive` when the files come packed in one); they
    are checked on files tapeloop downloads, never on files a user points it at
    (re-compressed copies, such as Debian's, are equally valid).
    """

    name: str
    image_shape: tuple[int, int, int]
    class_names: tuple[str, ...]
    mean: float
    std: float
    files: dict[str, tuple[str, str]] = dataclasses.field(default_factory=lambda: dict(IDX_FILES))
    sha256: dict[str, str] = dataclasses.field(default_factory=dict)
    mirrors: tuple[str, ...] = ()
    keras_cache_entry: str | None = None
    system_folder: str | None = None
    debian_package: str | None = None
    flip_invariant: bool = False  # Whether a mirrored image keeps its class (clothes yes, digits no).
    format: str = "idx"  # idx, cifar_pickle, synthetic, or user (image folders and npz files)
    archive: str | None = None  # The download that unpacks into `files`.

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    @property
    def stored_shape(self) -> tuple[int, ...]:
        """One image as files store it: no channel axis for grayscale."""
        height, width, channels = self.image_shape
        return (height, width) if channels == 1 else self.image_shape


MNIST = DatasetSpec(
    name="mnist",
    image_shape=(28, 28, 1),
    class_names=tuple(str(digit) for digit in range(10)),
    mean=0.1307,
    std=0.3081,
    sha256={
        "train-images-idx3-ubyte.gz": "440fcabf73cc546fa21475e81ea370265605f56be210a4024d2ca8f203523609",
        "train-labels-idx1-ubyte.gz": "3552534a0a558bbed6aed32b30c495cca23d567ec52cac8be1a0730e8010255c",
        "t10k-images-idx3-ubyte.gz": "8d422c7b0a1c1c79245a5bcf07fe86e33eeafee792b84584aec276f5a2dbc4e6",
        "t10k-labels-idx1-ubyte.gz": "f7ae60f92e00ec6debd23a6088c31dbd2371eca3ffa0defaefb259924204aec6",
    },
    mirrors=(
        "https://storage.googleapis.com/cvdf-datasets/mnist/",
        "https://ossci-datasets.s3.amazonaws.com/mnist/",
    ),
    keras_cache_entry="mnist.npz",
    system_folder="mnist",
)

FASHION_MNIST = DatasetSpec(
    name="fashion_mnist",
    image_shape=(28, 28, 1),
    class_names=(
        "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
        "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
    ),
    mean=0.2860,
    std=0.3530,
    sha256={
        "train-images-idx3-ubyte.gz": "3aede38d61863908ad78613f6a32ed271626dd12800ba2636569512369268a84",
        "train-labels-idx1-ubyte.gz": "a04f17134ac03560a47e3764e11b92fc97de4d1bfaf8ba1a3aa29af54cc90845",
        "t10k-images-idx3-ubyte.gz": "346e55b948d973a97e58d2351dde16a484bd415d4595297633bb08f03db6a073",
        "t10k-labels-idx1-ubyte.gz": "67da17c76eaffca5446c3361aaab5c3cd6d1c2608764d35dfb1850b086bf8dd5",
    },
    mirrors=(
        "https://storage.googleapis.com/tensorflow/tf-keras-datasets/",
        "https://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",
    ),
    keras_cache_entry="fashion-mnist",
    system_folder="fashion-mnist",
    debian_package="dataset-fashion-mnist",
    flip_invariant=True,
)

# Generated in memory by data.sources.synthetic_splits: no files, for tests and benchmarks.
SYNTHETIC = DatasetSpec(
    name="synthetic",
    image_shape=(28, 28, 1),
    class_names=tuple(f"pattern_{index}" for index in range(10)),
    mean=0.5,
    std=0.25,
    files={},
    format="synthetic",
)

CIFAR10 = DatasetSpec(
    name="cifar10",
    image_shape=(32, 32, 3),
    class_names=("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"),
    mean=0.4734,
    std=0.2516,
    files={"train": tuple(f"data_batch_{index}" for index in range(1, 6)), "test": ("test_batch",)},
    sha256={"cifar-10-python.tar.gz": "6d958be074577803d12ecdefd02955f39262c83c16fe9348329d7fe0b5c001ce"},
    mirrors=("https://www.cs.toronto.edu/~kriz/",),
    keras_cache_entry="cifar-10-batches-py",
    flip_invariant=True,
    format="cifar_pickle",
    archive="cifar-10-python.tar.gz",
)

CATALOG = {spec.name: spec for spec in (MNIST, FASHION_MNIST, CIFAR10, SYNTHETIC)}


def user_spec(name: str, unit_images: np.ndarray, class_names: tuple[str, ...]) -> DatasetSpec:
    """The spec of a user's dataset, from its training images scaled to [0, 1] ([N, H, W(, C)]).

    Its mean and std standardize the inputs; mirrors are allowed (--augment_flip),
    since tapeloop cannot know whether they change the user's classes.
    """
    height, width = unit_images.shape[1:3]
    channels = unit_images.shape[3] if unit_images.ndim == 4 else 1
    return DatasetSpec(name=name, image_shape=(height, width, channels), class_names=tuple(class_names),
                       mean=float(unit_images.mean()), std=float(unit_images.std()) or 1.0, files={},
                       flip_invariant=True, format="user")


def get_spec(name: str) -> DatasetSpec:
    """Returns the catalog entry for `name`, or a TapeloopError listing the known names."""
    try:
        return CATALOG[name]
    except KeyError:
        raise TapeloopError(
            stage="data",
            problem=f"unknown dataset {name!r}",
            expected=f"one of {', '.join(sorted(CATALOG))}",
            found=repr(name),
            fix="pass --dataset with one of the names above",
        ) from None
