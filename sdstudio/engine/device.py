"""Device and dtype policy.

CUDA when present (fp16 weights), Apple MPS when present (fp16), else the CPU: bf16 where the
processor computes in bf16 natively (AVX512-BF16 / AMX, see ``engine/accel.py``), fp32
elsewhere (fp16 on the CPU runs but is 30-45x slower). ``settings.precision`` other than
``auto`` is taken as given; ``SDSTUDIO_PRECISION`` says what ``auto`` means where the person
sets it. An explicit ``settings.device`` that is not available falls back to the CPU with a
note.
"""

from __future__ import annotations

import contextlib
import functools
import os
import time
from dataclasses import dataclass, field

import torch

from sdstudio.core.errors import is_out_of_memory  # noqa: F401 (the engine's import of it)
from sdstudio.core.events import VramUsage
from sdstudio.core.settings import EngineSettings
from sdstudio.engine import accel

_DTYPES = {"fp16": torch.float16, "bf16": torch.bfloat16, "fp32": torch.float32}
DTYPE_NAMES = {v: k for k, v in _DTYPES.items()}


@dataclass(frozen=True)
class DeviceChoice:
    device: torch.device
    dtype: torch.dtype
    notes: tuple[str, ...] = field(default=())
    reason: str = ""  # why this dtype (auto's choice, the setting, SDSTUDIO_PRECISION)
    vae_dtype: torch.dtype | None = None  # None: the same as ``dtype``

    @property
    def kind(self) -> str:  # "cuda", "mps" or "cpu"
        return self.device.type

    @property
    def dtype_name(self) -> str:
        return DTYPE_NAMES.get(self.dtype, str(self.dtype))

    @property
    def vae(self) -> torch.dtype:
        return self.vae_dtype or self.dtype

    @property
    def label(self) -> str:
        """The precision as shown and recorded: "bf16", or "bf16, VAE fp32" where the VAE
        runs in another one."""
        if self.vae == self.dtype:
            return self.dtype_name
        return f"{self.dtype_name}, VAE {DTYPE_NAMES.get(self.vae, str(self.vae))}"

    @property
    def name(self) -> str:
        if self.device.type == "cuda":
            try:
                index = self.device.index or 0
                return f"cuda:{index} ({torch.cuda.get_device_name(index)})"
            except Exception:
                return str(self.device)
        return str(self.device)


def mps_available() -> bool:
    backend = getattr(torch.backends, "mps", None)
    return bool(backend is not None and backend.is_available())


def choose_device(settings: EngineSettings) -> DeviceChoice:
    """Pick the device and dtype from the settings and what the machine has."""
    wanted = (settings.device or "auto").strip().lower()
    notes: list[str] = []
    device: torch.device
    if wanted == "auto":
        if torch.cuda.is_available():
            device = torch.device("cuda", torch.cuda.current_device())
        elif mps_available():
            device = torch.device("mps")
        else:
            device = torch.device("cpu")
    else:
        try:
            device = torch.device(wanted)
        except (RuntimeError, ValueError):
            notes.append(f"unknown device {settings.device!r}; using the CPU")
            device = torch.device("cpu")
        if device.type == "cuda" and (
            not torch.cuda.is_available()
            or (device.index or 0) >= torch.cuda.device_count()
        ):
            notes.append(f"{settings.device} is not available; using the CPU")
            device = torch.device("cpu")
        elif device.type == "mps" and not mps_available():
            notes.append("Apple MPS is not available; using the CPU")
            device = torch.device("cpu")
        elif device.type not in ("cuda", "mps", "cpu"):
            notes.append(f"device {settings.device!r} is not supported; using the CPU")
            device = torch.device("cpu")
    dtype, reason = choose_dtype(device.type, settings.precision)
    if dtype == torch.float16 and device.type == "cpu":
        notes.append("fp16 on the CPU is very slow; fp32 or bf16 is recommended")
    vae = _DTYPES[accel.vae_precision(device.type, DTYPE_NAMES[dtype])]
    return DeviceChoice(device, dtype, tuple(notes), reason,
                        vae_dtype=None if vae == dtype else vae)


def choose_dtype(device_kind: str, precision: str | None) -> tuple[torch.dtype, str]:
    """(dtype, why) for a device kind and the precision setting: the setting when it names
    one; for ``auto``, ``SDSTUDIO_PRECISION`` when set, else fp16 on CUDA and MPS and, on the
    CPU, bf16 where it is native (accel.cpu_precision), fp32 otherwise."""
    wanted = (precision or "auto").lower()
    if wanted in _DTYPES:
        return _DTYPES[wanted], f"precision {wanted} (setting)"
    override = accel.precision_override()
    if override is not None:
        return _DTYPES[override], f"{accel.PRECISION_ENV}={override}"
    if device_kind in ("cuda", "mps"):
        return torch.float16, f"{device_kind}: fp16"
    cpu = _cpu_precision()
    return _DTYPES[cpu.dtype], cpu.reason


@functools.lru_cache(maxsize=1)
def _cpu_precision() -> accel.CpuPrecision:
    return accel.cpu_precision()


def memory_info(device: torch.device) -> tuple[int, int]:
    """(free, total) bytes of the device's memory; the system RAM for the CPU and MPS."""
    if device.type == "cuda":
        free, total = torch.cuda.mem_get_info(device)
        return int(free), int(total)
    try:
        pages = os.sysconf("SC_PHYS_PAGES")
        avail = os.sysconf("SC_AVPHYS_PAGES")
        size = os.sysconf("SC_PAGE_SIZE")
        return int(avail * size), int(pages * size)
    except (ValueError, OSError, AttributeError):
        return 8 << 30, 16 << 30


_VRAM_READ_EVERY_S = 0.25
_vram_cache: dict[int, tuple[float, VramUsage]] = {}


def vram_usage(device: torch.device | None, *, max_age_s: float = _VRAM_READ_EVERY_S
               ) -> VramUsage | None:
    """GPU memory in use on a CUDA ``device``; None for any other device or when CUDA cannot
    say. Reading the caching allocator's counters builds a dict of a few hundred entries, so
    on the per-step path a reading younger than ``max_age_s`` is reused."""
    if device is None or device.type != "cuda":
        return None
    try:
        index = device.index if device.index is not None else torch.cuda.current_device()
        now = time.monotonic()
        cached = _vram_cache.get(index)
        if cached is not None and now - cached[0] < max_age_s:
            return cached[1]
        stats = torch.cuda.memory_stats_as_nested_dict(index)
        allocated = stats.get("allocated_bytes", {}).get("all", {})
        reserved = stats.get("reserved_bytes", {}).get("all", {})
        usage = VramUsage(allocated=int(allocated.get("current", 0)),
                          reserved=int(reserved.get("current", 0)),
                          peak=int(allocated.get("peak", 0)), total=_cuda_total(index))
        _vram_cache[index] = (now, usage)
        return usage
    except Exception:
        return None


@functools.lru_cache(maxsize=16)
def _cuda_total(index: int) -> int:
    return int(torch.cuda.get_device_properties(index).total_memory)




def free_device_memory(device: torch.device | None = None) -> None:
    import gc

    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
    if mps_available():
        with contextlib.suppress(Exception):
            torch.mps.empty_cache()
