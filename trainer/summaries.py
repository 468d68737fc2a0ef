"""TensorBoard: scalars, text, labelled image grids, the confusion matrix, histograms, hparams and
the profiler window.

Writers: RUN/train and RUN/eval for the two phases, and RUN itself for the
run's hparams and final results (the HPARAMS tab compares runs in one logdir).
Figures are drawn with matplotlib (Agg, no display) and logged as PNG images.
`RunSummaries` is what the loop calls: one method per kind of summary.
"""

import dataclasses
import io
import os

import matplotlib

matplotlib.use("Agg")  # Before pyplot: render to memory, never to a window.
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
from tensorboard.plugins.hparams import api as hparams_api  # noqa: E402

from data import pipeline  # noqa: E402
from data.catalog import DatasetSpec  # noqa: E402
from settings.config import TrainConfig  # noqa: E402
from trainer.flags import serialize_config  # noqa: E402

IMAGES_SHOWN = 32


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


CAPTION_PIXELS = 10  # Per cell, the band above each image its caption is written in (mosaic pixels).


def mosaic(images: np.ndarray, columns: int, caption_pixels: int = CAPTION_PIXELS) -> np.ndarray:
    """Images in [0, 1] ([N, H, W, 1 or 3]) tiled row by row into one RGB array, each cell a
    white caption band over its image (clipped to [0, 1]), cells one pixel apart on white."""
    count, height, width = images.shape[:3]
    rows = max(1, -(-count // columns))
    cell_height, cell_width = caption_pixels + height + 1, width + 1
    tiled = np.ones((rows * cell_height, columns * cell_width, 3))
    for index, image in enumerate(np.clip(images, 0.0, 1.0)):
        top, left = (index // columns) * cell_height + caption_pixels, (index % columns) * cell_width
        tiled[top:top + height, left:left + width] = image if image.shape[-1] == 3 else image[..., :1]
    return tiled


def labelled_grid(images: np.ndarray, captions: list[str], columns: int = 8):
    """A figure of images in [0, 1] ([N, H, W, 1 or 3]) in a grid, each titled with its caption:
    one mosaic in one axes (32 small axes and their layout cost about a second a figure)."""
    tiled = mosaic(images, columns)
    rows, height, width = tiled.shape[0] // (CAPTION_PIXELS + images.shape[1] + 1), images.shape[1], images.shape[2]
    figure = plt.figure(figsize=(columns * 1.3, rows * 1.5))
    axis = figure.add_axes([0, 0, 1, 1])
    axis.axis("off")
    axis.imshow(tiled, interpolation="nearest", aspect="auto")
    for index, caption in enumerate(captions[:len(images)]):
        row, column = divmod(index, columns)
        axis.text(column * (width + 1) + width / 2, row * (CAPTION_PIXELS + height + 1) + CAPTION_PIXELS / 2,
                  caption, ha="center", va="center", fontsize=7)
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


def hparams_of(config: TrainConfig) -> dict:
    """The run's flags as hparams values (bool, number or string), the run directory left out."""
    return {name: value if isinstance(value, (bool, int, float, str)) else str(value)
            for name, value in dataclasses.asdict(config).items() if value is not None and name != "run_dir"}


class RunSummaries:
    """Everything a run writes to TensorBoard, one method per kind of summary."""

    def __init__(self, run_dir: str, spec: DatasetSpec, standardize: bool):
        self.writers = SummaryWriters(run_dir)
        self._spec = spec
        self._standardize = standardize

    def run_started(self, config: TrainConfig, report_text: str, step: int) -> None:
        """The pre-flight report and the flags as text, and the flags as the run's hparams."""
        write_text(self.writers.train, "diagnostics", report_text, step)
        write_text(self.writers.train, "flags", serialize_config(config), step)
        write_hparams(self.writers.run, hparams_of(config), trial_id=os.path.basename(os.path.normpath(config.run_dir)))

    def training(self, scalars: dict[str, float], step: int) -> None:
        write_scalars(self.writers.train, scalars, step)

    def inputs(self, images, class_ids, step: int) -> None:
        """The batch about to be trained on, as the model sees it, captioned with its labels."""
        captions = [self._spec.class_names[class_id] for class_id in np.asarray(class_ids)[:IMAGES_SHOWN]]
        write_figure(self.writers.train, "inputs", labelled_grid(self._display(images[:IMAGES_SHOWN]), captions), step)

    def evaluation(self, evaluation, step: int) -> None:
        """A validation pass (an evaluation.Evaluation): its scalars, confusion matrix and mistakes."""
        write_scalars(self.writers.eval, evaluation.scores, step)
        names = self._spec.class_names
        write_figure(self.writers.eval, "confusion_matrix", confusion_figure(evaluation.confusion, names), step)
        if evaluation.misclassified is not None:
            images, true, predicted = evaluation.misclassified
            captions = [f"{names[t]} as {names[p]}" for t, p in zip(true, predicted)]
            write_figure(self.writers.eval, "misclassified", labelled_grid(self._display(images), captions), step)

    def histograms(self, variables, gradients, step: int) -> None:
        """Each trainable variable and its last gradient."""
        write_histograms(self.writers.train, {
            **{f"weights/{variable.path}": variable for variable in variables},
            **{f"gradients/{variable.path}": gradient for variable, gradient in zip(variables, gradients)}}, step)

    def results(self, results: dict, step: int) -> None:
        """The final `results/<split>_<metric>` scalars beside the hparams."""
        write_scalars(self.writers.run, {
            f"results/{split}_{metric}": results[split][metric] for split in ("eval", "test") if results[split]
            for metric in ("accuracy", "balanced_accuracy", "loss")}, step)

    def close(self) -> None:
        self.writers.close()

    def _display(self, images):
        return pipeline.to_display(images, self._spec, self._standardize)


class ProfilerWindow:
    """Traces steps [start, stop) of --profile_steps into the run directory (TensorBoard's Profile tab)."""

    def __init__(self, profile_steps: tuple[int, ...], logdir: str):
        self._window = tuple(profile_steps)
        self._logdir = logdir
        self._active = False

    def update(self, step: int) -> None:
        """Starts the trace when `step` enters the window, stops it once `step` leaves it."""
        inside = bool(self._window) and self._window[0] <= step < self._window[1]
        if inside and not self._active:
            tf.profiler.experimental.start(self._logdir)
            self._active = True
        elif self._active and not inside:
            self.stop()

    def stop(self) -> None:
        if self._active:
            tf.profiler.experimental.stop()
            self._active = False
