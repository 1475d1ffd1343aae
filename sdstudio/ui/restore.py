"""What restoring an image's parameters says: what was applied, and what could not be.

Pure Python (no widgets), so the wording is testable on its own; the window applies the
values and calls :func:`restore_message` with the notes its controls returned.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from sdstudio.core.errors import RequestError
from sdstudio.core.paths import ADDON_SUFFIXES
from sdstudio.core.request import FIELDS, GenerationRequest

# Always named in the message (the values people check first), then every other field the
# request sets to something other than its default.
_HEADLINE = ("seed", "steps", "sampler", "cfg_scale", "width")
# Infotext keys that describe the image but set nothing (hashes, the writing app).
INFORMATIONAL_KEYS = frozenset({"Version", "VAE hash", "Lora hashes", "TI hashes",
                                "Model hash", "Hashes"})


def summary(request: GenerationRequest) -> list[str]:
    """Short descriptions of the restored values: "seed 1", "20 steps", "512×768", ..."""
    parts = ["prompt"]
    if request.negative_prompt:
        parts.append("negative prompt")
    by_name = {s.name: s for s in FIELDS}
    names = [*_HEADLINE, *(s.name for s in FIELDS if s.name not in _HEADLINE
                           and s.name not in ("prompt", "negative_prompt", "height")
                           and getattr(request, s.name) != s.default)]
    for name in names:
        if name in ("init_image", "mask"):
            continue
        spec = by_name[name]
        value = getattr(request, name)
        if request.mode not in spec.modes:
            continue
        if name == "width":
            parts.append(f"{request.width}×{request.height}")
        elif name == "steps":
            parts.append(f"{value} steps")
        elif name == "sampler":
            parts.append(str(value))
        elif name == "cfg_scale":
            parts.append(f"CFG {spec.display(value)}")
        elif name == "loras":
            parts.append(f"{len(value)} LoRA{'s' if len(value) != 1 else ''}")
        elif spec.kind == "bool":
            parts.append(_lower(spec.label) if value else f"not {_lower(spec.label)}")
        else:
            parts.append(f"{_lower(spec.label)} {spec.display(value) or 'automatic'}")
    return parts


def _lower(label: str) -> str:
    """"Clip skip" -> "clip skip"; "RNG" and "VAE" stay."""
    return label if label[1:2].isupper() else label[:1].lower() + label[1:]


def missing_loras(request: GenerationRequest, installed: Iterable[str]) -> list[str]:
    """Names of the request's LoRAs (tags and ``loras``) that no installed file matches."""
    names = {n.lower() for n in installed}
    stems = {n.rsplit("/", 1)[-1] for n in names}
    try:
        _, loras = request.prompt_loras()
    except RequestError:
        return []
    out = []
    for lora in loras:
        wanted = lora.name.replace("\\", "/").strip().lower()
        for suffix in ADDON_SUFFIXES:
            wanted = wanted.removesuffix(suffix)
        if wanted not in names and wanted.rsplit("/", 1)[-1] not in stems \
                and lora.name not in out:
            out.append(lora.name)
    return out


def restore_message(name: str, parts: list[str], notes: list[str],
                    extras: Mapping[str, str] | None = None) -> str:
    """One message: what was restored, then everything that was not applied."""
    text = f"Restored from {name}: {', '.join(parts)}."
    unapplied = list(notes)
    unapplied += [f"{key}: {value}" for key, value in (extras or {}).items()
                  if key not in INFORMATIONAL_KEYS]
    if unapplied:
        text += " Not applied: " + "; ".join(unapplied) + "."
    return text


def find_model(entries: list[dict[str, Any]], current: str, model: str, name: str,
           short_hash: str) -> str | None:
    """The model to use for a restored request: its own path when it still exists, else
    an installed model with that name or hash; None when there is none."""
    known = {str(e.get("path", "")) for e in entries}
    if model and (model == current or model in known):
        return model
    if not model and not name:
        return current
    wanted = {v.lower() for v in (model, name, Path(model).stem, Path(name).stem) if v}
    for entry in entries:
        entry_name = str(entry.get("name", ""))
        names = {entry_name.lower(), Path(entry_name).stem.lower(),
                 Path(str(entry.get("path", ""))).stem.lower()}
        digest = str(entry.get("short_hash") or "")
        if names & wanted or (short_hash and digest == short_hash.lower()):
            return str(entry.get("path", ""))
    return None
