"""A VGG-style CNN: stages of (conv-BN-ReLU) x 2 + max-pool, dropout, linear head."""

import keras

from models.fused_batchnorm import batch_normalization


class ConvBNReLU(keras.layers.Layer):
    """3x3 convolution (no bias: batch norm has one), batch norm, ReLU."""

    def __init__(self, filters: int, fused_batchnorm: bool = False, **kwargs):
        super().__init__(**kwargs)
        self.conv = keras.layers.Conv2D(filters, 3, padding="same", use_bias=False)
        self.norm = batch_normalization(fused_batchnorm)

    def call(self, x, training=False):
        return keras.ops.relu(self.norm(self.conv(x), training=training))


def conv_stage(filters: int, convs: int = 2, fused_batchnorm: bool = False) -> keras.Sequential:
    """`convs` conv blocks, then 2x2 max-pooling.

    Sub-layers live in keras.Sequential (or attributes), never in a Python list:
    Keras 3 does not track lists for tf.train.Checkpoint.
    """
    return keras.Sequential([*(ConvBNReLU(filters, fused_batchnorm) for _ in range(convs)),
                             keras.layers.MaxPooling2D()])


class CNN(keras.Model):
    """Returns logits; `depth` stages, stage k of convs_per_stage[k] conv blocks, `width` filters in
    the first, doubling at each stage."""

    def __init__(self, num_classes: int, width: int, depth: int, dropout: float, convs_per_stage: tuple[int, ...],
                 fused_batchnorm: bool = False, **kwargs):
        super().__init__(**kwargs)
        if len(convs_per_stage) != depth:
            raise ValueError(f"convs_per_stage needs {depth} counts, one a stage, not {convs_per_stage}")
        self.stages = keras.Sequential([conv_stage(width * 2**stage, convs, fused_batchnorm)
                                        for stage, convs in enumerate(convs_per_stage)])
        self.flatten = keras.layers.Flatten()
        self.dropout = keras.layers.Dropout(dropout)
        self.head = keras.layers.Dense(num_classes)

    def call(self, images, training=False):
        x = self.dropout(self.flatten(self.stages(images, training=training)), training=training)
        return self.head(x)


def smallest_image_side(depth: int) -> int:
    """The smallest height and width the cnn takes: each stage halves them."""
    return 2 ** depth


def build(input_shape: tuple[int, int, int], num_classes: int, *, width: int, depth: int,
          dropout: float, convs_per_stage: tuple[int, ...] = (), fused_batchnorm: bool = False) -> keras.Model:
    """`convs_per_stage`: one count for every stage or one a stage (empty: 2 a stage)."""
    del input_shape  # Convolutions adapt to any image size.
    counts = tuple(convs_per_stage) or (2,)
    return CNN(num_classes, width=width, depth=depth, dropout=dropout,
               convs_per_stage=counts * depth if len(counts) == 1 else counts, fused_batchnorm=fused_batchnorm,
               name="cnn")


def build_lean(input_shape: tuple[int, int, int], num_classes: int, *, width: int, depth: int,
               dropout: float, fused_batchnorm: bool = False) -> keras.Model:
    """The cnn with one conv block a stage (as the keras-io MNIST convnet, with batch norm): about a
    quarter of its FLOPs, since a stage's second convolution, at full resolution, is its costliest."""
    del input_shape
    return CNN(num_classes, width=width, depth=depth, dropout=dropout, convs_per_stage=(1,) * depth,
               fused_batchnorm=fused_batchnorm, name="lean_cnn")
