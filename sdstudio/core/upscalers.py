"""Upscaler names as AUTOMATIC1111 has them, and the size rules of an upscale. Pure Python.

Three kinds of upscaler share one name space (what a person picks in a list):

* **built-in pixel upscalers** (:data:`BUILTIN_UPSCALERS`): ``"None"``, ``"Lanczos"``,
  ``"Nearest"`` (A1111's ``UpscalerNone`` / ``UpscalerLanczos`` / ``UpscalerNearest``);
* **latent upscale modes** (:data:`LATENT_UPSCALE_MODES`, A1111's ``shared.latent_upscale_modes``):
  for the hires fix only, they interpolate the latent (``torch.nn.functional.interpolate`` with
  the mode and antialias given here), not pixels;
* **model upscalers**: any other name is an upscaler model file (ESRGAN, Real-ESRGAN, SwinIR,
  DAT, ...) named as it is found in the upscaler folders (``sdstudio.engine.upscale``).

Model files are found by :func:`model_files` / :func:`list_upscalers` in
:func:`upscaler_dirs` (SD Studio's own folder, then ``EngineSettings.upscaler_dirs``), pure
Python so the window lists them without the engine.

:func:`target_size` is A1111's ``Upscaler.upscale`` destination: ``int(side * scale) // 8 * 8``.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from sdstudio.core import paths
from sdstudio.core.errors import RequestError
from sdstudio.core.settings import EngineSettings

NONE = "None"
LANCZOS = "Lanczos"
NEAREST = "Nearest"
BUILTIN_UPSCALERS: tuple[str, ...] = (NONE, LANCZOS, NEAREST)


@dataclass(frozen=True)
class LatentMode:
    """How a latent upscale mode interpolates: ``torch.nn.functional.interpolate(latent,
    size=..., mode=mode, antialias=antialias)``."""

    mode: str
    antialias: bool


LATENT_UPSCALE_DEFAULT = "Latent"
LATENT_UPSCALE_MODES: dict[str, LatentMode] = {
    "Latent": LatentMode("bilinear", False),
    "Latent (antialiased)": LatentMode("bilinear", True),
    "Latent (bicubic)": LatentMode("bicubic", False),
    "Latent (bicubic antialiased)": LatentMode("bicubic", True),
    "Latent (nearest)": LatentMode("nearest", False),
    "Latent (nearest-exact)": LatentMode("nearest-exact", False),
}

# A1111's Extras slider goes from 1 to 8; the hires fix allows the same range.
MIN_SCALE = 1.0
MAX_SCALE = 8.0
# An upscaled image must open again in SD Studio (core.images' limits).
MAX_RESULT_PIXELS = 8192 * 8192
MAX_RESULT_SIDE = 16384

Kind = Literal["builtin", "latent", "model"]


def kind_of(name: str) -> Kind:
    """Whether ``name`` (already normalised) is a built-in, a latent mode or a model file."""
    if name in BUILTIN_UPSCALERS:
        return "builtin"
    if name in LATENT_UPSCALE_MODES:
        return "latent"
    return "model"


def normalise(name: str) -> str:
    """The canonical spelling of an upscaler name: built-ins and latent modes match
    case-insensitively (``"lanczos"`` -> ``"Lanczos"``, ``""`` -> ``"None"``); any other name
    is returned stripped (a model file's name, resolved by the engine)."""
    text = (name or "").strip()
    if not text:
        return NONE
    lowered = text.lower()
    for known in (*BUILTIN_UPSCALERS, *LATENT_UPSCALE_MODES):
        if known.lower() == lowered:
            return known
    return text


def describe(name: str) -> str:
    """A short description for a picker's tooltip."""
    canonical = normalise(name)
    kind = kind_of(canonical)
    if canonical == NONE:
        return "no upscaler: a plain Lanczos resize to the size asked for"
    if canonical == LANCZOS:
        return "Lanczos resampling (sharp, no model)"
    if canonical == NEAREST:
        return "nearest-neighbour resampling (hard pixels, no model)"
    if kind == "latent":
        mode = LATENT_UPSCALE_MODES[canonical]
        return (f"hires fix only: the latent is interpolated ({mode.mode}"
                f"{', antialiased' if mode.antialias else ''}) before the second pass")
    return f"upscaler model file {canonical}"


def check_scale(scale: float, field: str = "scale") -> float:
    """``scale`` as a float within [MIN_SCALE, MAX_SCALE]; RequestError otherwise."""
    try:
        value = float(scale)
    except (TypeError, ValueError):
        raise RequestError(field, f"upscale factor {scale!r} is not a number") from None
    if not (MIN_SCALE <= value <= MAX_SCALE):  # also refuses NaN
        raise RequestError(field, f"upscale factor {scale:g} is outside {MIN_SCALE:g} to "
                           f"{MAX_SCALE:g}")
    return value


def target_size(width: int, height: int, scale: float) -> tuple[int, int]:
    """A1111's destination size for upscaling ``width``x``height`` by ``scale``: each side
    times the factor, rounded down to a multiple of 8 (at least 8). Refuses (RequestError) a
    factor outside the range and a result above the pixel limit."""
    value = check_scale(scale)
    dest = (max(8, int((width * value) // 8 * 8)), max(8, int((height * value) // 8 * 8)))
    check_result_size(*dest)
    return dest


def check_result_size(width: int, height: int, field: str = "scale") -> None:
    if max(width, height) > MAX_RESULT_SIDE or width * height > MAX_RESULT_PIXELS:
        raise RequestError(field, f"the upscaled image would be {width}x{height} = "
                           f"{width * height:,} pixels; at most {MAX_RESULT_PIXELS:,} "
                           f"({MAX_RESULT_SIDE} per side)")


# ------------------------------------------------------------------------ model files
UPSCALER_SUFFIXES = (".pth", ".pt", ".safetensors")
MAX_LISTED = 2000


def upscaler_dirs(settings: EngineSettings | None = None) -> tuple[str, ...]:
    """SD Studio's own upscaler folder, then the configured ones (other apps' included)."""
    extra = tuple(settings.upscaler_dirs) if settings is not None else ()
    return (str(paths.upscaler_dir()), *extra)


def model_files(dirs: Sequence[str]) -> list[tuple[str, Path]]:
    """(name, path) of every upscaler file in ``dirs`` (recursively, at most
    :data:`MAX_LISTED`): the path relative to its folder without the suffix, or with it when
    another file already has that name (``x4.pth`` and ``x4.safetensors``). Symlinked folders
    are not followed; unreadable folders are skipped."""
    out: dict[str, Path] = {}
    for folder in dirs:
        base = Path(folder).expanduser()
        try:
            for root, subdirs, files in os.walk(base):
                subdirs[:] = sorted(d for d in subdirs if not d.startswith("."))
                for file in sorted(files):
                    path = Path(root) / file
                    if path.suffix.lower() not in UPSCALER_SUFFIXES or file.startswith("."):
                        continue
                    rel = path.relative_to(base).as_posix()
                    name = rel[: -len(path.suffix)]
                    out.setdefault(name if name not in out else rel, path)
                    if len(out) >= MAX_LISTED:
                        return sorted(out.items())
        except OSError:
            continue
    return sorted(out.items())


def list_upscalers(dirs: Sequence[str]) -> list[str]:
    """Every upscaler a person can pick: the built-ins, then the model files in ``dirs``."""
    return [*BUILTIN_UPSCALERS, *(name for name, _ in model_files(dirs))]
