"""A finished run's model in deployment formats (scripts/export.py) and scored in their own runtimes
(evaluate.py and predict.py --weights=tflite|tflite_int8|onnx).

Every format is converted from the run's final weights rebuilt in float32 (a run that computed in
bfloat16 exports float32: TFLite and ONNX runtimes on phones and servers lack bfloat16 kernels),
wrapped exactly as the SavedModel is (checkpoints.ServingModule: raw uint8 images in, the
preprocessing inside, class probabilities out), so the input contract is the SavedModel's. It is
written beside the file as `<file>.json`.
"""

import hashlib
import importlib.util
import json
import os
import re
import subprocess
import sys
import time

import numpy as np
import tensorflow as tf
from tensorflow.python.framework.convert_to_constants import convert_variables_to_constants_v2

from data.streaming import pixels_at, stored_batches
from trainer import run_directory
from trainer.checkpoints import ServingModule
from data.files import unreadable_reason
from settings.errors import TapeloopError, described
from trainer.finished_run import final_model

FORMATS = {"tflite": "model.tflite", "tflite_int8": "model_int8.tflite", "onnx": "model.onnx"}
ONNX_OPSET = 17
LATENCY_REPEATS = 200
MAX_IMAGE_SIDE = 2**14  # Larger input sides in a contract are damage, not a model.
TFLITE_IDENTIFIER = b"TFL3"  # Bytes 4-8 of every TFLite flatbuffer.
ONNX_PACKAGES = ("tf2onnx", "onnxruntime")


def default_path(run_dir: str, kind: str) -> str:
    """Where export.py writes a format unless told: RUN/export/<file>."""
    return os.path.join(run_dir, "export", FORMATS[kind])


def export(run_dir: str, kind: str, output: str, calibration_examples: int, data_dir: str | None = None) -> dict:
    """Converts the run's final model to `kind`, writes it to `output` (whole or not at all) and its
    input contract beside it; returns the contract."""
    if kind == "onnx":
        require_onnx_packages("export")
    config, data, model, _ = final_model(run_dir, data_dir, mixed_precision="none")
    try:
        if kind == "onnx":
            converted = to_onnx(ServingModule(model, data.spec, config.standardize), data.spec.stored_shape)
        else:
            calibration = (calibration_images(data.train[0], calibration_examples, config.seed)
                           if kind == "tflite_int8" else None)
            converted = to_tflite(ServingModule(model, data.spec, config.standardize), calibration)
    except Exception as error:  # The converters raise many kinds (ConverterError, ValueError, their own).
        raise conversion_error(kind, error) from None
    contract = input_contract(kind, data.spec, config.standardize, run_dir, calibration_examples)
    contract["file"] = {"bytes": len(converted), "sha256": hashlib.sha256(converted).hexdigest()}
    write_whole(output, converted)
    write_whole(f"{output}.json", json.dumps(contract, indent=1).encode())
    return contract


def calibration_images(images, count: int, seed: int) -> np.ndarray:
    """`count` training images chosen by `seed`, as stored (uint8), for int8 calibration."""
    chosen = np.sort(np.random.default_rng([seed, 7]).permutation(len(images))[:count])
    return np.asarray(pixels_at(images, chosen))


def to_tflite(module: ServingModule, calibration: np.ndarray | None) -> bytes:
    """The uint8 signature, its weights frozen into constants, through TensorFlow's converter: float,
    or (given calibration images) int8 weights and activations by post-training quantization, the
    uint8 input and float probabilities kept."""
    # Frozen first: the converter keeps Keras 3's variables as resources otherwise (READ_VARIABLE ops,
    # which its int8 calibration cannot run).
    frozen = convert_variables_to_constants_v2(module.serve_uint8.get_concrete_function())
    converter = tf.lite.TFLiteConverter.from_concrete_functions([frozen])
    if calibration is not None:
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.representative_dataset = lambda: ([image[np.newaxis]] for image in calibration)
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    return converter.convert()


def to_onnx(module: ServingModule, stored_shape: tuple[int, ...]) -> bytes:
    """The uint8 signature through tf2onnx (input "images", output "probabilities")."""
    import tf2onnx  # Optional: pip install -e '.[onnx]'.

    proto, _ = tf2onnx.convert.from_function(
        module.serve_uint8, input_signature=[tf.TensorSpec([None, *stored_shape], tf.uint8, name="images")],
        opset=ONNX_OPSET)
    return proto.SerializeToString()


