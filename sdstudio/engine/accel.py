"""Speed paths the hardware offers: bf16 on CPUs with native bf16, ``channels_last``, blocked
bf16 attention on the CPU, and on CUDA fused QKV projections, ``torch.compile`` of the UNet and
FP8 weight storage.

Every decision is a pure function of what it is given (CPU flags, device kind, compute
capability, memory mode, settings) and returns the choice with its reasons, so it is tested
as a table without the hardware; the ``apply_*`` functions do what a plan says to the loaded
modules. Measured on the CPU (docs/benchmarks.md, ``bench/precision.py``): bf16 weights are
1.6-2.1x faster per UNet step than fp32 on a CPU with AVX512-BF16 (bf16 autocast over fp32
weights 1.64-1.68x); ``channels_last`` makes the UNet 2-15 % and the VAE decode 20-30 % faster
in both precisions (real-size SD 1.5 and the demo model, alternating in one process; as fast as
the plain layout beside a busy process, not slower), so it is used on the CPU too; blocked
bf16 attention (engine/cpu_attention.py) takes another 23-33 % off a bf16 step at 512x512.
"""

from __future__ import annotations

import contextlib
import os
import platform
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

# /proc/cpuinfo flags of x86 instruction sets that compute in bf16 natively
CPU_BF16_FLAGS = ("amx_bf16", "avx512_bf16")
PRECISION_ENV = "SDSTUDIO_PRECISION"  # what "auto" means, where the person sets it
PRECISION_NAMES = ("fp16", "bf16", "fp32")
FP8_MIN_CAPABILITY = (8, 9)  # Ada / Hopper and newer: float8 e4m3 in hardware


# ------------------------------------------------------------------ CPU precision
@dataclass(frozen=True)
class CpuPrecision:
    dtype: str  # "bf16" or "fp32"
    reason: str


def read_cpu_flags(path: str | Path = "/proc/cpuinfo") -> frozenset[str] | None:
    """The first processor's feature flags from Linux's /proc/cpuinfo; None where there is no
    such file (macOS, Windows) or it has no flags line."""
    try:
        with open(path, encoding="ascii", errors="replace") as handle:
            for _ in range(200):  # the flags come within the first processor's lines
                line = handle.readline(1 << 16)
                if not line:
                    break
                key, sep, value = line.partition(":")
                if sep and key.strip() in ("flags", "Features"):
                    return frozenset(value.split())
    except OSError:
        return None
    return None


def torch_cpu_bf16() -> tuple[bool | None, bool | None]:
    """(torch's own CPU check for native bf16: AVX512-BF16 or AMX; whether oneDNN runs bf16
    here), each None where this torch cannot say."""
    import torch

    native: bool | None = None
    checks = [getattr(torch.cpu, name, None)
              for name in ("_is_avx512_bf16_supported", "_is_amx_tile_supported")]
    with contextlib.suppress(Exception):
        answers = [bool(check()) for check in checks if callable(check)]
        if answers:
            native = any(answers)
    onednn: bool | None = None
    with contextlib.suppress(Exception):
        onednn = bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    return native, onednn


def decide_cpu_precision(machine: str, flags: frozenset[str] | None,
                         torch_native: bool | None, onednn_bf16: bool | None) -> CpuPrecision:
    """What ``precision=auto`` runs in on the CPU: bf16 where the processor computes in bf16
    natively (x86 with AMX-BF16 or AVX512-BF16, from its flags and torch's own check, which
    must not disagree; oneDNN must run bf16), else fp32 (Apple silicon, other ARM, x86
    without those: bf16 there is emulated and slower than fp32). Pure."""
    arch = machine.strip().lower()
    if arch not in ("x86_64", "amd64", "x64", "i686", "i386", "x86"):
        return CpuPrecision("fp32", f"{machine or 'this'} CPU, no native bf16 path: fp32")
    found = sorted(f for f in CPU_BF16_FLAGS if flags is not None and f in flags)
    from_flags = bool(found) if flags is not None else None
    if from_flags is None and torch_native is None:
        return CpuPrecision("fp32", "CPU features unknown: fp32")
    if from_flags is not None and torch_native is not None and from_flags != torch_native:
        return CpuPrecision("fp32", "CPU flags and torch disagree about native bf16: fp32")
    native = from_flags if from_flags is not None else bool(torch_native)
    if not native:
        return CpuPrecision("fp32", "CPU without native bf16 (AVX512-BF16/AMX): fp32")
    if onednn_bf16 is False:
        return CpuPrecision("fp32", "oneDNN cannot run bf16 in this torch: fp32")
    what = ", ".join(found) if found else "torch's check"
    return CpuPrecision("bf16", f"CPU with native bf16 ({what}): bf16")


