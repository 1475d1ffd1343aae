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
from sdstudio.core.sampler_names import canonical_sampler

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
    """``Sampler`` (+ A1111 1.9's ``Schedule type``, or ``Scheduler``): "DPM++ 2M" + "Karras"
    is our "DPM++ 2M Karras"; "Automatic" keeps the sampler; Krita's "Default - DPM++ 2M"
    preset names give the part after " - ". An unknown sampler stays in extras and the
    request keeps its default (validation would refuse it)."""

    SCHEDULE_KEYS = ("Schedule type", "Scheduler")

    def __init__(self) -> None:
        super().__init__("Sampler", consumes=("Sampler", *self.SCHEDULE_KEYS))

    def read(self, params: Mapping[str, str], extras: dict[str, str], spec: FieldSpec,
             fields: dict[str, Any]) -> None:
        schedule_key = next((k for k in self.SCHEDULE_KEYS if params.get(k)), "")
        sampler, folded = resolve_sampler(params.get("Sampler", ""),
                                          params.get(schedule_key, "") if schedule_key else "")
        if sampler is None and "Sampler" in params:
            extras["Sampler"] = params["Sampler"]
        if sampler is not None:
            fields[self.field] = sampler
        if not folded:
            for key in self.SCHEDULE_KEYS:
                if key in params:
                    extras[key] = params[key]


def resolve_sampler(name: str, schedule: str) -> tuple[str | None, bool]:
    """(our sampler name or None, whether the schedule type was folded into it)."""
    name = name.strip()
    if not name:
        return None, False
    candidates = [name]
    if " - " in name:
        candidates.append(name.rsplit(" - ", 1)[1])
    schedule = schedule.strip().lower()
    for candidate in candidates:
        base = canonical_sampler(candidate)
        if base is None:
            continue
        if schedule == "karras" and not base.endswith("Karras"):
            combined = canonical_sampler(f"{base} Karras")
            if combined:
                return combined, True
            return base, False  # e.g. "Euler a" + Karras: keep the schedule as an extra
        return base, schedule in ("", "automatic", "karras")
    return None, False


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
