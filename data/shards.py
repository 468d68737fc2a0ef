"""TFRecord shards of an image folder (scripts/make_shards.py) and their description.

A shard folder holds, per split, `<split>-KKKKK-of-NNNNN.tfrecord` files of tf.train.Example
records ({"image": the file's encoded bytes, as they were; "label": class id}), in a fixed
permutation of the image folder's listing (so every shard mixes the classes), and `shards.json`: the class names, and per split its shards (file,
first example, examples, bytes), its class counts and image shape statistics. `index-<split>.npz`
holds each example's label, decoded height and width and source path, in record order.

Shards are written in parallel, each to a temporary name then renamed, with a sidecar that names
the files it holds; a rerun keeps every shard whose sidecar matches its files (paths, sizes and
modification times) and writes the rest. The description is written last, so a folder with
`shards.json` is complete.

The output folder may hold other files: make_shards.py replaces or deletes only files it can show it
wrote (shards named in its own shards.json, or with its sidecar beside them), and refuses to write
over any other file, to write inside the image folder it reads, or to take a folder without images
as a class.
"""

import concurrent.futures
import contextlib
import dataclasses
import hashlib
import json
import os
import re
import zipfile
from pathlib import Path

import numpy as np
import tensorflow as tf
from absl import logging

from data import image_folder
from data.files import unreadable_reason
from settings import errors
from settings.errors import TapeloopError

DESCRIPTION = "shards.json"
ORDER_SEED = 0  # The fixed order of the records: a permutation of the folder's listing.
FORMAT = "tapeloop-shards-1"
INDEX_ARRAYS = ("labels", "heights", "widths", "channels", "paths")  # Per example, in record order.
SHARD_NAME = re.compile(r"(train|test)-\d{5}-of-\d{5}\.tfrecord")
SIDECAR_SUFFIX = ".done.npz"
FEATURES = {"image": tf.io.FixedLenFeature([], tf.string), "label": tf.io.FixedLenFeature([], tf.int64)}


@dataclasses.dataclass(frozen=True)
class ShardPlan:
    """One shard to write: its file and the (path, class id) of the images it holds."""

    path: Path
    entries: tuple[tuple[Path, int], ...]

    @property
    def sidecar(self) -> Path:
        return self.path.with_name(self.path.name + SIDECAR_SUFFIX)

    def key(self) -> str:
        """Names exactly these files (paths, classes, sizes, modification times)."""
        digest = hashlib.sha256()
        for path, class_id in self.entries:
            status = os.stat(path) if unreadable_reason(path) is None else None
            digest.update(os.fsencode(f"{os.path.abspath(path)}\0{class_id}\0"
                                      f"{status.st_size if status else -1}\0{status.st_mtime_ns if status else -1}\n"))
        return digest.hexdigest()


def plan_shards(files: list[tuple[Path, int]], split: str, output: Path, shard_bytes: int) -> list[ShardPlan]:
    """Cuts a split's files, in order, into shards of about `shard_bytes` of encoded images."""
    groups, current, size = [], [], 0
    for path, class_id in files:
        current.append((path, class_id))
        size += os.stat(path).st_size if unreadable_reason(path) is None else 0
        if size >= shard_bytes:
            groups.append(current)
            current, size = [], 0
    if current or not groups:
        groups.append(current)
    return [ShardPlan(output / f"{split}-{number:05d}-of-{len(groups):05d}.tfrecord", tuple(group))
            for number, group in enumerate(groups)]


def write_shard(plan: ShardPlan) -> dict:
    """Writes one shard (unless a finished one for the same files is there) and returns what it
    holds: labels, heights, widths, paths of its records and "path (reason)" of each file left out."""
    key = plan.key()
    finished = _read_sidecar(plan.sidecar, key) if plan.path.exists() else None
    if finished is not None:
        return finished | {"reused": True}
    partial = plan.path.with_name(f".{plan.path.name}.partial")
    kept = {"labels": [], "heights": [], "widths": [], "channels": [], "paths": []}
    bad = []
    with tf.io.TFRecordWriter(str(partial)) as writer:
        for path, class_id in plan.entries:
            encoded, shape, reason = image_folder.probe_image(path)
            if reason:
                bad.append(f"{os.fsdecode(path)} ({reason})")
                continue
            writer.write(example_bytes(encoded.numpy(), class_id))
            for name, value in zip(kept, (class_id, *shape, os.fsdecode(path))):
                kept[name].append(value)
    held = {"labels": np.asarray(kept["labels"], np.int32), "heights": np.asarray(kept["heights"], np.int32),
            "widths": np.asarray(kept["widths"], np.int32), "channels": np.asarray(kept["channels"], np.int32),
            "paths": np.asarray(kept["paths"], dtype=str),
            "bad": np.asarray(bad, dtype=str)}
    np.savez(partial_npz(plan.sidecar), key=np.asarray(key), **held)
    # The sidecar is whole before the shard takes its name: a shard of this tool's is never without one.
    os.replace(partial, plan.path)
    os.replace(partial_npz(plan.sidecar), plan.sidecar)
    return held | {"reused": False}


