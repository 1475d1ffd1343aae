"""Generation metadata: AUTOMATIC1111 "parameters" infotext and the sdstudio JSON chunk.

``to_infotext`` writes the text AUTOMATIC1111 puts in a PNG's ``parameters`` chunk::

    a photo of a cat, <lora:film:0.6>
    Negative prompt: blurry
    Steps: 20, Sampler: Euler a, CFG scale: 7, Seed: 1, Size: 512x512, Model hash: 0123456789, ...

``parse_infotext`` reads that text back as AUTOMATIC1111 1.10's parse_generation_parameters
reads it, whether we, A1111 (old combined sampler names, or 1.9's separate "Schedule type"),
Forge, Fooocus (its A1111-compatible scheme) or Krita AI Diffusion wrote it: a text whose last
line has fewer than three ``Key: value`` pairs is all prompt; each prompt line is stripped; an
old "First pass size" hires text is converted as A1111 converts it. Keys that do not map onto
a request field are kept in ``extras``. The parsed request is *not* validated: a caller that
wants to run it calls ``request.validated()``.

Round trip: ``parse_infotext(to_infotext(r, info)).request`` equals ``r`` on every field the
infotext carries (prompt, negative prompt, steps, sampler, schedule type, CFG scale, seed,
size, variation seed and strength, seed resize, clip skip, emphasis, rng; denoising strength
for img2img/inpaint; mask blur, "only masked" and padding for inpaint), provided the prompts
have no leading/trailing whitespace on any line, use "\\n" line breaks and no prompt line
starts with "Negative prompt:" (limits of the format itself). One exception, A1111's own: the
schedule type "Automatic" is written as the schedule it runs ("Karras" for DPM++ 2M), so it
reads back as that schedule, which runs the same sigmas. LoRAs given in ``request.loras`` are
written as ``<lora:name:weight>`` tags after the prompt, so they come back as tags in the
prompt (``prompt_loras()`` gives the same LoRAs). The sdstudio JSON chunk carries the whole
request exactly.

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
from sdstudio.core.infotext_keys import parse_size
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
    """What an infotext says: the request, the model it names, and every other key.

    ``params``: the parameter line's keys and values as AUTOMATIC1111 reads them (quotes
    undone; empty values dropped, as A1111 drops them). ``extras``: the keys no request
    field took (unknown keys, hashes, the version); an old "First pass size" is converted
    to the hires fix's size fields. ``lora_hashes`` / ``ti_hashes``: A1111's "Lora hashes" / "TI
    hashes" as {name: short hash}."""

    request: GenerationRequest
    extras: dict[str, str] = field(default_factory=dict)
    model_name: str = ""
    model_hash: str = ""
    params: dict[str, str] = field(default_factory=dict)
    lora_hashes: dict[str, str] = field(default_factory=dict)
    ti_hashes: dict[str, str] = field(default_factory=dict)


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


def _hash_list(hashes: Mapping[str, str]) -> str | None:
    """A1111's "Lora hashes" / "TI hashes" value: "name: hash, name2: hash2", the names
    without ":" and "," (A1111 removes them so the list stays parseable), each hash its
    12-digit short form (a full sha256 is cut to it)."""
    items = [f"{name.replace(':', '').replace(',', '').strip()}: "
             f"{digest[:12] if len(digest) == 64 else digest}"
             for name, digest in hashes.items() if digest]
    return ", ".join(items) or None


def infotext_params(
    request: GenerationRequest, info: GenerationInfo | None = None
) -> dict[str, Any]:
    """The parameter line's keys and values, in AUTOMATIC1111's order (values unquoted)."""
    info = info or GenerationInfo()
    params: dict[str, Any] = {}
    for key, sp in _request_keys():
        for name, value in key.items(request, sp, info):
            _put(params, name, value)
    _put(params, "Model hash", info.model_hash or None)
    _put(params, "Model", info.model_name or None)
    _put(params, "VAE hash", info.vae_sha256[:10] or None)
    _put(params, "VAE", info.vae_name or None)
    _put(params, "Lora hashes", _hash_list(info.lora_hashes))
    _put(params, "TI hashes", _hash_list(info.ti_hashes))
    params["Version"] = f"sdstudio {__version__}"
    extra = _A1111_ORDER.index(_EXTRA)
    ranked = sorted(enumerate(params), key=lambda p: (
        _A1111_ORDER.index(p[1]) if p[1] in _A1111_ORDER else extra, p[0]))
    return {key: params[key] for _, key in ranked}


