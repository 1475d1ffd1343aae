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
from sdstudio.core.fields import FieldSpec, InfotextKey, infotext_keys
from sdstudio.core.request import FIELD_NAMES, GenerationInfo, GenerationRequest, LoraSpec

# AUTOMATIC1111's parameter regex (modules/infotext_utils.py): "Key: value" or "Key: "json""
RE_PARAM = re.compile(r'\s*(\w[\w \-/]+):\s*("(?:\\.|[^\\"])+"|[^,]*)(?:,|$)')

SDSTUDIO_FORMAT = "sdstudio"
SDSTUDIO_FORMAT_VERSION = 1
NEGATIVE_PREFIX = "Negative prompt:"

# Keys the info (not the request) supplies: read into ParsedInfotext, never extras.
_INFO_KEYS = frozenset({"Model", "Model hash"})


def _request_keys() -> list[tuple[InfotextKey, FieldSpec]]:
    return infotext_keys(GenerationRequest)


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
    params: dict[str, Any] = {}
    for key, sp in _request_keys():
        _put(params, key.key, key.write(request, sp))
    _put(params, "Model hash", info.model_hash or None)
    _put(params, "Model", info.model_name or None)
    _put(params, "VAE hash", info.vae_sha256[:10] or None)
    _put(params, "VAE", info.vae_name or None)
    if info.lora_hashes:
        params["Lora hashes"] = ", ".join(
            f"{_lora_name(name)}: {digest}" for name, digest in info.lora_hashes.items()
        )
    params["Version"] = f"sdstudio {__version__}"
    extra = _A1111_ORDER.index(_EXTRA)
    ranked = sorted(enumerate(params), key=lambda p: (
        _A1111_ORDER.index(p[1]) if p[1] in _A1111_ORDER else extra, p[0]))
    return {key: params[key] for _, key in ranked}


# The order of AUTOMATIC1111's parameter line (modules/processing.py create_infotext): its
# own keys, then the extra generation parameters (img2img's mask keys, hires fix, LoRA
# hashes, ...) in the order they were added, then the version. Keys not named here are extras.
_EXTRA = "*extra*"
_A1111_ORDER = (
    "Steps", "Sampler", "Schedule type", "CFG scale", "Image CFG scale", "Seed", "Size",
    "Model hash", "Model", "VAE hash", "VAE", "Variation seed", "Variation seed strength",
    "Seed resize from", "Denoising strength", "Clip skip", "RNG",
    "Mask blur", "Inpaint area", "Masked area padding", _EXTRA, "Lora hashes", "Version",
)


def _put(params: dict[str, Any], key: str, value: Any) -> None:
    if value is not None:
        params[key] = value


def to_infotext(request: GenerationRequest, info: GenerationInfo | None = None) -> str:
    """AUTOMATIC1111's infotext for ``request`` (the request of one image, its actual seed)."""
    prompt = request.prompt_with_lora_tags()
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

    keys = _request_keys()
    consumed = _INFO_KEYS.union(*(k.consumes for k, _ in keys))
    extras = {k: v for k, v in params.items() if k not in consumed}
    fields: dict[str, Any] = {"prompt": prompt, "negative_prompt": negative}
    for key, sp in keys:
        try:
            key.read(params, extras, sp, fields)
        except ValueError as exc:
            raise MetadataError(str(exc)) from None

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
        known = set(FIELD_NAMES)
        req_data = {k: v for k, v in req_data.items() if k in known}
    try:
        request = GenerationRequest.from_dict(req_data)
        info = GenerationInfo.from_dict(info_data)
    except RequestError as exc:
        raise MetadataError(f"sdstudio metadata has a bad request: {exc}") from exc
    except (ValueError, TypeError, KeyError) as exc:
        raise MetadataError(f"sdstudio metadata cannot be read: {exc}") from exc
    return request, info
