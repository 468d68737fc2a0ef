"""--init_from=RUN[:best|:final]: a run that starts from another run's weights. Variables match
by their place in the model (the path of attribute names tf.train.Checkpoint keys them by, the
same in every process) and by shape; the rest keep their initialization."""

import keras
import tensorflow as tf

from models.registry import head_of
from settings.errors import TapeloopError

WEIGHT_FOLDERS = {"best": "best", "final": "checkpoints"}  # --init_from=RUN:<choice> -> RUN/<folder>.
UNMATCHED_LISTED = 6


def split_reference(value: str) -> tuple[str, str | None]:
    """RUN[:best|:final] -> (RUN, "best", "final" or None for the weights the run scored)."""
    run_dir, _, choice = value.rpartition(":")
    return (run_dir, choice) if run_dir and choice in WEIGHT_FOLDERS else (value, None)


def variables_by_path(root) -> dict[str, tf.Variable]:
    """Every variable reachable from `root`, keyed by its path of attribute names."""
    found, seen, pending = {}, set(), [("", root)]
    while pending:
        path, node = pending.pop(0)
        if id(node) in seen:
            continue
        seen.add(id(node))
        if isinstance(node, (tf.Variable, keras.Variable)):
            found[path] = node
            continue
        for name, child in tf.train.TrackableView(node).children(node).items():
            pending.append((f"{path}/{name}" if path else name, child))
    return found


def weights_by_path(model: keras.Model) -> dict[str, tf.Variable]:
    """The model's float variables by path: weights and batch-norm statistics, not the dropout
    layers' random-number states, which stay this run's own."""
    return {path: variable for path, variable in variables_by_path(model).items()
            if tf.as_dtype(variable.dtype).is_floating}


def copy_matching(model: keras.Model, source: keras.Model, reference: str,
                  same_classes: bool = True) -> tuple[list[str], list[str]]:
    """Assigns `source`'s value to each variable of `model` at the same path with the same shape
    (the head's only if the two runs have the `same_classes`: a head's rows are its classes);
    returns (loaded paths, paths left as initialized, each with both shapes). Refuses a source
    that shares no kernel (vectors such as a 10-class head's bias match by accident)."""
    ours, theirs = weights_by_path(model), weights_by_path(source)
    head_layer = head_of(model)
    head_variables = {id(variable) for variable in head_layer.weights} if head_layer else set()
    head = {path for path, variable in ours.items() if id(variable) in head_variables}
    loaded = [path for path, variable in ours.items()
              if path in theirs and tuple(theirs[path].shape) == tuple(variable.shape)
              and (same_classes or path not in head)]
    if not any(len(ours[path].shape) > 1 for path in loaded):
        raise TapeloopError(
            stage="init_from", problem=f"--init_from={reference} shares no kernel with this model",
            expected="a run whose model has kernels of the same place and shape (the same --model_width; "
                     "--model_depth may differ)",
            found=f"{len(loaded)} of this model's {len(ours)} variables matching, none of them a kernel",
            fix="pass a run with the same --model_width, or leave --init_from out")
    for path in loaded:
        ours[path].assign(theirs[path])
    kept = [f"{path} {list(variable.shape)} (" + (
                "the other run's classes differ)" if path in head and not same_classes
                else f"there {list(theirs[path].shape)})" if path in theirs else "not there)")
            for path, variable in ours.items() if path not in loaded]
    return loaded, kept


def summary(reference: str, weights: str, loaded: list[str], kept: list[str]) -> str:
    """The paragraph a warm start logs: what was loaded, and what kept its initialization."""
    text = (f"Warm start from {weights} (--init_from={reference}): loaded {len(loaded)} of "
            f"{len(loaded) + len(kept)} variables")
    if not kept:
        return text + "."
    listed = "; ".join(kept[:UNMATCHED_LISTED]) + (f"; and {len(kept) - UNMATCHED_LISTED} more"
                                                   if len(kept) > UNMATCHED_LISTED else "")
    return f"{text}; kept their initialization: {listed}."
