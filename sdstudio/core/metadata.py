"""Generation metadata: AUTOMATIC1111 "parameters" infotext and the sdstudio JSON chunk.

``to_infotext`` writes the text AUTOMATIC1111 puts in a PNG's ``parameters`` chunk::

    a photo of a cat, <lora:film:0.6>
    Negative prompt: blurry
    Steps: 20, Sampler: Euler a, CFG scale: 7, Seed: 1, Size: 512x512, Model hash: 0123456789, ...

``parse_infotext`` reads that text back, whether we, AUTOMATIC1111 (old and new sampler
naming), Fooocus (its A1111-compatible scheme) or Krita AI Diffusion wrote it. Keys that do
not map onto a request field are kept in ``extras``. The parsed request is *not* validated:
a caller that wants to run it calls ``request.validated()``.

Round trip: ``parse_infotext(to_infotext(r, info)).request`` equals ``r`` on every field the
infotext carries (prompt, negative prompt, steps, sampler, CFG scale, seed, size, clip skip,
rng; denoising strength for img2img/inpaint; mask blur, "only masked" and padding for inpaint),
provided the prompts have no leading/trailing whitespace, use "\\n" line breaks and no prompt
line starts with "Negative prompt:" (limits of the format itself). LoRAs given in
``request.loras`` are written as ``<lora:name:weight>`` tags after the prompt, so they come back
as tags in the prompt (``prompt_loras()`` gives the same LoRAs). The sdstudio JSON chunk
carries the whole request exactly.

Pure Python: no PIL, no Qt, no torch.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from sdstudio import __version__
from sdstudio.core.errors import MetadataError, RequestError
from sdstudio.core.request import (
    SAMPLER_NAMES,
    GenerationInfo,
    GenerationRequest,
    LoraSpec,
    Mode,
)

# AUTOMATIC1111's parameter regex (modules/infotext_utils.py): "Key: value" or "Key: "json""
RE_PARAM = re.compile(r'\s*(\w[\w \-/]+):\s*("(?:\\.|[^\\"])+"|[^,]*)(?:,|$)')
RE_IMAGESIZE = re.compile(r"^(\d+)x(\d+)$")

SDSTUDIO_FORMAT = "sdstudio"
SDSTUDIO_FORMAT_VERSION = 1
NEGATIVE_PREFIX = "Negative prompt:"
DEFAULT_SAMPLER: str = GenerationRequest.__dataclass_fields__["sampler"].default

# Keys whose values become request fields (or ParsedInfotext fields); everything else is extra.
_CONSUMED = frozenset({
    "Steps", "Sampler", "CFG scale", "Seed", "Size", "Model", "Model hash",
    "Denoising strength", "Mask blur", "Inpaint area", "Masked area padding", "Clip skip", "RNG",
})

# Sampler spellings used by other tools (ComfyUI/Fooocus internal names, old k-diffusion names)
_SAMPLER_ALIASES: dict[str, str] = {
    "k_euler_a": "Euler a", "k_euler_ancestral": "Euler a", "euler_ancestral": "Euler a",
    "euler a": "Euler a", "euler_a": "Euler a",
    "k_euler": "Euler", "euler": "Euler",
    "k_lms": "LMS", "lms": "LMS",
    "k_heun": "Heun", "heun": "Heun",
    "k_dpm_2": "DPM2", "dpm_2": "DPM2",
    "k_dpm_2_a": "DPM2 a", "k_dpm_2_ancestral": "DPM2 a", "dpm_2_ancestral": "DPM2 a",
    "dpmpp_2m": "DPM++ 2M", "k_dpmpp_2m": "DPM++ 2M",
    "dpmpp_sde": "DPM++ SDE", "dpmpp_sde_gpu": "DPM++ SDE",
    "dpmpp_2m_sde": "DPM++ 2M SDE", "dpmpp_2m_sde_gpu": "DPM++ 2M SDE",
    "ddim": "DDIM", "plms": "PLMS", "uni_pc": "UniPC", "uni_pc_bh2": "UniPC", "unipc": "UniPC",
}
_SAMPLERS_LOWER = {name.lower(): name for name in SAMPLER_NAMES}


@dataclass(frozen=True)
class ParsedInfotext:
    """What an infotext says: the request, the model it names, and every other key."""

    request: GenerationRequest
    extras: dict[str, str] = field(default_factory=dict)
    model_name: str = ""
    model_hash: str = ""


# ------------------------------------------------------------------------------ writing
def quote(value: object) -> str:
    """A value as AUTOMATIC1111 writes it: JSON-quoted when it holds ``,`` ``:`` or a newline.

    Also quoted (still valid for A1111's parser) when it starts with ``"`` or has surrounding
    whitespace, which would otherwise not survive parsing."""
    text = format_number(value) if isinstance(value, (int, float)) else str(value)
    if (
        "," in text or ":" in text or "\n" in text or "\r" in text
        or text.startswith('"') or text != text.strip()
    ):
        return json.dumps(text, ensure_ascii=False)
    return text


def unquote(text: str) -> str:
    if len(text) >= 2 and text[0] == '"' and text[-1] == '"':
        try:
            value = json.loads(text)
        except ValueError:
            return text
        return value if isinstance(value, str) else text
    return text


def format_number(value: float | int) -> str:
    """7 -> "7", 7.0 -> "7", 7.5 -> "7.5" (shortest text that reads back to the same float)."""
    if isinstance(value, bool):
        return str(value)
    if isinstance(value, int):
        return str(value)
    if math.isfinite(value) and value.is_integer() and abs(value) < 2**53:
        return str(int(value))
    return repr(float(value))


def _lora_name(name: str) -> str:
    # A1111 strips these from names in "Lora hashes" so the list stays parseable
    return name.replace(":", "").replace(",", "").strip()


def infotext_params(
    request: GenerationRequest, info: GenerationInfo | None = None
) -> dict[str, Any]:
    """The parameter line's keys and values, in AUTOMATIC1111's order (values unquoted)."""
    info = info or GenerationInfo()
    params: dict[str, Any] = {
        "Steps": request.steps,
        "Sampler": request.sampler,
        "CFG scale": request.cfg_scale,
        "Seed": request.seed,
        "Size": f"{request.width}x{request.height}",
    }
    if info.model_hash:
        params["Model hash"] = info.model_hash
    if info.model_name:
        params["Model"] = info.model_name
    if info.vae_sha256:
        params["VAE hash"] = info.vae_sha256[:10]
    if info.vae_name:
        params["VAE"] = info.vae_name
    mode = request.mode
    if mode in (Mode.IMG2IMG, Mode.INPAINT):
        params["Denoising strength"] = request.strength
    if request.clip_skip != 1:
        params["Clip skip"] = request.clip_skip
    if request.rng == "cpu":  # A1111: a missing RNG key means the GPU generator
        params["RNG"] = "CPU"
    if mode is Mode.INPAINT:
        params["Mask blur"] = request.mask_blur
        if request.inpaint_only_masked:
            params["Inpaint area"] = "Only masked"
            params["Masked area padding"] = request.inpaint_padding
    if info.lora_hashes:
        params["Lora hashes"] = ", ".join(
            f"{_lora_name(name)}: {digest}" for name, digest in info.lora_hashes.items()
        )
    params["Version"] = f"sdstudio {__version__}"
    return params


def to_infotext(request: GenerationRequest, info: GenerationInfo | None = None) -> str:
    """AUTOMATIC1111's infotext for ``request`` (the request of one image, its actual seed)."""
    prompt = request.prompt
    tags = "".join(f" <lora:{lo.name}:{format_number(lo.weight)}>" for lo in request.loras)
    if tags:
        prompt = (prompt + tags) if prompt else tags.strip()
    negative = f"\n{NEGATIVE_PREFIX} {request.negative_prompt}" if request.negative_prompt else ""
    params = infotext_params(request, info)
    line = ", ".join(f"{key}: {quote(value)}" for key, value in params.items())
    return f"{prompt}{negative}\n{line}".strip()


# ------------------------------------------------------------------------------ parsing
def split_params(line: str) -> dict[str, str]:
    """``Key: value, Key2: "quoted, value"`` -> {key: unquoted value} (last one wins)."""
    return {key.strip(): unquote(value.strip()) for key, value in RE_PARAM.findall(line)}


def parse_infotext(text: str) -> ParsedInfotext:
    """Parse AUTOMATIC1111-style infotext (ours, A1111, Fooocus, Krita AI Diffusion).

    Raises MetadataError, and nothing else, when the text is not infotext or a value of a
    known key is malformed."""
    if not isinstance(text, str):
        raise MetadataError(f"generation parameters must be text, not {type(text).__name__}")
    try:
        return _parse_infotext(text)
    except MetadataError:
        raise
    except (ValueError, TypeError, KeyError, IndexError, OverflowError, RequestError) as exc:
        raise MetadataError(f"generation parameters cannot be read: {exc}") from exc


def _parse_infotext(text: str) -> ParsedInfotext:
    text = text.replace("\r\n", "\n").replace("\x00", "").strip()
    if not text:
        raise MetadataError("generation parameters are empty")
    *lines, last = text.split("\n")
    if len(RE_PARAM.findall(last)) < 3:
        raise MetadataError(
            "not generation parameters: the last line is not a 'Steps: ..., Sampler: ...' line"
        )
    params = split_params(last)
    if "Steps" not in params:
        raise MetadataError("not generation parameters: no 'Steps' value")

    prompt_lines: list[str] = []
    negative_lines: list[str] = []
    target = prompt_lines
    for line in lines:
        if target is prompt_lines and line.lstrip().startswith(NEGATIVE_PREFIX):
            target = negative_lines
            line = line.lstrip()[len(NEGATIVE_PREFIX):]
            if line.startswith(" "):
                line = line[1:]
        target.append(line)
    prompt = "\n".join(prompt_lines).strip()
    negative = "\n".join(negative_lines).strip()

    extras = {k: v for k, v in params.items() if k not in _CONSUMED}
    fields: dict[str, Any] = {"prompt": prompt, "negative_prompt": negative}
    fields["steps"] = _int(params, "Steps")
    if "CFG scale" in params:
        fields["cfg_scale"] = _float(params, "CFG scale")
    if "Seed" in params:
        fields["seed"] = _int(params, "Seed")
    if "Size" in params:
        m = RE_IMAGESIZE.match(params["Size"].strip())
        if not m:
            raise MetadataError(f"Size {params['Size']!r} is not WIDTHxHEIGHT")
        fields["width"], fields["height"] = int(m.group(1)), int(m.group(2))
    if "Denoising strength" in params:
        fields["strength"] = _float(params, "Denoising strength")
    if "Mask blur" in params:
        fields["mask_blur"] = _int(params, "Mask blur")
    if "Inpaint area" in params:
        area = params["Inpaint area"].strip().lower()
        fields["inpaint_only_masked"] = area == "only masked"
        if area not in ("only masked", "whole picture"):
            extras["Inpaint area"] = params["Inpaint area"]
    if "Masked area padding" in params:
        fields["inpaint_padding"] = _int(params, "Masked area padding")
    if "Clip skip" in params:
        fields["clip_skip"] = _int(params, "Clip skip")
    rng = params.get("RNG", "GPU").strip().upper()
    fields["rng"] = "cpu" if rng == "CPU" else "device"
    if rng not in ("CPU", "GPU"):
        extras["RNG"] = params["RNG"]

    sampler, used_schedule = _resolve_sampler(
        params.get("Sampler", ""), params.get("Schedule type") or params.get("Scheduler") or ""
    )
    if sampler is None:
        if "Sampler" in params:
            extras["Sampler"] = params["Sampler"]
        sampler = DEFAULT_SAMPLER
    if used_schedule:
        extras.pop("Schedule type", None)
        extras.pop("Scheduler", None)
    fields["sampler"] = sampler

    loras = _fooocus_loras(extras.get("Lora weights", ""))
    if loras:
        fields["loras"] = loras
        extras.pop("Lora weights")

    model_hash = params.get("Model hash", "").strip()
    if model_hash.lower() in ("unknown", "none"):
        model_hash = ""
    return ParsedInfotext(
        request=GenerationRequest(**fields),
        extras=extras,
        model_name=params.get("Model", "").strip(),
        model_hash=model_hash,
    )


def _int(params: Mapping[str, str], key: str) -> int:
    text = params[key].strip()
    try:
        return int(text)
    except ValueError:
        try:
            value = float(text)
        except ValueError:
            value = math.nan
        if math.isfinite(value) and value.is_integer():
            return int(value)
        raise MetadataError(f"{key} {params[key]!r} is not a whole number") from None


def _float(params: Mapping[str, str], key: str) -> float:
    try:
        value = float(params[key].strip())
    except ValueError:
        raise MetadataError(f"{key} {params[key]!r} is not a number") from None
    if not math.isfinite(value):
        raise MetadataError(f"{key} {params[key]!r} is not a finite number")
    return value


def _known_sampler(name: str) -> str | None:
    key = name.strip().lower()
    return _SAMPLERS_LOWER.get(key) or _SAMPLER_ALIASES.get(key)


def _resolve_sampler(name: str, schedule: str) -> tuple[str | None, bool]:
    """(our sampler name or None, whether the schedule type was folded into it).

    "DPM++ 2M" + "Karras" -> "DPM++ 2M Karras"; "Automatic" (or none) keeps the sampler;
    Krita's "Default - DPM++ 2M" preset names give the part after " - "."""
    name = name.strip()
    if not name:
        return None, False
    candidates = [name]
    if " - " in name:
        candidates.append(name.rsplit(" - ", 1)[1])
    schedule = schedule.strip().lower()
    for candidate in candidates:
        base = _known_sampler(candidate)
        if base is None:
            continue
        if schedule == "karras" and not base.endswith("Karras"):
            combined = _known_sampler(f"{base} Karras")
            if combined:
                return combined, True
            return base, False  # e.g. "Euler a" + Karras: keep the schedule as an extra
        return base, schedule in ("", "automatic", "karras")
    return None, False


def _fooocus_loras(text: str) -> tuple[LoraSpec, ...]:
    """Fooocus' ``Lora weights: "name: 0.5, other: 1"`` -> LoRAs (empty if unparseable)."""
    out: list[LoraSpec] = []
    for item in (part.strip() for part in text.split(",")):
        if not item:
            continue
        name, sep, weight = item.rpartition(":")
        if not sep or not name.strip():
            return ()
        try:
            out.append(LoraSpec(name.strip(), float(weight)))
        except ValueError:
            return ()
    return tuple(out)


# ------------------------------------------------------------------- sdstudio JSON chunk
def _json_default(value: object) -> Any:
    if isinstance(value, (set, frozenset)):
        return sorted(value, key=str)
    if isinstance(value, Mapping):
        return dict(value)
    return str(value)


def to_sdstudio_json(request: GenerationRequest, info: GenerationInfo | None = None) -> str:
    """The complete request and info as JSON, with a format name and version."""
    data = {
        "format": SDSTUDIO_FORMAT,
        "version": SDSTUDIO_FORMAT_VERSION,
        "app": f"sdstudio {__version__}",
        "request": request.to_dict(),
        "info": (info or GenerationInfo()).to_dict(),
    }
    return json.dumps(data, ensure_ascii=False, sort_keys=True, default=_json_default)


def parse_sdstudio_json(text: str | bytes) -> tuple[GenerationRequest, GenerationInfo]:
    """Inverse of ``to_sdstudio_json``. Raises MetadataError (only) on anything unusable."""
    try:
        data = json.loads(text)
    except (ValueError, TypeError) as exc:
        raise MetadataError(f"sdstudio metadata is not valid JSON: {exc}") from exc
    if not isinstance(data, dict) or data.get("format") != SDSTUDIO_FORMAT:
        raise MetadataError("not sdstudio metadata (no 'format': 'sdstudio' key)")
    version = data.get("version")
    if not isinstance(version, int) or isinstance(version, bool) or version < 1:
        raise MetadataError(f"sdstudio metadata has an invalid format version {version!r}")
    req_data = data.get("request")
    info_data = data.get("info", {})
    if not isinstance(req_data, dict) or not isinstance(info_data, dict):
        raise MetadataError("sdstudio metadata lacks the request or info object")
    if version > SDSTUDIO_FORMAT_VERSION:  # written by a newer SD Studio: keep what we know
        known = set(GenerationRequest.__dataclass_fields__)
        req_data = {k: v for k, v in req_data.items() if k in known}
    try:
        request = GenerationRequest.from_dict(req_data)
        info = GenerationInfo.from_dict(info_data)
    except RequestError as exc:
        raise MetadataError(f"sdstudio metadata has a bad request: {exc}") from exc
    except (ValueError, TypeError, KeyError) as exc:
        raise MetadataError(f"sdstudio metadata cannot be read: {exc}") from exc
    return request, info
