"""Precision on the CPU: ``auto`` picks bf16 where the processor has native bf16 (a pure
decision from its flags and torch's check), SDSTUDIO_PRECISION overrides what ``auto`` means,
a bf16 generation runs end to end close to fp32 and is recorded (a bf16 VAE decode that gives
NaN or inf is redone in fp32: tests/engine/test_engine_costs.py)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from sdstudio.core.request import GenerationRequest
from sdstudio.core.settings import EngineSettings
from sdstudio.engine import Engine, accel
from sdstudio.engine import device as devices

AVX512_BF16 = frozenset({"avx512f", "avx512bw", "avx512_bf16"})
AMX = frozenset({"avx512f", "amx_tile", "amx_bf16"})
AVX2 = frozenset({"avx2", "fma"})


@pytest.mark.parametrize(("machine", "flags", "torch_native", "onednn", "expected"), [
    ("x86_64", AVX512_BF16, True, True, "bf16"),  # AMD Zen 4/5, Intel Cooper Lake
    ("x86_64", AMX, True, True, "bf16"),  # Intel Sapphire Rapids and newer
    ("AMD64", None, True, True, "bf16"),  # Windows: no /proc/cpuinfo, torch's check
    ("x86_64", AVX2, False, True, "fp32"),  # no native bf16: emulated, slower than fp32
    ("x86_64", AVX512_BF16, False, True, "fp32"),  # flags and torch disagree: fp32
    ("x86_64", AVX2, True, True, "fp32"),
    ("x86_64", AVX512_BF16, True, False, "fp32"),  # oneDNN cannot run bf16
    ("x86_64", None, None, None, "fp32"),  # nothing known
    ("arm64", frozenset({"bf16", "asimd"}), None, True, "fp32"),  # Apple silicon
    ("aarch64", frozenset({"bf16"}), None, True, "fp32"),
])
def test_cpu_precision_from_the_flags(machine: str, flags: frozenset[str] | None,
                                      torch_native: bool | None, onednn: bool | None,
                                      expected: str) -> None:
    choice = accel.decide_cpu_precision(machine, flags, torch_native, onednn)
    assert choice.dtype == expected
    assert choice.reason.endswith(expected)


def test_cpu_flags_are_read_from_cpuinfo(tmp_path: Path) -> None:
    info = tmp_path / "cpuinfo"
    info.write_text("processor\t: 0\nvendor_id\t: AuthenticAMD\n"
                    "flags\t\t: fpu sse avx512f avx512_bf16 avx2\n\nprocessor\t: 1\n"
                    "flags\t\t: fpu\n")
    assert accel.read_cpu_flags(info) == frozenset({"fpu", "sse", "avx512f", "avx512_bf16",
                                                    "avx2"})
    (tmp_path / "noflags").write_text("processor\t: 0\n")
    assert accel.read_cpu_flags(tmp_path / "noflags") is None
    assert accel.read_cpu_flags(tmp_path / "missing") is None


def test_this_machines_choice_agrees_with_its_flags() -> None:
    """The real detection on the machine running the suite: bf16 exactly when its
    /proc/cpuinfo lists a native bf16 flag (and torch agrees)."""
    import platform

    flags = accel.read_cpu_flags()
    if flags is None or platform.machine() != "x86_64":
        pytest.skip("not a Linux x86-64 machine")
    native = any(f in flags for f in accel.CPU_BF16_FLAGS)
    torch_native, onednn = accel.torch_cpu_bf16()
    expected = native and torch_native is not False and onednn is not False
    assert (accel.cpu_precision().dtype == "bf16") == expected


def test_precision_setting_and_override(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(devices, "_cpu_precision",
                        lambda: accel.CpuPrecision("bf16", "CPU with native bf16: bf16"))
    monkeypatch.delenv(accel.PRECISION_ENV, raising=False)
    assert devices.choose_dtype("cpu", "auto") == (torch.bfloat16, "CPU with native bf16: bf16")
    assert devices.choose_dtype("cpu", "fp32")[0] == torch.float32  # the setting wins
    assert devices.choose_dtype("cuda", "auto")[0] == torch.float16
    assert devices.choose_dtype("mps", None)[0] == torch.float16
    monkeypatch.setenv(accel.PRECISION_ENV, "FP32")
    assert devices.choose_dtype("cpu", "auto") == (torch.float32, "SDSTUDIO_PRECISION=fp32")
    assert devices.choose_dtype("cpu", "bf16")[0] == torch.bfloat16  # a setting still wins
    monkeypatch.setenv(accel.PRECISION_ENV, "fp64")  # not a precision: ignored
    assert devices.choose_dtype("cpu", "auto")[0] == torch.bfloat16
    assert accel.precision_override({"SDSTUDIO_PRECISION": " bf16 "}) == "bf16"
    assert accel.precision_override({}) is None


def test_auto_on_a_bf16_cpu_generates_in_bf16_close_to_fp32(
        monkeypatch: pytest.MonkeyPatch, engines: Callable[[str], Any],
        make_request: Callable[..., GenerationRequest]) -> None:
    """``auto`` on a CPU with native bf16 (its detection given AVX512-BF16 flags): the model
    loads in bf16, the image is made in bf16, recorded as such, and is close to fp32's."""
    request = make_request(steps=3)
    reference = engines("sd1").generate(request)[0]  # the suite's fp32 engine
    assert reference.info.dtype == "fp32"
    monkeypatch.delenv(accel.PRECISION_ENV, raising=False)
    monkeypatch.setattr(accel, "read_cpu_flags", lambda path="": AVX512_BF16)
    monkeypatch.setattr(accel, "torch_cpu_bf16", lambda: (True, True))
    monkeypatch.setattr(accel.platform, "machine", lambda: "x86_64")
    devices._cpu_precision.cache_clear()
    try:
        engine = Engine(EngineSettings(precision="auto"))
        try:
            ready = engine.load(request.model)
            assert ready.dtype == "bf16" and "avx512_bf16" in ready.precision_reason
            pipe = engine._model.pipes.base  # type: ignore[union-attr]
            assert {m.dtype for m in (pipe.unet, pipe.vae, pipe.text_encoder)} == {
                torch.bfloat16}
            out = engine.generate(request)[0]
        finally:
            engine.unload()
    finally:
        devices._cpu_precision.cache_clear()
    assert out.info.dtype == "bf16"
    got = np.asarray(out.image).astype(np.int16)
    ref = np.asarray(reference.image).astype(np.int16)
    diff = np.abs(got - ref)
    # untrained tiny weights amplify rounding: bf16 has 8 bits of mantissa
    assert diff.mean() < 6 and np.percentile(diff, 99) < 40, (diff.mean(), diff.max())


def test_the_label_names_a_vae_in_another_precision() -> None:
    cpu = torch.device("cpu")
    assert devices.DeviceChoice(cpu, torch.bfloat16).label == "bf16"
    mixed = devices.DeviceChoice(cpu, torch.bfloat16, vae_dtype=torch.float32)
    assert mixed.label == "bf16, VAE fp32" and mixed.vae == torch.float32
    assert accel.vae_precision("cpu", "bf16") == "bf16"  # measured close enough: kept
