"""A multilayer perceptron: flatten, hidden ReLU layers, dropout, linear head."""

import keras


class MLP(keras.Model):
    """Returns logits; `depth` hidden layers of `width` units (256-1024 suits MNIST)."""

    def __init__(self, num_classes: int, width: int, depth: int, dropout: float, **kwargs):
        super().__init__(**kwargs)
        self.flatten = keras.layers.Flatten()
        self.hidden = keras.Sequential([keras.layers.Dense(width, activation="relu") for _ in range(depth)])
        self.dropout = keras.layers.Dropout(dropout)
        self.head = keras.layers.Dense(num_classes)

    def call(self, images, training=False):
        x = self.hidden(self.flatten(images))
        return self.head(self.dropout(x, training=training))


def build(input_shape: tuple[int, int, int], num_classes: int, *, width: int, depth: int,
          dropout: float) -> keras.Model:
    del input_shape  # Dense layers infer their input size on the first call.
    return MLP(num_classes, width=width, depth=depth, dropout=dropout, name="mlp")
