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
    TIMESTEP_SAMPLERS,
    canonical_sampler,
    canonical_schedule,
    effective_schedule,
    split_combined,
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
    """``Sampler`` (+ A1111 1.9's ``Schedule type``, or ``Scheduler``): "DPM++ 2M" +
    "Karras" is sampler DPM++ 2M, schedule type Karras; the older combined "DPM++ 2M Karras"
    is the same; Krita's "Default - DPM++ 2M" preset names give the part after " - ". An
    unknown sampler or schedule stays in extras and the request keeps its default
    (validation would refuse it)."""

    SCHEDULE_KEYS = ("Schedule type", "Scheduler")

    def __init__(self) -> None:
        super().__init__("Sampler", consumes=("Sampler", *self.SCHEDULE_KEYS))

    def read(self, params: Mapping[str, str], extras: dict[str, str], spec: FieldSpec,
             fields: dict[str, Any]) -> None:
        schedule_key = next((k for k in self.SCHEDULE_KEYS if params.get(k)), "")
        schedule_text = params.get(schedule_key, "") if schedule_key else ""
        sampler = resolve_sampler(params.get("Sampler", ""))
        if sampler is None and "Sampler" in params:
            extras["Sampler"] = params["Sampler"]
        schedule = canonical_schedule(schedule_text) if schedule_text else None
        if schedule_text and schedule is None:
            extras[schedule_key] = params[schedule_key]
        if sampler is not None:
            pair = split_combined(sampler)
            if pair is not None:
                sampler, folded = pair
                schedule = schedule or folded
            fields[self.field] = sampler
        if schedule is not None:
            fields["schedule_type"] = schedule


def resolve_sampler(name: str) -> str | None:
    """Our sampler name (maybe a combined one) for an infotext's ``Sampler``, or None."""
    name = name.strip()
    if not name:
        return None
    candidates = [name]
    if " - " in name:
        candidates.append(name.rsplit(" - ", 1)[1])
    for candidate in candidates:
        base = canonical_sampler(candidate)
        if base is not None:
            return base
    return None


class ScheduleKey(InfotextKey):
    """``Schedule type`` as A1111 1.10 writes it: the schedule that ran, whenever it is not
    Automatic or Automatic is not Uniform for the sampler. Read together with ``Sampler``
    (see :class:`SamplerKey`)."""

    def __init__(self) -> None:
        super().__init__("Schedule type", consumes=SamplerKey.SCHEDULE_KEYS)

    def write(self, request: Any, spec: FieldSpec) -> Any:
        schedule = request.schedule_type
        ran = effective_schedule(request.sampler, schedule)
        if schedule == "Automatic" and ran == "Uniform":
            return None
        return None if request.sampler in TIMESTEP_SAMPLERS else ran

    def read(self, params: Mapping[str, str], extras: dict[str, str], spec: FieldSpec,
             fields: dict[str, Any]) -> None:
        return None  # SamplerKey reads both keys


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
