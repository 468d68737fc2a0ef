"""The precision a run computes in. `--mixed_precision=auto` is bfloat16 where the hardware does
bfloat16 arithmetic natively and float32 elsewhere: on a CPU without AVX512_BF16 or AMX, oneDNN
emulates bfloat16, and the Fashion-MNIST recipe trained 7.7x slower than in float32 (36 against
276 examples/s on a 2-core AMD EPYC without AVX-512).

On CPUs the deciding fact is oneDNN's instruction-set level: the highest one the processor's
flags (/proc/cpuinfo) support, within the ONEDNN_MAX_CPU_ISA cap if that is set.
"""

import dataclasses
import functools
import os
import platform
from pathlib import Path

from settings.errors import TapeloopError, TapeloopWarning

# oneDNN's levels (dnnl_cpu_isa_t): a level's bit mask contains the masks of the levels it extends,
# and ONEDNN_MAX_CPU_ISA allows a level only if its mask lies within the cap's.
ONEDNN_ISA_MASKS = {
    "sse41": 0x1, "avx": 0x3, "avx2": 0x7, "avx2_vnni": 0xF, "avx2_vnni_2": 0x1F, "avx512_core": 0x27,
    "avx512_core_vnni": 0x67, "avx512_core_bf16": 0xE7, "avx512_core_fp16": 0x1EF, "avx512_core_amx": 0xFEF,
    "avx512_core_amx_fp16": 0x1FEF,
}
ONEDNN_ISA_ALIASES = {"avx10_1_512": "avx512_core_fp16", "avx10_1_512_amx": "avx512_core_amx",
                      "avx10_1_512_amx_fp16": "avx512_core_amx_fp16"}
# The /proc/cpuinfo flags each level adds to those of the levels it extends.
ONEDNN_ISA_FLAGS = {
    "sse41": {"sse4_1"}, "avx": {"avx"}, "avx2": {"avx2", "fma"}, "avx2_vnni": {"avx_vnni"},
    "avx2_vnni_2": {"avx_vnni_int8", "avx_ne_convert"}, "avx512_core": {"avx512f", "avx512bw", "avx512vl", "avx512dq"},
    "avx512_core_vnni": {"avx512_vnni"}, "avx512_core_bf16": {"avx512_bf16"}, "avx512_core_fp16": {"avx512_fp16"},
    "avx512_core_amx": {"amx_tile", "amx_int8", "amx_bf16"}, "avx512_core_amx_fp16": {"amx_fp16"},
}
# Without TF_ENABLE_ONEDNN_OPTS, TensorFlow turns oneDNN on only on CPUs with one of these flags.
TENSORFLOW_ONEDNN_DEFAULT_FLAGS = {"avx512_vnni", "avx512_bf16", "avx_vnni", "amx_tile", "amx_int8", "amx_bf16"}
# avx2_vnni_2 only converts to and from bfloat16; its arithmetic is float32, so it counts as emulated.
NATIVE_BFLOAT16_LEVEL = "avx512_core_bf16"
EMULATED_BFLOAT16_SLOWDOWN = 7.7  # float32 / bfloat16 examples per second, measured as said above.
GPU_BFLOAT16_CAPABILITY = (8, 0)  # NVIDIA Ampere and newer.


@dataclasses.dataclass(frozen=True)
class CpuKind:
    """What decides a CPU's kernels: vendor and oneDNN's instruction-set level (after any cap)."""

    vendor: str
    onednn_isa: str  # "" where no x86 level applies (another architecture).
    onednn_enabled: bool  # TF_ENABLE_ONEDNN_OPTS, or TensorFlow's default for the CPU; bfloat16 needs it.
    onednn_cap: str = ""  # ONEDNN_MAX_CPU_ISA as set, if it is.
    held_below_bfloat16: bool = False  # AVX512_BF16 in the flags, but ONEDNN_MAX_CPU_ISA below its level.

    @property
    def native_bfloat16(self) -> bool:
        native = ONEDNN_ISA_MASKS[NATIVE_BFLOAT16_LEVEL]
        mask = ONEDNN_ISA_MASKS.get(self.onednn_isa, 0)
        return self.onednn_enabled and mask & native == native

    def describe(self) -> str:
        level = self.onednn_isa or f"no x86 level ({platform.machine()})"
        held = f" (held by ONEDNN_MAX_CPU_ISA={self.onednn_cap})" if self.onednn_cap else ""
        return f"{self.vendor} CPU, oneDNN level {level}{held}" + ("" if self.onednn_enabled else ", oneDNN off")


@dataclasses.dataclass(frozen=True)
class Precision:
    """The --mixed_precision value a run computes with ("none", "bfloat16" or "float16") and why."""

    requested: str
    setting: str
    reason: str
    emulated_bfloat16: bool  # bfloat16 asked for explicitly on hardware that emulates it.
    cpu: CpuKind

    def record(self) -> dict:
        """What results.json and the benchmark's JSON keep of the choice."""
        return {"requested": self.requested, "computed_in": self.setting, "reason": self.reason,
                "cpu_vendor": self.cpu.vendor, "onednn_isa": self.cpu.onednn_isa, "onednn_enabled": self.cpu.onednn_enabled,
                "cpu_native_bfloat16": self.cpu.native_bfloat16}

    def emulation_warning(self) -> TapeloopWarning | None:
        """The warning for bfloat16 asked for on hardware that emulates it, or None."""
        if not self.emulated_bfloat16:
            return None
        return TapeloopWarning(
            stage="precision", problem="bfloat16 is emulated on this hardware, so training will be several times "
            f"slower than in float32 (the Fashion-MNIST recipe: {EMULATED_BFLOAT16_SLOWDOWN}x slower on a CPU without "
            "AVX-512)", expected="bfloat16 on a CPU with AVX512_BF16 or AMX, a GPU of compute capability 8.0 or "
            "more, or a TPU", found=self.reason, fix="use --mixed_precision=auto (float32 here) or none")


