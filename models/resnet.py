"""A pre-activation ResNet for small images (He et al. 2016, "Identity Mappings in Deep Residual
Networks": the CIFAR family): a 3x3 stem, three stages of basic blocks at `width`, 2x and 4x
`width` filters (the second and third halve the resolution), then batch norm, ReLU, global
average pooling, dropout and a linear head. Depth 6n + 2 (20, 32, 56, 110): n blocks a stage,
two convolutions a block, plus the stem and the head. Images of STRIDE_2_STEM_FROM pixels and
more get a stride-2 stem, so that a 64x64 image costs about what a 32x32 one does."""

import keras

from models.fused_batchnorm import batch_normalization

STRIDE_2_STEM_FROM = 64
DEPTHS_EXPECTED = "6n + 2 with n >= 1: 8, 14, 20, 32, 44, 56, 110"


def is_valid_depth(depth: int) -> bool:
    return depth >= 8 and (depth - 2) % 6 == 0


def conv3x3(filters: int, stride: int = 1) -> keras.layers.Conv2D:
    return keras.layers.Conv2D(filters, 3, strides=stride, padding="same", use_bias=False,
                               kernel_initializer="he_normal")


class PreActivationBlock(keras.layers.Layer):
    """BN-ReLU-conv3x3-BN-ReLU-conv3x3, added to the block's input. The first block of a stage
    that changes the shape adds a strided 1x1 projection of the pre-activated input instead."""

    def __init__(self, filters: int, stride: int, projects: bool, fused_batchnorm: bool = False, **kwargs):
        super().__init__(**kwargs)
        self.norm1 = batch_normalization(fused_batchnorm)
        self.conv1 = conv3x3(filters, stride)
        self.norm2 = batch_normalization(fused_batchnorm)
        self.conv2 = conv3x3(filters)
        self.projection = (keras.layers.Conv2D(filters, 1, strides=stride, use_bias=False,
                                               kernel_initializer="he_normal") if projects else None)

    def call(self, x, training=False):
        activated = keras.ops.relu(self.norm1(x, training=training))
        shortcut = self.projection(activated) if self.projection is not None else x
        residual = self.conv2(keras.ops.relu(self.norm2(self.conv1(activated), training=training)))
        return residual + shortcut


def stage_blocks(width: int, blocks_per_stage: int, fused_batchnorm: bool) -> keras.Sequential:
    """The three stages' blocks in order (a Sequential, not a Python list: see models/cnn.py)."""
    return keras.Sequential([
        PreActivationBlock(width * 2**stage, stride=2 if stage and not block else 1, projects=stage > 0 and not block,
                           fused_batchnorm=fused_batchnorm)
        for stage in range(3) for block in range(blocks_per_stage)])


class ResNet(keras.Model):
    """Returns logits; `depth` = 6n + 2 layers with weights, `width` filters in the first stage."""

    def __init__(self, num_classes: int, width: int, depth: int, dropout: float, stem_stride: int,
                 fused_batchnorm: bool = False, **kwargs):
        super().__init__(**kwargs)
        self.stem = conv3x3(width, stem_stride)
        self.blocks = stage_blocks(width, (depth - 2) // 6, fused_batchnorm)
        self.norm = batch_normalization(fused_batchnorm)
        self.pool = keras.layers.GlobalAveragePooling2D()
        self.dropout = keras.layers.Dropout(dropout)
        self.head = keras.layers.Dense(num_classes)

    def call(self, images, training=False):
        x = self.blocks(self.stem(images), training=training)
        x = self.pool(keras.ops.relu(self.norm(x, training=training)))
        return self.head(self.dropout(x, training=training))


def build(input_shape: tuple[int, int, int], num_classes: int, *, width: int, depth: int,
          dropout: float, fused_batchnorm: bool = False) -> keras.Model:
    if not is_valid_depth(depth):
        raise ValueError(f"a pre-activation ResNet's depth is {DEPTHS_EXPECTED}, not {depth}")
    stem_stride = 2 if min(input_shape[:2]) >= STRIDE_2_STEM_FROM else 1
    return ResNet(num_classes, width=width, depth=depth, dropout=dropout, stem_stride=stem_stride,
                  fused_batchnorm=fused_batchnorm, name="resnet")
