"""Infotext keys that are more than ``Key: value`` of one field (see :class:`InfotextKey`).

``Size`` carries width and height; ``Sampler`` folds A1111's separate ``Schedule type`` back
into our sampler names and reads other tools' spellings; ``RNG``'s absence means the GPU
generator; ``Inpaint area`` is a choice of words for a flag. Pure Python.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from typing import Any

from sdstudio.core.fields import ALL_MODES, TXT2IMG_ONLY, FieldSpec, InfotextKey, Mode
from sdstudio.core.hires import USE_SAME_SAMPLER, USE_SAME_SCHEDULER, runs_hires
from sdstudio.core.sampler_names import (
    KRITA_PRESETS,
    TIMESTEP_SAMPLERS,
    canonical_sampler,
    canonical_schedule,
    comfy_schedule,
    effective_schedule,
    split_combined,
    split_schedule_suffix,
)

RE_IMAGESIZE = re.compile(r"^\s*(\d+)\s*[xX×]\s*(\d+)\s*$")


class WhenKey(InfotextKey):
    """Written only when ``when(request)`` holds (padding only with "Only masked")."""

    def __init__(self, key: str, when: Callable[[Any], bool],
                 modes: frozenset[Mode] = ALL_MODES) -> None:
        super().__init__(key, modes=modes)
        self.when = when

    def write(self, request: Any, spec: FieldSpec) -> Any:
        return super().write(request, spec) if self.when(request) else None


class SizeKey(InfotextKey):
    """``Size: 512x768`` = width and height."""

    def __init__(self) -> None:
        super().__init__("Size")

    def write(self, request: Any, spec: FieldSpec) -> Any:
        return f"{request.width}x{request.height}"

    def read(self, params: Mapping[str, str], extras: dict[str, str], spec: FieldSpec,
             fields: dict[str, Any]) -> None:
        if self.key in params:
            fields["width"], fields["height"] = parse_size(params[self.key])


def parse_size(text: Any) -> tuple[int, int]:
    m = RE_IMAGESIZE.match(str(text))
    if not m:
        raise ValueError(f"Size {text!r} is not WIDTHxHEIGHT")
    return int(m.group(1)), int(m.group(2))


class SamplerKey(InfotextKey):
    """``Sampler`` + ``Schedule type``, read as AUTOMATIC1111 1.10 reads them
    (``sd_samplers.get_sampler_and_scheduler``): a missing ``Schedule type`` is Automatic,
    whatever the ``Version``; a sampler name ending in a schedule ("DPM++ 2M Karras", the
    names before 1.9) names that schedule, and that suffix wins over ``Schedule type``.

    Beyond A1111: Krita AI Diffusion's preset names ("Default - DPM++ 2M") and Fooocus's
    ``Scheduler: karras`` (ComfyUI's names) give the sampler and schedule they ran; spellings
    like "k_euler_a" or "dpmpp_2m_sde_gpu" are understood. A name A1111 would replace by its
    default sampler, or a schedule it would replace by Automatic, stays in ``extras`` and the
    request keeps its default instead (nothing is silently swapped). A timestep sampler
    (DDIM, PLMS, UniPC) ignores the schedule type, so a written one (A1111 1.9 wrote
    "UniPC, Schedule type: Karras") is kept in ``extras`` and Automatic, what ran, is used."""

    SCHEDULE_KEYS = ("Schedule type", "Scheduler")

    def __init__(self) -> None:
        super().__init__("Sampler", consumes=("Sampler", *self.SCHEDULE_KEYS))

    def read(self, params: Mapping[str, str], extras: dict[str, str], spec: FieldSpec,
             fields: dict[str, Any]) -> None:
        raw = params.get("Sampler", "").strip()
        sampler, schedule, unknown = resolve_sampler_and_schedule(
            raw, params.get("Schedule type", "").strip(), params.get("Scheduler", "").strip())
        for key in unknown:
            extras[key] = params[key]
        if sampler is not None:
            fields[self.field] = sampler
        if sampler in TIMESTEP_SAMPLERS and schedule not in (None, "Automatic"):
            extras.setdefault("Schedule type", params.get("Schedule type") or schedule)
            schedule = "Automatic"
        if schedule is not None:
            fields["schedule_type"] = schedule


def resolve_sampler_and_schedule(
        sampler_text: str, schedule_text: str = "", scheduler_text: str = ""
) -> tuple[str | None, str | None, list[str]]:
    """(sampler, schedule type, keys not understood) for an infotext's ``Sampler``,
    ``Schedule type`` (A1111) and ``Scheduler`` (Fooocus: a ComfyUI name). None where the
    text names nothing SD Studio has; a missing schedule is Automatic."""
    unknown: list[str] = []
    schedule: str | None = "Automatic"
    if schedule_text:
        schedule = canonical_schedule(schedule_text)
        if schedule is None:
            unknown.append("Schedule type")
    elif scheduler_text:
        schedule = comfy_schedule(scheduler_text) or canonical_schedule(scheduler_text)
        if schedule is None:
            unknown.append("Scheduler")
    if not sampler_text:
        return None, schedule, unknown
    preset = KRITA_PRESETS.get(sampler_text)
    if preset is not None:
        base, ran = canonical_sampler(preset[0]), comfy_schedule(preset[1])
        if base is None or ran is None:
            return None, schedule, [*unknown, "Sampler"]
        return base, ran, unknown
    name, suffix = split_schedule_suffix(sampler_text)
    base = canonical_sampler(name)
    if base is None:
        return None, schedule, [*unknown, "Sampler"]
    pair = split_combined(base)  # a combined name spelled without spaces: "k_lms_karras"
    if pair is not None:
        base, suffix = pair[0], suffix or pair[1]
    if suffix is not None:
        schedule = suffix  # the name's schedule wins over "Schedule type", as in A1111
    return base, schedule, unknown


class ScheduleKey(InfotextKey):
    """``Schedule type`` as A1111 1.10 writes it: always. The schedule that ran by its label
    ("Karras" for DPM++ 2M on Automatic: A1111 writes the resolved label), and "Automatic"
    where Automatic runs the model's own (uniform) sigmas or the sampler runs on timesteps
    (DDIM, PLMS, UniPC), as A1111's web UI writes then. Read together with ``Sampler``
    (see :class:`SamplerKey`)."""

    def __init__(self) -> None:
        super().__init__("Schedule type", consumes=SamplerKey.SCHEDULE_KEYS)

    def write(self, request: Any, spec: FieldSpec) -> Any:
        if request.sampler in TIMESTEP_SAMPLERS:
            return "Automatic"
        ran = effective_schedule(request.sampler, request.schedule_type)
        if request.schedule_type == "Automatic" and ran == "Uniform":
            return "Automatic"
        return ran

    def read(self, params: Mapping[str, str], extras: dict[str, str], spec: FieldSpec,
             fields: dict[str, Any]) -> None:
        return None  # SamplerKey reads both keys


class EmphasisKey(InfotextKey):
    """``Emphasis``: as A1111, only when it is not Original and a prompt (or the negative)
    has brackets it could apply to."""

    def __init__(self) -> None:
        super().__init__("Emphasis", omit_default=True)

    def write(self, request: Any, spec: FieldSpec) -> Any:
        texts = (request.prompt, request.negative_prompt)
        if not any("(" in t or "[" in t for t in texts):
            return None
        return super().write(request, spec)


class SeedResizeKey(InfotextKey):
    """``Seed resize from: 512x768``, written when both sides are set."""

    def __init__(self) -> None:
        super().__init__("Seed resize from")

    def write(self, request: Any, spec: FieldSpec) -> Any:
        w, h = request.seed_resize_from_w, request.seed_resize_from_h
        return f"{w}x{h}" if w > 0 and h > 0 else None

    def read(self, params: Mapping[str, str], extras: dict[str, str], spec: FieldSpec,
             fields: dict[str, Any]) -> None:
        text = params.get(self.key, "").strip()
        if not text:
            return
        if text in ("-1x-1", "0x0"):
            return
        fields["seed_resize_from_w"], fields["seed_resize_from_h"] = parse_size(text)


class RngKey(InfotextKey):
    """``RNG: CPU``; A1111 writes no key for its default, the GPU generator."""

    def __init__(self) -> None:
        super().__init__("RNG")

    def write(self, request: Any, spec: FieldSpec) -> Any:
        return "CPU" if getattr(request, self.field) == "cpu" else None

    def read(self, params: Mapping[str, str], extras: dict[str, str], spec: FieldSpec,
             fields: dict[str, Any]) -> None:
        rng = params.get(self.key, "GPU").strip().upper()
        fields[self.field] = "cpu" if rng == "CPU" else "device"
        if rng not in ("CPU", "GPU"):
            extras[self.key] = params[self.key]


class FlagWordsKey(InfotextKey):
    """A flag written as words: ``Inpaint area: Only masked`` / ``Whole picture``."""

    def __init__(self, key: str, true_text: str, false_text: str,
                 modes: frozenset[Mode] = ALL_MODES) -> None:
        super().__init__(key, modes=modes)
        self.true_text, self.false_text = true_text, false_text

    def write(self, request: Any, spec: FieldSpec) -> Any:
        if request.mode not in self.modes or not getattr(request, self.field):
            return None
        return self.true_text

    def read(self, params: Mapping[str, str], extras: dict[str, str], spec: FieldSpec,
             fields: dict[str, Any]) -> None:
        if self.key not in params:
            return
        text = params[self.key].strip().lower()
        fields[self.field] = text == self.true_text.lower()
        if text not in (self.true_text.lower(), self.false_text.lower()):
            extras[self.key] = params[self.key]


# ----------------------------------------------------------------------------- hires fix
# A1111 writes these only for a txt2img image made with the hires fix; its txt2img paste
# turns the hires fix on when "Denoising strength" and one of them are there (ui.py:
# ``"Denoising strength" in d and ("Hires upscale" in d or "Hires upscaler" in d or
# "Hires resize-1" in d)``).
HIRES_MARKERS = ("Hires upscale", "Hires upscaler", "Hires resize")
DENOISING_STRENGTH = "Denoising strength"


def is_hires_text(params: Mapping[str, str]) -> bool:
    """Whether an infotext's parameters say the hires fix ran (as A1111 reads them)."""
    return DENOISING_STRENGTH in params and any(k in params for k in HIRES_MARKERS)


class ImageStrengthKey(InfotextKey):
    """``Denoising strength`` of image to image and inpaint. A1111 writes the same key for
    the hires fix's second pass in txt2img: a text with hires keys gives it to the hires
    fix (:class:`HiresKey` on ``hires_denoising``), not to the image strength."""

    def __init__(self, modes: frozenset[Mode]) -> None:
        super().__init__(DENOISING_STRENGTH, modes=modes)

    def read(self, params: Mapping[str, str], extras: dict[str, str], spec: FieldSpec,
             fields: dict[str, Any]) -> None:
        if not any(k in params for k in HIRES_MARKERS):
            super().read(params, extras, spec, fields)


class HiresKey(InfotextKey):
    """A hires fix key: written only when the hires pass runs (txt2img with hires on) and
    ``when(request)`` holds; read when present (``Denoising strength`` only from a hires
    text)."""

    def __init__(self, key: str, when: Callable[[Any], bool] = lambda r: True) -> None:
        super().__init__(key, modes=TXT2IMG_ONLY)
        self.when = when

    def write(self, request: Any, spec: FieldSpec) -> Any:
        if not runs_hires(request) or not self.when(request):
            return None
        return super().write(request, spec)

    def read(self, params: Mapping[str, str], extras: dict[str, str], spec: FieldSpec,
             fields: dict[str, Any]) -> None:
        if self.key == DENOISING_STRENGTH and not is_hires_text(params):
            return
        super().read(params, extras, spec, fields)


class HiresEnableKey(InfotextKey):
    """The hires fix's on/off: no key of its own (A1111 writes none); on when the text is a
    hires text (:func:`is_hires_text`)."""

    def __init__(self) -> None:
        super().__init__("Hires fix", modes=TXT2IMG_ONLY)

    def write(self, request: Any, spec: FieldSpec) -> Any:
        return None

    def read(self, params: Mapping[str, str], extras: dict[str, str], spec: FieldSpec,
             fields: dict[str, Any]) -> None:
        if is_hires_text(params):
            fields[self.field] = True


class HiresResizeKey(InfotextKey):
    """``Hires resize: 1024x768`` = hires_resize_x and hires_resize_y, written when either is
    set (A1111 writes "Hires upscale" instead when both are 0)."""

    def __init__(self) -> None:
        super().__init__("Hires resize", modes=TXT2IMG_ONLY)

    def write(self, request: Any, spec: FieldSpec) -> Any:
        w, h = request.hires_resize_x, request.hires_resize_y
        return f"{w}x{h}" if runs_hires(request) and (w or h) else None

    def read(self, params: Mapping[str, str], extras: dict[str, str], spec: FieldSpec,
             fields: dict[str, Any]) -> None:
        if self.key in params:
            fields["hires_resize_x"], fields["hires_resize_y"] = parse_size(params[self.key])


class HiresSamplerKey(HiresKey):
    """``Hires sampler``: written when it differs from the first pass's (as A1111); read as
    A1111 1.10 reads it (sd_samplers.get_hr_sampler_and_scheduler): an old combined name
    ("DPM++ 2M Karras") gives its schedule type too; an unknown name stays in extras."""

    def __init__(self) -> None:
        super().__init__("Hires sampler", lambda r: r.hires_sampler not in (
            USE_SAME_SAMPLER, r.sampler))

    def read(self, params: Mapping[str, str], extras: dict[str, str], spec: FieldSpec,
             fields: dict[str, Any]) -> None:
        text = params.get(self.key, "").strip()
        if not text or text == USE_SAME_SAMPLER:
            return
        sampler, schedule, unknown = resolve_sampler_and_schedule(text)
        if sampler is None or unknown:
            extras[self.key] = params[self.key]
            return
        fields[self.field] = sampler
        if schedule not in (None, "Automatic"):  # the name's own schedule ("... Karras")
            fields["hires_schedule_type"] = schedule


class HiresScheduleKey(HiresKey):
    """``Hires schedule type``: written when it differs from the first pass's; a schedule
    named by an old combined ``Hires sampler`` wins, as in A1111."""

    def __init__(self) -> None:
        super().__init__("Hires schedule type", lambda r: r.hires_schedule_type not in (
            USE_SAME_SCHEDULER, r.schedule_type))

    def read(self, params: Mapping[str, str], extras: dict[str, str], spec: FieldSpec,
             fields: dict[str, Any]) -> None:
        text = params.get(self.key, "").strip()
        if not text or text == USE_SAME_SCHEDULER or self.field in fields:
            return
        schedule = canonical_schedule(text)
        if schedule is None:
            extras[self.key] = params[self.key]
        else:
            fields[self.field] = schedule
