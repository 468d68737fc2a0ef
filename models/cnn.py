"""A VGG-style CNN: stages of conv blocks (convolution, batch norm, ReLU) and a 2x2 max-pool, dropout,
an optional hidden dense layer, a linear head. Each stage's filters, kernel size and conv count, the
padding, batch norm and where the pooling sits are settings, so LeNet-like recipes (the PyTorch MNIST
speed recipe: conv 5x5 to 24, pool, ReLU, conv 3x3 to 32, pool, ReLU, dense 256) are ordinary options."""

import dataclasses

import keras

from models.fused_batchnorm import batch_normalization


@dataclasses.dataclass(frozen=True)
class BlockSettings:
    """What every conv block of the model shares."""

    padding: str = "same"  # "valid": a convolution takes kernel_size - 1 pixels off each side.
    batchnorm: bool = True  # Without it, convolutions have biases.
    fused_batchnorm: bool = False
    pool_first: bool = False  # A stage's last block max-pools before its batch norm and ReLU.


@dataclasses.dataclass(frozen=True)
class Stage:
    filters: int
    convs: int
    kernel_size: int


class ConvBlock(keras.layers.Layer):
    """Convolution (no bias under batch norm: batch norm has one), then max-pooling if `pool`, batch
    norm if the settings have it, ReLU. Max-pooling and ReLU commute, so without batch norm pooling
    first computes the same function with a quarter of the activations."""

    def __init__(self, filters: int, kernel_size: int = 3, settings: BlockSettings = BlockSettings(),
                 pool: bool = False, **kwargs):
        super().__init__(**kwargs)
        self.conv = keras.layers.Conv2D(filters, kernel_size, padding=settings.padding,
                                        use_bias=not settings.batchnorm)
        self.pool = keras.layers.MaxPooling2D() if pool else None
        self.norm = batch_normalization(settings.fused_batchnorm) if settings.batchnorm else None

    def call(self, x, training=False):
        x = self.conv(x)
        if self.pool is not None:
            x = self.pool(x)
        if self.norm is not None:
            x = self.norm(x, training=training)
        return keras.ops.relu(x)


def conv_stage(stage: Stage, settings: BlockSettings = BlockSettings()) -> keras.Sequential:
    """`stage.convs` conv blocks and a 2x2 max-pool (inside the last block under `pool_first`).

    Sub-layers live in keras.Sequential (or attributes), never in a Python list:
    Keras 3 does not track lists for tf.train.Checkpoint.
    """
    blocks = [ConvBlock(stage.filters, stage.kernel_size, settings, pool=settings.pool_first and last)
              for last in (index == stage.convs - 1 for index in range(stage.convs))]
    return keras.Sequential(blocks if settings.pool_first else [*blocks, keras.layers.MaxPooling2D()])


class CNN(keras.Model):
    """Returns logits: the conv `stages`, flattened, a hidden dense layer of `dense_units` with ReLU
    (if any), dropout, the head."""

    def __init__(self, num_classes: int, stages: tuple[Stage, ...], dropout: float, dense_units: int = 0,
                 settings: BlockSettings = BlockSettings(), **kwargs):
        super().__init__(**kwargs)
        self.stages = keras.Sequential([conv_stage(stage, settings) for stage in stages])
        self.flatten = keras.layers.Flatten()
        self.hidden = keras.layers.Dense(dense_units, activation="relu") if dense_units else None
        self.dropout = keras.layers.Dropout(dropout)
        self.head = keras.layers.Dense(num_classes)

    def call(self, images, training=False):
        x = self.flatten(self.stages(images, training=training))
        if self.hidden is not None:
            x = self.hidden(x)
        return self.head(self.dropout(x, training=training))


def per_stage(values: tuple[int, ...], depth: int, default: int) -> tuple[int, ...]:
    """A setting's value for each of `depth` stages from one value for all, one a stage, or none (`default`)."""
    values = tuple(values) or (default,)
    if len(values) == 1:
        return values * depth
    if len(values) != depth:
        raise ValueError(f"{values} needs one value for every stage or one a stage ({depth})")
    return values


def smallest_image_side(depth: int, *, convs_per_stage: tuple[int, ...] = (2,), kernel_sizes: tuple[int, ...] = (),
                        conv_padding: str = "same", **other_settings) -> int:
    """The smallest height and width the cnn takes: each stage halves them, after its valid
    convolutions (if any) take kernel_size - 1 pixels each."""
    del other_settings  # Filters, batch norm and the head do not change the sizes.
    side = 1
    for convs, kernel in zip(reversed(per_stage(convs_per_stage, depth, 2)),
                             reversed(per_stage(kernel_sizes, depth, 3))):
        side = 2 * side + (convs * (kernel - 1) if conv_padding == "valid" else 0)
    return side


def build(input_shape: tuple[int, int, int], num_classes: int, *, width: int, depth: int, dropout: float,
          convs_per_stage: tuple[int, ...] = (), filters_per_stage: tuple[int, ...] = (),
          kernel_sizes: tuple[int, ...] = (), conv_padding: str = "same", batchnorm: bool = True,
          fused_batchnorm: bool = False, pool_first: bool = False, dense_units: int = 0,
          name: str = "cnn") -> keras.Model:
    """Per-stage settings take one value for every stage or one a stage; empty: 2 convs a stage,
    `width` filters doubling at each stage, 3x3 kernels."""
    del input_shape  # Convolutions adapt to any image size.
    filters = tuple(filters_per_stage) or tuple(width * 2**stage for stage in range(depth))
    stages = tuple(Stage(*values) for values in zip(
        per_stage(filters, depth, width), per_stage(convs_per_stage, depth, 2), per_stage(kernel_sizes, depth, 3)))
    return CNN(num_classes, stages, dropout, dense_units,
               BlockSettings(conv_padding, batchnorm, fused_batchnorm, pool_first), name=name)


def build_lean(input_shape: tuple[int, int, int], num_classes: int, **settings) -> keras.Model:
    """The cnn with one conv block a stage (as the keras-io MNIST convnet, with batch norm): about a
    quarter of its FLOPs, since a stage's second convolution, at full resolution, is its costliest."""
    return build(input_shape, num_classes, convs_per_stage=(1,), name="lean_cnn", **settings)


def smallest_lean_image_side(depth: int, **settings) -> int:
    """smallest_image_side for one conv block a stage."""
    return smallest_image_side(depth, convs_per_stage=(1,), **settings)
