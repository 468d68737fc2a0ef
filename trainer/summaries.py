"""TensorBoard: scalars, text, labelled image grids, the confusion matrix, histograms and hparams.

Writers: RUN/train and RUN/eval for the two phases, and RUN itself for the
run's hparams and final results (the HPARAMS tab compares runs in one logdir).
Figures are drawn with matplotlib (Agg, no display) and logged as PNG images.
"""

import io
import os

import matplotlib

matplotlib.use("Agg")  # Before pyplot: render to memory, never to a window.
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
from tensorboard.plugins.hparams import api as hparams_api  # noqa: E402


class SummaryWriters:
    """One event-file writer per phase, under RUN/train and RUN/eval, and one for RUN itself."""

    def __init__(self, run_dir: str):
        self.train = tf.summary.create_file_writer(os.path.join(run_dir, "train"))
        self.eval = tf.summary.create_file_writer(os.path.join(run_dir, "eval"))
        self.run = tf.summary.create_file_writer(run_dir)

    def close(self) -> None:
        for writer in (self.train, self.eval, self.run):
            writer.close()


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


def write_figure(writer: tf.summary.SummaryWriter, tag: str, figure, step: int) -> None:
    """Logs a matplotlib figure as an image, then closes it."""
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=100)
    plt.close(figure)
    image = tf.image.decode_png(buffer.getvalue(), channels=4)
    with writer.as_default(step=step):
        tf.summary.image(tag, image[tf.newaxis])
    writer.flush()


def labelled_grid(images: np.ndarray, captions: list[str], columns: int = 8):
    """A figure of images in [0, 1] ([N, H, W, 1 or 3]) in a grid, each titled with its caption."""
    rows = max(1, -(-len(images) // columns))
    figure, axes = plt.subplots(rows, columns, figsize=(columns * 1.3, rows * 1.5), squeeze=False)
    for axis in axes.flat:
        axis.axis("off")
    for axis, image, caption in zip(axes.flat, images, captions):
        axis.imshow(np.clip(image.squeeze(-1) if image.shape[-1] == 1 else image, 0, 1), cmap="gray", vmin=0, vmax=1)
        axis.set_title(caption, fontsize=7)
    figure.tight_layout()
    return figure


def confusion_figure(confusion: np.ndarray, class_names: tuple[str, ...]):
    """The confusion matrix (rows: true class, columns: predicted) with counts and class names."""
    size = max(4.0, 0.55 * len(class_names) + 2)
    figure, axis = plt.subplots(figsize=(size, size))
    shown = confusion / np.maximum(confusion.sum(axis=1, keepdims=True), 1)
    axis.imshow(shown, cmap="Blues", vmin=0, vmax=1)
    ticks = np.arange(len(class_names))
    axis.set_xticks(ticks, class_names, rotation=45, ha="right", fontsize=8)
    axis.set_yticks(ticks, class_names, fontsize=8)
    axis.set_xlabel("predicted")
    axis.set_ylabel("true")
    for true, predicted in np.ndindex(confusion.shape):
        axis.text(predicted, true, str(confusion[true, predicted]), ha="center", va="center", fontsize=7,
                  color="white" if shown[true, predicted] > 0.5 else "black")
    figure.tight_layout()
    return figure


def write_histograms(writer: tf.summary.SummaryWriter, tensors: dict[str, tf.Tensor], step: int) -> None:
    """One histogram per named tensor (weights, gradients)."""
    with writer.as_default(step=step):
        for tag, tensor in tensors.items():
            tf.summary.histogram(tag, tensor)
    writer.flush()


def write_hparams(writer: tf.summary.SummaryWriter, hparams: dict, trial_id: str) -> None:
    """Records the run's settings for the HPARAMS tab, which lists them beside the run's scalars
    (the final `results/...` ones among them), one row per run in the logdir."""
    with writer.as_default(step=0):
        hparams_api.hparams(hparams, trial_id=trial_id)
    writer.flush()