def cpu_precision() -> CpuPrecision:
    """:func:`decide_cpu_precision` for this machine."""
    native, onednn = torch_cpu_bf16()
    return decide_cpu_precision(platform.machine(), read_cpu_flags(), native, onednn)


def precision_override(environ: Any = None) -> str | None:
    """``SDSTUDIO_PRECISION`` (fp16, bf16 or fp32): what ``precision=auto`` resolves to
    where the person set it (to reproduce fp32 images on a bf16 CPU, for instance); None
    when unset or not one of those."""
    value = (environ if environ is not None else os.environ).get(PRECISION_ENV, "")
    value = str(value).strip().lower()
    return value if value in PRECISION_NAMES else None


def vae_precision(device_kind: str, dtype: str) -> str:
    """The VAE's precision next to the UNet's ``dtype``: the same (a decode that turns out
    NaN/inf is redone in fp32, engine/latents.py). Measured on the CPU: a bf16 VAE decodes
    the demo model within 6/255 of fp32 and SD 1.5-size weights within a few levels
    (docs/benchmarks.md), so bf16 is kept there too. Pure."""
    del device_kind
    return dtype


# ------------------------------------------------------------------------ GPU speed
@dataclass(frozen=True)
class AccelPlan:
    channels_last: bool = False
    fuse_qkv: bool = False
    compile: bool = False
    fp8_storage: bool = False
    cpu_attention: bool = False  # blocked bf16 attention (engine/cpu_attention.py)
    reasons: tuple[str, ...] = field(default=())
    notes: tuple[str, ...] = field(default=())  # asked for but not done: told to the person

    @property
    def active(self) -> tuple[str, ...]:
        names = ("channels_last", "fuse_qkv", "compile", "fp8_storage", "cpu_attention")
        return tuple(n for n in names if getattr(self, n))


def decide_accel(device_kind: str, *, capability: tuple[int, int] | None, arch: str,
                 memory_mode: str, compile_setting: bool, compile_available: bool,
                 dtype: str = "") -> AccelPlan:
    """The speed paths for a model on ``device_kind``. Pure.

    - CUDA: ``channels_last`` (convolutions on tensor cores) and fused QKV projections (one
      matrix multiply instead of three; LoRAs are applied around it, see :func:`unfused`),
      except in low-memory mode (the fused copy costs VRAM).
    - ``torch.compile`` of the UNet on CUDA when the person asks for it (Speed: compile)
      and this torch can compile there (``compile_available``: Triton): off by default, the
      first image of each size takes longer. Not on the CPU (not measured there: the
      inductor compilation of a real-size UNet did not fit this session's time).
    - FP8 weight storage (``float8_e4m3fn``, computed in fp16) in low-memory mode for SDXL
      on a GPU of compute capability 8.9 or newer: the UNet's weights in half the VRAM.
    - The CPU: ``channels_last`` (oneDNN's convolutions are faster in it, see the module
      doc), and with ``dtype`` "bf16" the blocked bf16 attention of engine/cpu_attention.py.
    - MPS: none of them.
    """
    reasons: list[str] = []
    notes: list[str] = []
    low = (memory_mode or "auto").lower() == "low"
    cuda = device_kind == "cuda"
    cpu = device_kind == "cpu"
    channels_last = cuda or cpu
    cpu_attention = cpu and dtype == "bf16"
    if cpu_attention:
        reasons.append("bf16 on the CPU: attention in blocks of bf16 scores")
    fuse = cuda and not low
    if cuda and low:
        reasons.append("low-memory mode: QKV projections not fused")
    compile_ = False
    if compile_setting:
        if not cuda:
            notes.append(f"Speed: compile applies to CUDA only; not compiled on "
                         f"{device_kind}")
        elif compile_available:
            compile_ = True
            reasons.append("Speed: compile: the UNet is compiled (first image of a size "
                           "is slower)")
        else:
            notes.append("Speed: compile is not available with this torch on "
                         f"{device_kind} (no Triton); not compiled")
    fp8 = False
    if cuda and low and arch.startswith("sdxl"):
        if capability is not None and capability >= FP8_MIN_CAPABILITY:
            fp8 = True
            reasons.append("low-memory SDXL on a GPU with FP8: UNet weights stored in fp8")
        else:
            reasons.append("FP8 weight storage needs compute capability 8.9 or newer")
    return AccelPlan(channels_last=channels_last, fuse_qkv=fuse, compile=compile_,
                     fp8_storage=fp8, cpu_attention=cpu_attention,
                     reasons=(*reasons, *notes), notes=tuple(notes))