def example_bytes(encoded: bytes, class_id: int) -> bytes:
    """One record: the encoded image as it was stored, and its class id."""
    return tf.train.Example(features=tf.train.Features(feature={
        "image": tf.train.Feature(bytes_list=tf.train.BytesList(value=[encoded])),
        "label": tf.train.Feature(int64_list=tf.train.Int64List(value=[class_id]))})).SerializeToString()


def _read_sidecar(path: Path, key: str) -> dict | None:
    try:
        with np.load(path, allow_pickle=False) as sidecar:
            if str(sidecar["key"]) != key:
                return None
            return {name: sidecar[name] for name in (*INDEX_ARRAYS, "bad")}
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile):  # Unreadable: the shard is written again.
        return None


def partial_npz(path: Path) -> Path:
    """The temporary name an npz file is written under before it takes its own."""
    return path.with_name(f".{path.name}.partial.npz")


def save_npz_whole(path: Path, **arrays) -> None:
    """np.savez to a temporary name, then renamed: a reader finds the whole file or none."""
    np.savez(partial_npz(path), **arrays)
    os.replace(partial_npz(path), path)


def make_shards(data_dir: Path, output: Path, shard_mb: float, test_split: float, skip_bad_images: bool,
                workers: int) -> dict:
    """Writes the shards of the image folder `data_dir` into `output` and returns the description."""
    refuse_output_folder(data_dir, output)
    class_names, files = image_folder.split_files(data_dir, test_split)
    refuse_classes_without_images(data_dir, class_names, files)
    files = {split: [entries[index] for index in np.random.default_rng(ORDER_SEED).permutation(len(entries))]
             for split, entries in files.items()}  # Shards of mixed classes: a listing is sorted by class.
    plans = {split: plan_shards(entries, split, output, int(shard_mb * 2**20)) for split, entries in files.items()}
    every_plan = [plan for split_plans in plans.values() for plan in split_plans]
    owned = files_written_here(output)
    refuse_to_replace_others(output, every_plan, owned)
    with _write_failures_named(output):
        output.mkdir(parents=True, exist_ok=True)
        (output / DESCRIPTION).unlink(missing_ok=True)  # Incomplete until written again at the end.
        with concurrent.futures.ThreadPoolExecutor(max(1, workers)) as pool:  # Decoding releases the GIL.
            written = {split: list(pool.map(write_shard, split_plans)) for split, split_plans in plans.items()}
        _remove_stale_shards(output, every_plan, owned)
        reused = sum(shard["reused"] for shards in written.values() for shard in shards)
        logging.info("Shards: %d written, %d kept from an earlier run.",
                     sum(map(len, written.values())) - reused, reused)
        bad = [str(path) for shards in written.values() for shard in shards for path in shard["bad"]]
        image_folder.report_unreadable(bad, sum(map(len, files.values())), skip_bad_images)
        description = {"format": FORMAT, "source": str(data_dir.resolve()), "class_names": list(class_names),
                       "splits": {split: _describe_split(output, split, plans[split], written[split],
                                                         len(class_names)) for split in plans}}
        partial = output / f".{DESCRIPTION}.partial"
        partial.write_text(json.dumps(description, indent=1))
        os.replace(partial, output / DESCRIPTION)
    return description


@contextlib.contextmanager
def _write_failures_named(output: Path):
    """A write that fails (disk full, no permission, a name too long) as the paragraph: the finished
    shards stay, so a rerun resumes."""
    try:
        yield
    except (OSError, tf.errors.OpError) as error:
        raise TapeloopError(
            stage="output", problem=f"could not write the shards into {output}",
            expected="room, permission and a valid path there", found=errors.described(error, 200),
            fix="free disk space or pass another --output_dir, then rerun: finished shards are kept") from None


def refuse_output_folder(data_dir: Path, output: Path) -> None:
    """Refuses an --output_dir that is a file, or that is inside the image folder (a rerun would read
    it as a class) or holds it."""
    if output.exists() and not output.is_dir():
        raise TapeloopError(stage="flags", problem=f"--output_dir={output} is a file",
                            expected="a folder for the shards (made if missing)", found="a file, left as it is",
                            fix="pass a folder path, e.g. --output_dir=shards")
    source, target = data_dir.resolve(), output.resolve()
    if target == source or source in target.parents or target in source.parents:
        raise TapeloopError(
            stage="flags", problem=f"--output_dir={output} and --data_dir={data_dir} overlap",
            expected="an output folder outside the image folder (inside it, a rerun would read the shard folder "
                     "as one more class and shift every class id after it)",
            found=f"{target} {'is' if target == source else 'inside' if source in target.parents else 'holds'} "
                  f"{source}", fix="pass an --output_dir beside the image folder, e.g. --output_dir=shards")