def input_contract(kind: str, spec, standardize: bool, run_dir: str, calibration_examples: int) -> dict:
    """What the file takes and gives, as the SavedModel's serving_default does."""
    return {
        "format": kind, "run_dir": os.path.abspath(run_dir),
        "input": {"name": "images", "dtype": "uint8", "shape": [None, *spec.stored_shape], "range": [0, 255],
                  "preprocessing_inside": "pixels / 255" + (f", then (x - {spec.mean:.6g}) / {spec.std:.6g}"
                                                            if standardize else "")},
        "output": {"name": "probabilities", "dtype": "float32", "shape": [None, spec.num_classes],
                   "class_names": list(spec.class_names)},
        **({"quantization": f"int8 weights and activations, calibrated on {calibration_examples} training images"}
           if kind == "tflite_int8" else {}),
    }


def write_whole(path: str, content: bytes) -> None:
    """Writes `content` whole or not at all (run_directory.write_text_atomic), or raises the paragraph."""
    try:
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        run_directory.write_text_atomic(path, content)
    except OSError as error:
        if os.path.exists(f"{path}.partial"):
            os.remove(f"{path}.partial")
        raise TapeloopError(stage="export", problem=f"could not write {path}", expected="room and permission there",
                            found=f"{type(error).__name__}: {error.strerror or error}",
                            fix="free disk space or pass another --output") from None


def conversion_error(kind: str, error: Exception) -> TapeloopError:
    """A converter's failure as the paragraph: the format, the cause, what to do."""
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    lacking = sorted(set(re.findall(r"'(tf\.\w+)' op", str(error))))
    cause = (f"ops it lacks: {', '.join(lacking)}" if lacking else lines[0] if lines else "no message")
    return TapeloopError(
        stage="export", problem=f"the model could not be converted to {kind}",
        expected=f"a model whose every op {kind} supports ({'TFLite builtins' if kind.startswith('tflite') else f'ONNX opset {ONNX_OPSET}'})",
        found=f"{type(error).__name__}: {cause[:300]}",
        fix="try another format (the SavedModel always works), or a model without that op; for a version "
            "mismatch, tapeloop's docs/deployment.md lists the converter versions it was tested with")


def require_onnx_packages(stage_action: str) -> None:
    """Refuses ONNX when its optional packages are not installed, naming them."""
    missing = [name for name in ONNX_PACKAGES if importlib.util.find_spec(name) is None]
    if missing:
        raise TapeloopError(
            stage="export", problem=f"cannot {stage_action} ONNX: {', '.join(missing)} not installed",
            expected="tapeloop's optional ONNX packages (tf2onnx converts, onnxruntime runs)",
            found=f"no module {', '.join(missing)}",
            fix="pip install -e '.[onnx]' (or pip install tf2onnx onnxruntime) in tapeloop's environment")


def converted_model(path: str, kind: str):
    """(uint8 images -> class probabilities, input contract) of a file export.py converted, opened in
    its own runtime (TFLite interpreter, onnxruntime), or the paragraph naming the file and the fix."""
    export_again = (f"run scripts/export.py --run_dir=RUN --format={kind} (or give --converted the {kind} file "
                    "export.py wrote)")
    reason = unreadable_reason(path)
    if reason:
        raise TapeloopError(stage="export", problem=f"no {kind} file at {path}", expected="the file export.py wrote",
                            found=reason, fix=export_again)
    contract = read_contract(path)
    problem = _format_problem(path, kind, contract) or _content_problem(path, kind, contract)
    if problem is None:
        if kind == "onnx":
            require_onnx_packages("run")
        try:
            return runner(path, kind), contract
        except Exception as error:  # The runtimes raise many kinds (ValueError, their own).
            problem = f"its runtime refused it: {described(error, 200)}"
    raise TapeloopError(stage="export", problem=f"{path} is not a usable {kind} model",
                        expected=f"a {kind} file as export.py writes it, beside its input contract", found=problem,
                        fix=export_again)


def _format_problem(path: str, kind: str, contract: dict) -> str | None:
    """Why the file at `path` is not of `kind` by its contract and its first bytes, or None."""
    with open(path, "rb") as stream:
        is_tflite = stream.read(8)[4:8] == TFLITE_IDENTIFIER
    if contract.get("format") != kind:
        return f"its contract {path}.json says format {str(contract.get('format'))[:40]!r}"
    if kind.startswith("tflite") and not is_tflite:
        return f"no TFLite identifier ({TFLITE_IDENTIFIER.decode()}) in its first bytes"
    if kind == "onnx" and is_tflite:
        return "a TFLite file"
    return None


