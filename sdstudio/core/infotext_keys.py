"""Infotext keys that are more than ``Key: value`` of one field (see :class:`InfotextKey`).

``Size`` carries width and height; ``Sampler`` folds A1111's separate ``Schedule type`` back
into our sampler names and reads other tools' spellings; ``RNG``'s absence means the GPU
generator; ``Inpaint area`` is a choice of words for a flag. Pure Python.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from typing import Any

from sdstudio.core.fields import ALL_MODES, FieldSpec, InfotextKey, Mode
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