def refuse_classes_without_images(data_dir: Path, class_names: tuple[str, ...], files: dict) -> None:
    """Refuses class folders that hold no image file in either split: the shards would bake in a class
    no example has, and the ids of every class after it."""
    counts = np.bincount([class_id for entries in files.values() for _, class_id in entries],
                         minlength=len(class_names))
    empty = [name for name, count in zip(class_names, counts) if count == 0]
    if empty:
        raise TapeloopError(
            stage="data", problem=f"{len(empty)} class folder(s) of {data_dir} hold no image files",
            expected=f"image files ({', '.join(image_folder.IMAGE_SUFFIXES)}) in every class folder",
            found=f"no images in: {', '.join(empty[:10])}",
            fix="remove those folders from the image folder (or add their images), then run make_shards.py again")


def files_written_here(output: Path) -> set[str]:
    """The names of the files in `output` that make_shards.py can show it wrote: the shards its own
    shards.json names, each shard beside its sidecar (or the sidecar's temporary name) and the
    sidecar, and, beside any of these, the description and the indexes."""
    if not output.is_dir():
        return set()
    present = {path.name for path in output.iterdir()}
    owned = set(_described_shards(output / DESCRIPTION))
    owned |= {DESCRIPTION} if owned else set()
    for name in present:  # A sidecar, or its temporary name (killed between the two renames), names its shard.
        shard = name.removeprefix(".").removesuffix(".partial.npz").removesuffix(SIDECAR_SUFFIX)
        if shard != name and SHARD_NAME.fullmatch(shard):
            owned |= {name, shard}
    owned |= {f"index-{split}.npz" for split in ("train", "test")} if owned else set()
    return owned & present


def _described_shards(path: Path) -> list[str]:
    """The shard files a shards.json of this tool's format names (none for any other file)."""
    try:
        description = json.loads(path.read_text())
        if description.get("format") != FORMAT:
            return []
        return [shard["file"] for split in description["splits"].values() for shard in split["shards"]
                if SHARD_NAME.fullmatch(str(shard["file"]))]
    except (OSError, ValueError, KeyError, TypeError, AttributeError, RecursionError):  # Nested past parsing.
        return []


def refuse_to_replace_others(output: Path, plans: list[ShardPlan], owned: set[str]) -> None:
    """Refuses to write where a file this tool did not write has one of the names it writes."""
    names = ({plan.path.name for plan in plans} | {plan.sidecar.name for plan in plans}
             | {DESCRIPTION, "index-train.npz", "index-test.npz"})
    others = sorted(name for name in names if os.path.lexists(output / name) and name not in owned)
    if others:
        raise TapeloopError(
            stage="output", problem=f"{output} holds {len(others)} file(s) that make_shards.py did not write, under "
            "names it writes", expected="an empty folder, or one make_shards.py wrote (its shards.json and .done.npz "
            "sidecars show which files are its own)", found=", ".join(others[:5]) + (" ..." if len(others) > 5 else ""),
            fix="pass a new --output_dir, or move those files away; nothing was written")


def _remove_stale_shards(output: Path, plans: list[ShardPlan], owned: set[str]) -> None:
    """Deletes the shards (and sidecars) this tool wrote for an earlier plan that this one does not name."""
    current = {plan.path.name for plan in plans} | {plan.sidecar.name for plan in plans}
    for name in owned - current:
        if SHARD_NAME.fullmatch(name.removesuffix(SIDECAR_SUFFIX)):
            (output / name).unlink(missing_ok=True)


def _describe_split(output: Path, split: str, plans: list[ShardPlan], written: list[dict], num_classes: int) -> dict:
    """The split's entry in shards.json; also writes its index-<split>.npz."""
    shards, first = [], 0
    for plan, shard in zip(plans, written):
        shards.append({"file": plan.path.name, "first": first, "examples": len(shard["labels"]),
                       "bytes": plan.path.stat().st_size})
        first += len(shard["labels"])
    joined = {name: np.concatenate([shard[name] for shard in written]) for name in INDEX_ARRAYS}
    save_npz_whole(output / f"index-{split}.npz", **joined)
    if first == 0:
        raise TapeloopError(
            stage="data", problem=f"the {split} split has no readable images", expected="image files that decode",
            found=f"{sum(len(plan.entries) for plan in plans)} files, none readable", fix="check the folder")
    heights, widths = joined["heights"], joined["widths"]
    return {"examples": first, "shards": shards,
            "class_counts": np.bincount(joined["labels"], minlength=num_classes).tolist(),
            "image_height": _statistics(heights), "image_width": _statistics(widths),
            "image_channels": {str(count): int(np.sum(joined["channels"] == count)) for count in
                               np.unique(joined["channels"])}}


def _statistics(values: np.ndarray) -> dict:
    return {"min": int(values.min()), "median": float(np.median(values)), "max": int(values.max())}
