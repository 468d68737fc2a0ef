"""--mixed_precision=auto's choice from given CPU features and devices, and the emulation warning."""

import pytest

from tests.helpers import make_config
from trainer import precision, run_inputs
from settings.errors import TapeloopError

AVX2_EPYC = ("vendor_id\t: AuthenticAMD\nflags\t\t: fpu sse4_1 sse4_2 avx f16c fma avx2 bmi2 sha_ni\n"
             "vendor_id\t: AuthenticAMD\n")
AVX512_EPYC = ("vendor_id\t: AuthenticAMD\nflags\t\t: sse4_1 avx fma avx2 avx512f avx512dq avx512cd avx512bw "
               "avx512vl avx512_bf16 avx512_vnni avx512_vbmi2 avx512_bitalg\n")
AMX_XEON = ("vendor_id\t: GenuineIntel\nflags\t\t: sse4_1 avx fma avx2 avx512f avx512dq avx512bw avx512vl "
            "avx512_vnni avx512_bf16 avx512_fp16 amx_bf16 amx_tile amx_int8 avx_vnni\n")
AVX512_WITHOUT_BF16 = "vendor_id\t: GenuineIntel\nflags\t\t: sse4_1 avx fma avx2 avx512f avx512dq avx512bw avx512vl\n"


def kind(cpuinfo: str, **environ: str) -> precision.CpuKind:
    return precision.cpu_kind_from(cpuinfo, environ)


@pytest.mark.parametrize("cpuinfo, environ, level", [
    (AVX2_EPYC, {}, "avx2"),
    (AVX512_EPYC, {}, "avx512_core_bf16"),
    (AMX_XEON, {}, "avx512_core_amx"),
    (AVX512_WITHOUT_BF16, {}, "avx512_core"),
    (AVX512_EPYC, {"ONEDNN_MAX_CPU_ISA": "AVX2"}, "avx2"),
    (AMX_XEON, {"ONEDNN_MAX_CPU_ISA": "AVX512_CORE_BF16"}, "avx512_core_bf16"),
    (AMX_XEON, {"ONEDNN_MAX_CPU_ISA": "AVX10_1_512"}, "avx512_core_fp16"),  # oneDNN's other name for it.
    (AMX_XEON, {"ONEDNN_MAX_CPU_ISA": "AVX2_VNNI"}, "avx2_vnni"),
    (AVX2_EPYC, {"ONEDNN_MAX_CPU_ISA": "ALL"}, "avx2"),
    (AVX2_EPYC, {"ONEDNN_MAX_CPU_ISA": "AVX512_CORE_AMX"}, "avx2"),  # A cap adds nothing the CPU lacks.
    ("vendor_id\t: ARM\n", {}, ""),
])
def test_the_onednn_level_is_the_highest_the_flags_support_within_the_cap(cpuinfo, environ, level):
    assert kind(cpuinfo, **environ).onednn_isa == level


def test_the_vendor_is_read_from_cpuinfo():
    assert kind(AVX2_EPYC).vendor == "AuthenticAMD" and kind(AMX_XEON).vendor == "GenuineIntel"


@pytest.mark.parametrize("cpuinfo, environ, enabled", [
    (AVX2_EPYC, {}, False), (AVX512_WITHOUT_BF16, {}, False), (AVX512_EPYC, {}, True), (AMX_XEON, {}, True),
    (AVX2_EPYC, {"TF_ENABLE_ONEDNN_OPTS": "1"}, True), (AVX512_EPYC, {"TF_ENABLE_ONEDNN_OPTS": "false"}, False),
])
def test_onednn_is_on_as_tensorflow_decides_it_from_the_cpu_flags_unless_the_environment_says(
        cpuinfo, environ, enabled):
    cpu = kind(cpuinfo, **environ)
    assert cpu.onednn_enabled is enabled and cpu.describe().endswith("oneDNN off") is not enabled


def test_the_scripts_and_tests_run_with_onednn_on():
    from tensorflow.python.util import _pywrap_util_port  # What TensorFlow itself decided at start-up.

    assert _pywrap_util_port.IsMklEnabled() and precision.this_cpu().onednn_enabled