def _content_problem(path: str, kind: str, contract: dict) -> str | None:
    """Why the file's bytes cannot be opened safely, or None: they must be the ones export.py wrote
    (its contract's sha256); a TFLite file without one is first opened in a child process, since the
    interpreter crashes the process on a damaged flatbuffer."""
    written = contract.get("file")
    if isinstance(written, dict) and "sha256" in written:
        with open(path, "rb") as stream:
            found = hashlib.sha256(stream.read()).hexdigest()
        return None if found == written["sha256"] else (
            f"its bytes are not the ones export.py wrote (sha256 {found[:12]}..., its contract says "
            f"{str(written['sha256'])[:12]}...): changed or cut short")
    if kind.startswith("tflite"):
        opened = subprocess.run([sys.executable, "-c", "import sys, tensorflow as tf; "
                                 "tf.lite.Interpreter(model_path=sys.argv[1]).allocate_tensors()", path],
                                capture_output=True, text=True, env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"})
        if opened.returncode != 0:
            last = (opened.stderr.strip().splitlines() or [""])[-1]
            return (f"the TFLite interpreter crashed opening it (signal {-opened.returncode})"
                    if opened.returncode < 0 else f"the TFLite interpreter refused it: {last[:200]}")
    return None


def refuse_another_models_contract(contract: dict, spec, path: str) -> None:
    """Refuses a converted file whose input shape or classes are not those of the run's dataset."""
    wanted = {"shape": [None, *spec.stored_shape], "class_names": list(spec.class_names)}
    found = {"shape": contract["input"]["shape"], "class_names": contract["output"]["class_names"]}
    if found != wanted:
        raise TapeloopError(
            stage="export", problem=f"{path} is not a model of this run's data",
            expected=f"input {wanted['shape']} and the {len(wanted['class_names'])} classes of the run's dataset",
            found=f"input {found['shape']} and {len(found['class_names'])} classes (exported from "
                  f"{contract.get('run_dir')})", fix="export this run with scripts/export.py, or score that file "
                                                      "with the run it came from")


def converted_probabilities(predict, images, batch_size: int) -> np.ndarray:
    """Class probabilities of raw uint8 images through a converted model's `predict`."""
    return np.concatenate([predict(np.asarray(batch, np.uint8)) for batch in stored_batches(images, batch_size)])


def runner(path: str, kind: str):
    """uint8 images -> class probabilities, through the converted file's own runtime."""
    return onnx_runner(path) if kind == "onnx" else tflite_runner(path)


def single_image_milliseconds(predict, image: np.ndarray, repeats: int = LATENCY_REPEATS) -> float:
    """The median time of `predict` on one image (a batch of one), after a few untimed calls."""
    batch = np.asarray(image)[np.newaxis]
    for _ in range(5):
        predict(batch)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        predict(batch)
        times.append(time.perf_counter() - start)
    return 1000 * float(np.median(times))


def read_contract(path: str) -> dict:
    """The input contract export.py wrote beside a converted file, or the paragraph saying it is missing."""
    try:
        with open(f"{path}.json", encoding="utf-8") as stream:
            contract = json.load(stream)
        shape, class_names = contract["input"]["shape"], contract["output"]["class_names"]
        if not (isinstance(shape, list) and isinstance(class_names, list) and len(shape) in (3, 4)
                and all(type(size) is int and 0 < size <= MAX_IMAGE_SIDE for size in shape[1:])):
            raise ValueError(f"input shape {str(shape)[:60]}, {len(class_names)} class names: expected [None, H, W] "
                             f"or [None, H, W, C] of sizes up to {MAX_IMAGE_SIDE}, and a list of names")
        return contract
    except (OSError, ValueError, KeyError, TypeError, RecursionError) as error:
        raise TapeloopError(stage="export", problem=f"no usable input contract beside {path}",
                            expected=f"{path}.json as export.py writes it (input shape, class names)",
                            found=described(error),
                            fix="export the run again with scripts/export.py (it writes both files)") from None


def tflite_runner(path: str):
    """images -> probabilities through the TFLite interpreter (its one input resized to each batch)."""
    interpreter = tf.lite.Interpreter(model_path=path, num_threads=os.cpu_count())
    (given,), (taken,) = interpreter.get_input_details(), interpreter.get_output_details()

    allocated = []  # The input shape the tensors are allocated for (none yet).

    def predict(images: np.ndarray) -> np.ndarray:
        if allocated != [images.shape]:
            interpreter.resize_tensor_input(given["index"], images.shape)
            interpreter.allocate_tensors()
            allocated[:] = [images.shape]
        interpreter.set_tensor(given["index"], images)
        interpreter.invoke()
        return interpreter.get_tensor(taken["index"]).copy()

    return predict


def onnx_runner(path: str):
    """images -> probabilities through onnxruntime."""
    require_onnx_packages("run")
    import onnxruntime

    session = onnxruntime.InferenceSession(path, providers=["CPUExecutionProvider"])
    return lambda images: session.run(["probabilities"], {"images": images})[0]