def onednn_isa(cpu_flags: set[str], max_isa: str | None) -> str:
    """oneDNN's level for a CPU with `cpu_flags`, held to `max_isa` (ONEDNN_MAX_CPU_ISA) if set."""
    cap_name = (max_isa or "").strip().lower()
    cap = ONEDNN_ISA_MASKS.get(ONEDNN_ISA_ALIASES.get(cap_name, cap_name), -1)  # ALL, DEFAULT or unset: none.
    best = ""
    for level, mask in ONEDNN_ISA_MASKS.items():
        needed = set().union(*(ONEDNN_ISA_FLAGS[other] for other, other_mask in ONEDNN_ISA_MASKS.items()
                               if other_mask & mask == other_mask))
        if needed <= cpu_flags and mask & cap == mask and mask > ONEDNN_ISA_MASKS.get(best, 0):
            best = level
    return best


def cpu_kind_from(cpuinfo: str, environ: dict) -> CpuKind:
    """The CpuKind that /proc/cpuinfo's text and the environment describe."""
    fields = {}
    for line in cpuinfo.splitlines():
        key, _, value = line.partition(":")
        fields.setdefault(key.strip(), value.strip())
    cpu_flags = set(fields.get("flags", "").split())
    setting = environ.get("TF_ENABLE_ONEDNN_OPTS")
    enabled = (setting.strip().lower() not in ("0", "false") if setting is not None
               else bool(cpu_flags & TENSORFLOW_ONEDNN_DEFAULT_FLAGS))
    vendor = fields.get("vendor_id", platform.machine() or "unknown")
    cap = environ.get("ONEDNN_MAX_CPU_ISA", "").strip()
    held = CpuKind(vendor, onednn_isa(cpu_flags, cap), enabled, cap)
    unheld = CpuKind(vendor, onednn_isa(cpu_flags, None), enabled)
    return dataclasses.replace(held, held_below_bfloat16=unheld.native_bfloat16 and not held.native_bfloat16)


@functools.cache
def this_cpu() -> CpuKind:
    """This machine's CpuKind (oneDNN reads its cap once per process; so does this)."""
    try:
        cpuinfo = Path("/proc/cpuinfo").read_text()
    except OSError:
        cpuinfo = ""
    return cpu_kind_from(cpuinfo, dict(os.environ))


def gpu_capabilities() -> list[tuple[int, int]]:
    """The compute capability of each visible GPU (listing physical devices starts no runtime)."""
    import tensorflow as tf

    return [tuple(tf.config.experimental.get_device_details(gpu).get("compute_capability", (0, 0)))
            for gpu in tf.config.list_physical_devices("GPU")]


def choose(requested: str, cpu: CpuKind, gpus: list[tuple[int, int]], tpu: bool) -> Precision:
    """The precision for `requested` on this hardware: a TPU, else the GPUs if any, else the CPU."""
    if tpu:
        native, device = True, "TPU"
    elif gpus:
        native = all(capability >= GPU_BFLOAT16_CAPABILITY for capability in gpus)
        device = f"GPU compute capability {min(gpus)[0]}.{min(gpus)[1]}"
    else:
        native, device = cpu.native_bfloat16, cpu.describe()
    hardware = f"{device}: bfloat16 {'native' if native else 'emulated'}"
    if requested == "bfloat16" and not (tpu or gpus) and cpu.held_below_bfloat16:
        raise held_below_bfloat16_error(cpu)
    if requested != "auto":
        return Precision(requested, requested, f"--mixed_precision={requested} ({hardware})",
                         emulated_bfloat16=requested == "bfloat16" and not native, cpu=cpu)
    return Precision(requested, "bfloat16" if native else "none", f"auto chose {'bfloat16' if native else 'float32'} "
                     f"({hardware})", emulated_bfloat16=False, cpu=cpu)


def held_below_bfloat16_error(cpu: CpuKind) -> TapeloopError:
    """TensorFlow sends bfloat16 to oneDNN by the CPU's own flags; a cap below AVX512_BF16 leaves oneDNN no
    bfloat16 kernels, and the first convolution would fail (a CPU that lacks the flags emulates it instead)."""
    return TapeloopError(
        stage="precision", problem="--mixed_precision=bfloat16 cannot run with oneDNN held below its bfloat16 "
        "level: TensorFlow hands bfloat16 to oneDNN because this CPU has AVX512_BF16, and oneDNN then has no "
        "bfloat16 kernel", expected=f"ONEDNN_MAX_CPU_ISA unset or at {NATIVE_BFLOAT16_LEVEL.upper()} or above",
        found=cpu.describe(),
        fix="unset ONEDNN_MAX_CPU_ISA, or use --mixed_precision=auto (float32 under this hold) or none")


def for_run(requested: str, strategy_name: str) -> Precision:
    """`choose` on this machine."""
    tpu = strategy_name == "tpu"
    return choose(requested, this_cpu(), [] if tpu else gpu_capabilities(), tpu)