# The order of AUTOMATIC1111 1.10's parameter line (modules/processing.py create_infotext):
# its own keys, then the extra generation parameters in the order they are added (img2img's
# mask keys at init, hires fix, then "Lora hashes" when the LoRAs are activated, then the
# text encoder's "TI hashes" and "Emphasis"), then the version. Keys not named here are
# extras, written where A1111 writes extras.
_EXTRA = "*extra*"
_A1111_ORDER = (
    "Steps", "Sampler", "Schedule type", "CFG scale", "Image CFG scale", "Seed",
    "Face restoration", "Size", "Model hash", "Model", "VAE hash", "VAE", "Variation seed",
    "Variation seed strength", "Seed resize from", "Denoising strength",
    "Conditional mask weight", "Clip skip", "ENSD", "Token merging ratio", "RNG", "Tiling",
    "Mask blur", "Inpaint area", "Masked area padding", _EXTRA, "Lora hashes", "TI hashes",
    "Emphasis", "Version",
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
    """``Key: value, Key2: "quoted, value"`` -> {key: unquoted value} (last one wins), as
    AUTOMATIC1111's parse_generation_parameters reads the line: a key with an empty value
    is dropped (A1111 fails on it and skips it)."""
    out: dict[str, str] = {}
    for key, value in RE_PARAM.findall(line):
        value = value.strip()
        if value:
            out[key.strip()] = unquote(value)
    return out


def split_prompt(lines: list[str]) -> tuple[str, str]:
    """(prompt, negative prompt) from the lines before the parameter line, as A1111 splits
    them: every line stripped, the first one starting with "Negative prompt:" starts the
    negative prompt."""
    prompt: list[str] = []
    negative: list[str] = []
    target = prompt
    for line in lines:
        line = line.strip()
        if target is prompt and line.startswith(NEGATIVE_PREFIX):
            target = negative
            line = line[len(NEGATIVE_PREFIX):].strip()
        target.append(line)
    return "\n".join(prompt), "\n".join(negative)


def parse_infotext(text: str) -> ParsedInfotext:
    """Parse AUTOMATIC1111-style infotext (ours, A1111, Forge, Fooocus, Krita AI Diffusion)
    as A1111 1.10 parses it: a last line with fewer than three ``Key: value`` pairs is part
    of the prompt, so any text is at least a prompt.

    Raises MetadataError, and nothing else, when the text is empty or a value of a known
    key is malformed."""
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
        lines.append(last)
        last = ""
    prompt, negative = split_prompt(lines)
    params = split_params(last)
    converted = _old_hires_fix(params)
    keys = _request_keys()
    consumed = _INFO_KEYS.union(*(k.consumes for k, _ in keys))
    extras = {k: v for k, v in params.items() if k not in consumed}
    read = {**params, **converted}
    if converted:  # its "Hires resize" is read by the hires fix's fields
        extras.pop("First pass size", None)
    fields: dict[str, Any] = {"prompt": prompt, "negative_prompt": negative}
    for key, sp in keys:
        try:
            key.read(read, extras, sp, fields)
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
        params=params,
        lora_hashes=parse_hash_list(params.get("Lora hashes", "")),
        ti_hashes=parse_hash_list(params.get("TI hashes", "")),
    )


def old_hires_first_pass(width: int, height: int) -> tuple[int, int]:
    """A1111's size for "First pass size: 0x0" (processing.old_hires_fix_first_pass_
    dimensions): about 512x512 pixels in the final aspect, each side rounded up to 64."""
    scale = math.sqrt(512 * 512 / (width * height))
    return math.ceil(scale * width / 64) * 64, math.ceil(scale * height / 64) * 64


def _old_hires_fix(params: Mapping[str, str]) -> dict[str, str]:
    """A1111's restore_old_hires_fix_params: an infotext from before January 2023 with
    ``First pass size`` made its image at that size, then upscaled to ``Size``; today that is
    ``Size`` = the first pass and ``Hires resize`` = the old Size. {} when there is none."""
    first = params.get("First pass size")
    if first is None:
        return {}
    try:
        fw, fh = parse_size(first)
        width, height = parse_size(params.get("Size", "512x512"))
    except ValueError:
        return {}
    if fw == 0 or fh == 0:
        if width <= 0 or height <= 0:
            return {}
        fw, fh = old_hires_first_pass(width, height)
    return {"Size": f"{fw}x{fh}", "Hires resize": f"{width}x{height}"}


def parse_hash_list(text: str) -> dict[str, str]:
    """A1111's "Lora hashes" / "TI hashes" ("name: hash, name2: hash2") as {name: hash};
    items without a ":" are skipped."""
    out: dict[str, str] = {}
    for item in text.split(","):
        name, sep, digest = item.partition(":")
        if sep and name.strip() and digest.strip():
            out[name.strip()] = digest.strip()
    return out


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