def compile_available(device_kind: str) -> bool:
    """Whether torch.compile (inductor) can build kernels here: a C++ compiler on the CPU,
    Triton on CUDA."""
    import importlib.util
    import shutil

    if device_kind == "cuda":
        try:
            return importlib.util.find_spec("triton") is not None
        except (ImportError, ValueError):
            return False
    if device_kind == "cpu":
        return any(shutil.which(c) for c in ("g++", "clang++", "c++", "cl"))
    return False


def inductor_cache_dir() -> Path:
    """Where compiled kernels are kept between runs: SD Studio's cache folder."""
    from sdstudio.core import paths

    return paths.cache_dir() / "torch-inductor"


def apply_accel(unet: Any, vae: Any, plan: AccelPlan, *, compute_dtype: Any) -> None:
    """Do what ``plan`` says to a loaded UNet (and VAE for channels_last)."""
    import torch

    if plan.channels_last:
        unet.to(memory_format=torch.channels_last)
        if vae is not None:
            vae.to(memory_format=torch.channels_last)
    if plan.fuse_qkv:
        fuse_qkv(unet)
    if plan.fp8_storage:
        unet.enable_layerwise_casting(storage_dtype=torch.float8_e4m3fn,
                                      compute_dtype=compute_dtype)
    if plan.compile:
        compile_unet(unet)


def fuse_qkv(unet: Any) -> bool:
    """Fuse the UNet's attention projections (diffusers' ``fuse_qkv_projections``); False
    when this UNet cannot (added KV projections) and it is left as it was."""
    try:
        unet.fuse_qkv_projections()
    except (ValueError, AttributeError):
        return False
    unet._sdstudio_fused = True
    return True


def is_fused(unet: Any) -> bool:
    """Whether the UNet runs fused projections now: fused by :func:`fuse_qkv` and its
    processors still the fused ones (an add-on that installs processors of its own, such as
    IP-Adapter, replaces them; then the separate projections are in use)."""
    if not getattr(unet, "_sdstudio_fused", False):
        return False
    processors = getattr(unet, "attn_processors", {})
    return bool(processors) and all("Fused" in type(p).__name__ for p in processors.values())


@contextlib.contextmanager
def unfused(unet: Any) -> Iterator[None]:
    """While LoRAs change the weights: the separate q/k/v projections in use (LoRAs change
    them in place); afterwards fused again from the changed weights."""
    if not is_fused(unet):
        yield
        return
    unet.unfuse_qkv_projections()
    unet._sdstudio_fused = False
    try:
        yield
    finally:
        fuse_qkv(unet)


def compile_unet(unet: Any) -> None:
    """``torch.compile`` the UNet's forward in place (the module stays a UNet, so hooks,
    LoRAs and the pipeline see the same object): static shapes (``dynamic=False``, a new
    size compiles once), the FX graph cache kept under :func:`inductor_cache_dir`."""
    import torch

    cache = inductor_cache_dir()
    cache.mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("TORCHINDUCTOR_CACHE_DIR", str(cache))
    os.environ.setdefault("TORCHINDUCTOR_FX_GRAPH_CACHE", "1")
    with contextlib.suppress(Exception):
        import torch._inductor.config as inductor_config

        inductor_config.fx_graph_cache = True
    if getattr(unet, "_sdstudio_compiled", False):
        return
    unet.forward = torch.compile(unet.forward, dynamic=False)
    unet._sdstudio_compiled = True


def cuda_capability(device: Any) -> tuple[int, int] | None:
    import torch

    if getattr(device, "type", "") != "cuda":
        return None
    try:
        major, minor = torch.cuda.get_device_capability(device)
    except Exception:
        return None
    return int(major), int(minor)
