"""Loss terms: each a scalar averaged over the batch; the total loss is their sum."""

import tensorflow as tf

TERMS = ("cross_entropy",)


def loss_terms(labels: tf.Tensor, logits: tf.Tensor) -> dict[str, tf.Tensor]:
    """Named loss terms for integer labels and unnormalized logits."""
    cross_entropy = tf.nn.sparse_softmax_cross_entropy_with_logits(labels=labels, logits=logits)
    return {"cross_entropy": tf.reduce_mean(cross_entropy)}


def total_loss(terms: dict[str, tf.Tensor]) -> tf.Tensor:
    return tf.add_n(list(terms.values()))
