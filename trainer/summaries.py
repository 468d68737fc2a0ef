"""TensorBoard writers for the train/ and eval/ phases of a run."""

import os

import tensorflow as tf


class SummaryWriters:
    """One event-file writer per phase, under RUN/train and RUN/eval."""

    def __init__(self, run_dir: str):
        self.train = tf.summary.create_file_writer(os.path.join(run_dir, "train"))
        self.eval = tf.summary.create_file_writer(os.path.join(run_dir, "eval"))

    def close(self) -> None:
        self.train.close()
        self.eval.close()


def write_scalars(writer: tf.summary.SummaryWriter, scalars: dict[str, float], step: int) -> None:
    """Writes each value under its tag at `step` and flushes, so TensorBoard sees it at once."""
    with writer.as_default(step=step):
        for tag, value in scalars.items():
            tf.summary.scalar(tag, value)
    writer.flush()


def write_text(writer: tf.summary.SummaryWriter, tag: str, text: str, step: int) -> None:
    """Writes `text` (markdown; lines kept apart) under `tag` for TensorBoard's Text tab."""
    with writer.as_default(step=step):
        tf.summary.text(tag, "\n\n".join(text.splitlines()))
    writer.flush()
