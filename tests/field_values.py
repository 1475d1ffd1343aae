"""Test values for request fields, chosen from the field table alone (so new fields are
covered by the tests that walk the table)."""

from __future__ import annotations

from typing import Any

from sdstudio.core.control import ControlUnit
from sdstudio.core.fields import FieldSpec
from sdstudio.core.request import LoraSpec


def other_value(spec: FieldSpec) -> Any:
    """A valid value other than the default, from the field's spec alone."""
    if spec.kind == "int":
        lo = int(spec.minimum if spec.minimum is not None else 0)
        value = spec.default + (spec.multiple_of or 1) * 3
        if spec.maximum is not None and value > spec.maximum:
            value = lo
        return max(value, lo)
    if spec.kind == "float":
        hi = spec.maximum if spec.maximum is not None else spec.default + 1
        return round((spec.default + hi) / 2, 2) if spec.default != hi else round(hi / 2, 2)
    if spec.kind == "bool":
        return not spec.default
    if spec.kind == "choice":
        return next(c for c in reversed(spec.choices) if c != spec.default)
    if spec.kind == "text":
        return f"some {spec.name.replace('_', ' ')}"
    if spec.kind == "loras":
        return (LoraSpec("film grain", 0.6),)
    if spec.kind == "units":  # control units: what an infotext carries (no image)
        return (ControlUnit("control_sd15_canny", weight=0.5, guidance_end=0.8,
                            control_mode="My prompt is more important"),)
    if spec.kind == "model":
        return "vae-ft-mse" if spec.name == "vae" else f"some-{spec.name}"
    if spec.kind == "path":
        return f"/inputs/{spec.name}.png"
    raise AssertionError(f"no test value for {spec.name} ({spec.kind})")
