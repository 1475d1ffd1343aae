"""GenerationRequest: one immutable value that carries everything that determines an image.

The window, the CLI and the batch runner all build one of these; the worker hands it to the
engine; the PNG metadata is derived from it and parsing that metadata gives it back.

Images (init image, mask) travel as file paths so the request stays a small, hashable,
serialisable value; the window saves pasted or painted images to the data folder first.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import Enum
from typing import Any

from sdstudio.core.errors import RequestError

# Sampler names as people know them from AUTOMATIC1111. engine/samplers.py maps each one to a
# diffusers scheduler; a test checks the two lists agree.
SAMPLER_NAMES: tuple[str, ...] = (
    "Euler a",
    "Euler",
    "DPM++ 2M",
    "DPM++ 2M Karras",
    "DPM++ SDE",
    "DPM++ SDE Karras",
    "DPM++ 2M SDE",
    "DPM++ 2M SDE Karras",
    "DPM2",
    "DPM2 a",
    "DDIM",
    "PLMS",
    "LMS",
    "LMS Karras",
    "Heun",
    "UniPC",
)

RESIZE_MODES: tuple[str, ...] = ("resize", "crop", "fill")

MAX_SIDE = 8192  # pixels per side
MAX_PIXELS = 4096 * 4096  # per image; refused before anything is allocated
MAX_STEPS = 1000
MAX_BATCH_SIZE = 64
MAX_BATCH_COUNT = 10000
MAX_SEED = 2**32 - 1

_LORA_TAG = re.compile(r"<lora:([^:>]+)(?::([^:>]*))?(?::[^>]*)?>")


class Mode(str, Enum):
    TXT2IMG = "txt2img"
    IMG2IMG = "img2img"
    INPAINT = "inpaint"


@dataclass(frozen=True)
class LoraSpec:
    """A LoRA to apply: a name (resolved in the LoRA folders) or a path, and its weight."""

    name: str
    weight: float = 1.0


@dataclass(frozen=True)
class GenerationRequest:
    prompt: str
    negative_prompt: str = ""
    width: int = 512
    height: int = 512
    steps: int = 20
    cfg_scale: float = 7.0
    seed: int = -1  # -1 = random; the engine records the seed it used
    sampler: str = "Euler a"
    batch_size: int = 1  # images per run (one denoising call)
    batch_count: int = 1  # number of runs
    strength: float = 0.75  # denoising strength for img2img and inpaint
    init_image: str | None = None  # path of the source image (img2img, inpaint)
    mask: str | None = None  # path of the mask (white = repaint); needs init_image
    mask_blur: int = 4  # pixels
    inpaint_only_masked: bool = False  # work on the masked area's bounding box at full res
    inpaint_padding: int = 32  # pixels around that box
    resize_mode: str = "resize"  # how the init image fits width x height: resize, crop, fill
    model: str = ""  # path, name in the model folders, or hub id; "" = configured or demo
    vae: str = ""  # separate VAE file; "" = the model's own
    loras: tuple[LoraSpec, ...] = ()  # besides the <lora:name:w> tags in the prompt
    clip_skip: int = 1
    rng: str = "cpu"  # where the initial noise is drawn: "cpu" (same on every device) or "device"

    # ----------------------------------------------------------------------------- derived
    @property
    def mode(self) -> Mode:
        if self.init_image and self.mask:
            return Mode.INPAINT
        if self.init_image:
            return Mode.IMG2IMG
        return Mode.TXT2IMG

    @property
    def image_count(self) -> int:
        return self.batch_size * self.batch_count

    def seeds(self, first_seed: int) -> list[int]:
        """Seeds of every image, in order: A1111's convention of seed + image index."""
        return [(first_seed + i) % (MAX_SEED + 1) for i in range(self.image_count)]

    def prompt_loras(self) -> tuple[str, tuple[LoraSpec, ...]]:
        """The prompt with ``<lora:name:weight>`` tags removed, and every LoRA to apply."""
        found: list[LoraSpec] = []
        for m in _LORA_TAG.finditer(self.prompt):
            weight_text = (m.group(2) or "1").strip()
            try:
                weight = float(weight_text)
            except ValueError as exc:
                raise RequestError(
                    "prompt", f"LoRA tag {m.group(0)!r}: weight {weight_text!r} is not a number"
                ) from exc
            found.append(LoraSpec(m.group(1).strip(), weight))
        clean = re.sub(r"\s{2,}", " ", _LORA_TAG.sub("", self.prompt)).strip(" ,")
        return clean, (*self.loras, *found)

    def replace(self, **changes: Any) -> GenerationRequest:
        return dataclasses.replace(self, **changes)

    # ------------------------------------------------------------------------ validation
    def validated(self) -> GenerationRequest:
        """Return this request if every value is usable, else raise RequestError naming the
        field. Cheap: never touches files or allocates images."""
        _check(isinstance(self.prompt, str), "prompt", "prompt must be text")
        _check(isinstance(self.negative_prompt, str), "negative_prompt", "must be text")
        for name in ("width", "height"):
            value = getattr(self, name)
            _check(_is_int(value), name, f"{name} must be a whole number, not {value!r}")
            _check(value >= 64, name, f"{name} {value} is too small (at least 64)")
            _check(
                value <= MAX_SIDE, name, f"{name} {value} is too large (at most {MAX_SIDE})"
            )
            if value % 8:
                lower, upper = value - value % 8, value - value % 8 + 8
                raise RequestError(
                    name, f"{name} {value} is not a multiple of 8 (use {lower} or {upper})"
                )
        _check(
            self.width * self.height <= MAX_PIXELS,
            "width",
            f"size {self.width}x{self.height} is too large "
            f"(at most {MAX_PIXELS // 1_000_000} megapixels)",
        )
        _check(
            _is_int(self.steps) and 1 <= self.steps <= MAX_STEPS,
            "steps",
            f"steps must be between 1 and {MAX_STEPS}, not {self.steps!r}",
        )
        _check(
            _is_num(self.cfg_scale) and 0 <= self.cfg_scale <= 100,
            "cfg_scale",
            f"CFG scale must be between 0 and 100, not {self.cfg_scale!r}",
        )
        _check(
            _is_int(self.seed) and -1 <= self.seed <= MAX_SEED,
            "seed",
            f"seed must be -1 (random) or between 0 and {MAX_SEED}, not {self.seed!r}",
        )
        _check(
            self.sampler in SAMPLER_NAMES,
            "sampler",
            f"unknown sampler {self.sampler!r}; choose one of: {', '.join(SAMPLER_NAMES)}",
        )
        _check(
            _is_int(self.batch_size) and 1 <= self.batch_size <= MAX_BATCH_SIZE,
            "batch_size",
            f"images per run must be between 1 and {MAX_BATCH_SIZE}, not {self.batch_size!r}",
        )
        _check(
            _is_int(self.batch_count) and 1 <= self.batch_count <= MAX_BATCH_COUNT,
            "batch_count",
            f"number of runs must be between 1 and {MAX_BATCH_COUNT}, not {self.batch_count!r}",
        )
        _check(
            _is_num(self.strength) and 0.0 <= self.strength <= 1.0,
            "strength",
            f"denoising strength must be between 0 and 1, not {self.strength!r}",
        )
        _check(
            self.mask is None or bool(self.init_image),
            "mask",
            "a mask needs an init image to inpaint",
        )
        _check(
            _is_int(self.mask_blur) and 0 <= self.mask_blur <= 256,
            "mask_blur",
            f"mask blur must be between 0 and 256 pixels, not {self.mask_blur!r}",
        )
        _check(
            _is_int(self.inpaint_padding) and 0 <= self.inpaint_padding <= 1024,
            "inpaint_padding",
            f"inpaint padding must be between 0 and 1024 pixels, not {self.inpaint_padding!r}",
        )
        _check(
            self.resize_mode in RESIZE_MODES,
            "resize_mode",
            f"resize mode must be one of {', '.join(RESIZE_MODES)}, not {self.resize_mode!r}",
        )
        _check(
            _is_int(self.clip_skip) and 1 <= self.clip_skip <= 12,
            "clip_skip",
            f"clip skip must be between 1 and 12, not {self.clip_skip!r}",
        )
        _check(self.rng in ("cpu", "device"), "rng", f"rng must be cpu or device, not {self.rng!r}")
        self.prompt_loras()  # raises on a malformed LoRA tag
        return self

    # --------------------------------------------------------------------- serialisation
    def to_dict(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        data["loras"] = [{"name": lo.name, "weight": lo.weight} for lo in self.loras]
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> GenerationRequest:
        """Build a request from a mapping (JSON, CSV row...). Unknown keys raise RequestError;
        values are converted to the field's type where that is lossless."""
        if "prompt" not in data:
            raise RequestError("prompt", "a request needs a prompt")
        known = {f.name: f for f in dataclasses.fields(cls)}
        kwargs: dict[str, Any] = {}
        for key, value in data.items():
            if key not in known:
                raise RequestError(key, f"unknown request field {key!r}")
            kwargs[key] = _coerce(key, known[key], value)
        return cls(**kwargs)


FIELD_NAMES: tuple[str, ...] = tuple(f.name for f in dataclasses.fields(GenerationRequest))


def _check(ok: bool, field_name: str, message: str) -> None:
    if not ok:
        raise RequestError(field_name, message)


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_num(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and value == value


def _coerce(key: str, fld: dataclasses.Field[Any], value: Any) -> Any:
    default = fld.default
    if key == "loras":
        if isinstance(value, str):
            value = [v for v in value.split(",") if v.strip()]
        out = []
        for item in value or ():
            try:
                if isinstance(item, LoraSpec):
                    out.append(item)
                elif isinstance(item, Mapping):
                    out.append(LoraSpec(str(item["name"]), float(item.get("weight", 1.0))))
                else:  # "name" or "name:weight"
                    name, _, weight = str(item).partition(":")
                    out.append(LoraSpec(name.strip(), float(weight) if weight else 1.0))
            except (ValueError, TypeError, KeyError) as exc:
                raise RequestError(key, f"loras: {item!r} is not a LoRA (name:weight)") from exc
        return tuple(out)
    if key in ("init_image", "mask"):
        return None if value in (None, "") else str(value)
    if value is None:
        return value
    try:
        if isinstance(default, bool):
            if isinstance(value, str):
                lowered = value.strip().lower()
                if lowered in ("1", "true", "yes", "on"):
                    return True
                if lowered in ("0", "false", "no", "off", ""):
                    return False
                raise ValueError(value)
            return bool(value)
        if isinstance(default, int):
            if isinstance(value, float) and value.is_integer():
                return int(value)
            if isinstance(value, str):
                return int(value.strip())
            return value
        if isinstance(default, float):
            if isinstance(value, (int, str)) and not isinstance(value, bool):
                return float(value)
            return value
        if isinstance(default, str) or key == "prompt":
            return value if isinstance(value, str) else str(value)
    except ValueError as exc:
        raise RequestError(key, f"{key}: {value!r} is not a valid value") from exc
    return value


@dataclass(frozen=True)
class GenerationInfo:
    """What the engine knows about how an image was made, beyond the request itself.
    Written into the PNG's sdstudio chunk (and partly into the A1111 infotext)."""

    model_name: str = ""
    model_sha256: str = ""  # full hex digest; A1111's "Model hash" is its first 10 digits
    model_arch: str = ""  # "sd1", "sd1-inpaint", "sd2", "sd2-v", "sdxl", "sdxl-inpaint"
    model_untrained: bool = False  # the built-in demo model
    vae_name: str = ""
    vae_sha256: str = ""
    lora_hashes: Mapping[str, str] = field(default_factory=dict)  # name -> first 10 hex
    device: str = ""
    dtype: str = ""
    memory: Mapping[str, Any] = field(default_factory=dict)  # savers chosen and why
    scheduler: Mapping[str, Any] = field(default_factory=dict)  # class name + config
    versions: Mapping[str, str] = field(default_factory=dict)
    prompt_tokens: int = 0
    negative_tokens: int = 0
    elapsed_s: float = 0.0
    notes: tuple[str, ...] = ()

    @property
    def model_hash(self) -> str:
        return self.model_sha256[:10]

    def to_dict(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        data["notes"] = list(self.notes)
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> GenerationInfo:
        known = {f.name for f in dataclasses.fields(cls)}
        kwargs = {k: v for k, v in data.items() if k in known}
        if "notes" in kwargs:
            kwargs["notes"] = tuple(kwargs["notes"])
        return cls(**kwargs)