@pytest.mark.parametrize("cpuinfo, environ, native", [
    (AVX2_EPYC, {}, False), (AVX512_WITHOUT_BF16, {}, False), (AVX512_EPYC, {}, True), (AMX_XEON, {}, True),
    (AVX512_EPYC, {"ONEDNN_MAX_CPU_ISA": "AVX512_CORE_VNNI"}, False),
    (AVX512_EPYC, {"TF_ENABLE_ONEDNN_OPTS": "0"}, False),  # Without oneDNN, Eigen emulates bfloat16.
])
def test_bfloat16_is_native_from_avx512_bf16_up_with_onednn_on(cpuinfo, environ, native):
    assert kind(cpuinfo, **environ).native_bfloat16 is native


@pytest.mark.parametrize("cpuinfo, gpus, tpu, chosen", [
    (AVX512_EPYC, [], False, "bfloat16"),
    (AMX_XEON, [], False, "bfloat16"),
    (AVX2_EPYC, [], False, "none"),
    (AVX512_WITHOUT_BF16, [], False, "none"),
    (AVX2_EPYC, [(8, 6)], False, "bfloat16"),  # The GPU computes, whatever the CPU.
    (AVX512_EPYC, [(7, 5)], False, "none"),
    (AVX2_EPYC, [(9, 0), (7, 0)], False, "none"),  # Every replica must run it natively.
    (AVX2_EPYC, [], True, "bfloat16"),
])
def test_auto_chooses_bfloat16_only_where_the_computing_device_runs_it_natively(cpuinfo, gpus, tpu, chosen):
    choice = precision.choose("auto", kind(cpuinfo), gpus, tpu)
    assert choice.setting == chosen
    assert choice.reason.startswith(f"auto chose {'float32' if chosen == 'none' else 'bfloat16'} (")
    assert choice.emulation_warning() is None


def test_the_reason_names_the_cpu_level_and_what_it_means_for_bfloat16():
    assert precision.choose("auto", kind(AVX2_EPYC, TF_ENABLE_ONEDNN_OPTS="1"), [], False).reason == (
        "auto chose float32 (AuthenticAMD CPU, oneDNN level avx2: bfloat16 emulated)")
    assert precision.choose("auto", kind(AVX2_EPYC), [], False).reason == (
        "auto chose float32 (AuthenticAMD CPU, oneDNN level avx2, oneDNN off: bfloat16 emulated)")
    assert precision.choose("auto", kind(AVX512_EPYC), [(8, 0)], False).reason == (
        "auto chose bfloat16 (GPU compute capability 8.0: bfloat16 native)")


@pytest.mark.parametrize("requested", ["none", "bfloat16", "float16"])
def test_an_explicit_setting_is_kept_on_any_hardware(requested):
    for cpuinfo in (AVX2_EPYC, AMX_XEON):
        assert precision.choose(requested, kind(cpuinfo), [], False).setting == requested


def test_explicit_bfloat16_on_a_cpu_that_emulates_it_runs_with_one_warning_saying_how_much_slower():
    warning = precision.choose("bfloat16", kind(AVX2_EPYC), [], False).emulation_warning()
    assert warning.paragraph().startswith("tapeloop: warning: [precision] bfloat16 is emulated on this hardware")
    assert "7.7x slower" in warning.paragraph()
    assert "found --mixed_precision=bfloat16 (AuthenticAMD CPU, oneDNN level avx2, oneDNN off: bfloat16 emulated)" in (
        warning.paragraph())
    assert "Fix: use --mixed_precision=auto (float32 here) or none" in warning.paragraph()
    assert precision.choose("bfloat16", kind(AVX512_EPYC), [], False).emulation_warning() is None
    assert precision.choose("none", kind(AVX2_EPYC), [], False).emulation_warning() is None


def test_the_record_keeps_the_choice_and_the_cpu_features_that_decided_it():
    assert precision.choose("auto", kind(AVX2_EPYC), [], False).record() == {
        "requested": "auto", "computed_in": "none",
        "reason": "auto chose float32 (AuthenticAMD CPU, oneDNN level avx2, oneDNN off: bfloat16 emulated)",
        "cpu_vendor": "AuthenticAMD", "onednn_isa": "avx2", "onednn_enabled": False, "cpu_native_bfloat16": False}


