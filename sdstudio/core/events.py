"""Typed messages the engine sends through its plain callback, and the worker relays to the UI.

The engine knows nothing of jobs or Qt: it calls ``on_event(event)`` with one of the engine
events below. The worker wraps them with a job id for the window (see sdstudio.worker).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from sdstudio.core.request import GenerationInfo, GenerationRequest

if TYPE_CHECKING:
    from PIL.Image import Image


@dataclass(frozen=True)
class LoadProgress:
    """Model loading: ``fraction`` in 0..1, or None when unknown."""

    message: str
    fraction: float | None = None


GIB = 1 << 30


@dataclass(frozen=True)
class VramUsage:
    """GPU memory (CUDA only), in bytes: ``allocated`` by tensors now, ``reserved`` by the
    caching allocator, the ``peak`` allocated since the process started, and the card's
    ``total``."""

    allocated: int
    reserved: int = 0
    peak: int = 0
    total: int = 0

    def text(self) -> str:
        """"VRAM 3.2 / 8.0 GiB" (allocated of total)."""
        used = f"{self.allocated / GIB:.1f}"
        return f"VRAM {used} / {self.total / GIB:.1f} GiB" if self.total else f"VRAM {used} GiB"

    def details(self) -> str:
        parts = [f"allocated {self.allocated / GIB:.2f} GiB",
                 f"reserved {self.reserved / GIB:.2f} GiB",
                 f"peak {self.peak / GIB:.2f} GiB"]
        if self.total:
            parts.append(f"of {self.total / GIB:.2f} GiB on the card")
        return "GPU memory: " + ", ".join(parts)


@dataclass(frozen=True)
class ModelReady:
    name: str
    arch: str
    device: str
    dtype: str
    memory: dict[str, object] = field(default_factory=dict)
    untrained: bool = False
    load_s: float = 0.0
    vram: VramUsage | None = None  # after loading, on CUDA
    precision_reason: str = ""  # why this dtype, and the speed paths taken (engine/accel.py)

    @property
    def vram_bytes(self) -> int | None:
        return self.vram.allocated if self.vram is not None else None


@dataclass(frozen=True)
class Progress:
    """Denoising step ``step`` (1-based) of ``total`` in run ``run`` (1-based) of ``runs``.

    A run of two passes (the hires fix) counts both in ``step`` / ``total``; ``phase`` then
    names the pass ("first pass", "hires") and ``phase_step`` / ``phase_total`` count its
    own steps."""

    step: int
    total: int
    run: int = 1
    runs: int = 1
    elapsed_s: float = 0.0
    s_per_it: float = 0.0
    vram: VramUsage | None = None  # at this step, on CUDA
    phase: str = ""
    phase_step: int = 0
    phase_total: int = 0

    @property
    def vram_bytes(self) -> int | None:
        return self.vram.allocated if self.vram is not None else None

    @property
    def phase_text(self) -> str:
        """"hires 3/10" while a pass of several runs, else ""."""
        return f"{self.phase} {self.phase_step}/{self.phase_total}" if self.phase else ""


@dataclass(frozen=True)
class Preview:
    """A cheap latent -> RGB approximation of the image being formed (first image of the run)."""

    step: int
    total: int
    image: Image


@dataclass(frozen=True)
class ImageReady:
    """One decoded image, with the request that reproduces it (actual seed, one image) and
    what the engine knows about how it was made. ``index`` counts images in the job, from 0."""

    index: int
    image: Image
    request: GenerationRequest
    info: GenerationInfo


@dataclass(frozen=True)
class Notice:
    """Something the person should know that is not an error (a fallback taken, say)."""

    message: str


EngineEvent = LoadProgress | ModelReady | Progress | Preview | ImageReady | Notice
EventCallback = Callable[[EngineEvent], None]


def ignore_event(event: EngineEvent) -> None:
    """Default callback."""


def format_duration(seconds: float) -> str:
    """"42 s", "3 min 05 s", "1 h 02 min" for progress lines."""
    seconds = max(0, round(seconds))
    if seconds < 60:
        return f"{seconds} s"
    minutes, s = divmod(seconds, 60)
    if minutes < 60:
        return f"{minutes} min {s:02d} s"
    hours, m = divmod(minutes, 60)
    return f"{hours} h {m:02d} min"