# Under ONEDNN_MAX_CPU_ISA below AVX512_BF16 on a CPU that has it, a bfloat16 model crashes oneDNN (which
# is why tapeloop refuses bfloat16 there): the runs below that build one are skipped on such a machine.
CANNOT_BUILD_BFLOAT16 = pytest.mark.skipif(
    precision.this_cpu().held_below_bfloat16, reason="oneDNN is held below bfloat16 here (ONEDNN_MAX_CPU_ISA): "
    "a bfloat16 model would crash it")


@pytest.mark.parametrize("cpuinfo, policy", [(AVX2_EPYC, "float32"),
                                             pytest.param(AVX512_EPYC, "mixed_bfloat16", marks=CANNOT_BUILD_BFLOAT16)])
def test_a_run_builds_its_model_in_the_precision_auto_chose_and_logs_why(tmp_path, monkeypatch, caplog, cpuinfo,
                                                                        policy):
    monkeypatch.setattr(precision, "this_cpu", lambda: kind(cpuinfo))
    caplog.set_level("INFO", logger="absl")
    run = run_inputs.prepare_run(make_config(tmp_path, "--mixed_precision=auto", "--model=mlp"))
    assert run.model.dtype_policy.name == policy
    assert f"Precision: {run.precision.reason}." in caplog.text and "auto chose" in run.precision.reason
    assert "[precision]" not in caplog.text


@CANNOT_BUILD_BFLOAT16
def test_a_run_that_asks_for_emulated_bfloat16_warns_once_before_training(tmp_path, monkeypatch, caplog):
    monkeypatch.setattr(precision, "this_cpu", lambda: kind(AVX2_EPYC))
    run = run_inputs.prepare_run(make_config(tmp_path, "--mixed_precision=bfloat16", "--model=mlp"))
    assert run.model.dtype_policy.name == "mixed_bfloat16"
    assert caplog.text.count("tapeloop: warning: [precision] bfloat16 is emulated") == 1


def test_a_cap_below_bfloat16_on_a_cpu_with_it_is_named_in_the_reason():
    held = kind(AVX512_EPYC, ONEDNN_MAX_CPU_ISA="AVX2")
    assert held.held_below_bfloat16 and not kind(AVX512_EPYC).held_below_bfloat16
    assert not kind(AVX2_EPYC, ONEDNN_MAX_CPU_ISA="AVX2").held_below_bfloat16
    assert precision.choose("auto", held, [], False).reason == (
        "auto chose float32 (AuthenticAMD CPU, oneDNN level avx2 (held by ONEDNN_MAX_CPU_ISA=AVX2): bfloat16 emulated)")


def test_explicit_bfloat16_with_onednn_held_below_it_is_refused_with_the_paragraph():
    # TensorFlow would hand bfloat16 to oneDNN by the CPU's flags, and oneDNN would fail the first convolution.
    with pytest.raises(TapeloopError) as refused:
        precision.choose("bfloat16", kind(AVX512_EPYC, ONEDNN_MAX_CPU_ISA="AVX2"), [], False)
    assert refused.value.paragraph() == (
        "tapeloop: error: [precision] --mixed_precision=bfloat16 cannot run with oneDNN held below its bfloat16 "
        "level: TensorFlow hands bfloat16 to oneDNN because this CPU has AVX512_BF16, and oneDNN then has no "
        "bfloat16 kernel. Expected ONEDNN_MAX_CPU_ISA unset or at AVX512_CORE_BF16 or above; found AuthenticAMD "
        "CPU, oneDNN level avx2 (held by ONEDNN_MAX_CPU_ISA=AVX2). Fix: unset ONEDNN_MAX_CPU_ISA, or use "
        "--mixed_precision=auto (float32 under this hold) or none")
    assert precision.choose("bfloat16", kind(AVX512_EPYC, ONEDNN_MAX_CPU_ISA="AVX2"), [(8, 0)], False).setting == (
        "bfloat16")  # A GPU computes it.
