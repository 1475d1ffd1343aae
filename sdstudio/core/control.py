"""Control units (ControlNet, T2I-Adapter, IP-Adapter) and the control model files.

A :class:`ControlUnit` is one unit of AUTOMATIC1111's ControlNet extension
(Mikubill/sd-webui-controlnet): a model, a control image (or a reference image for an
IP-Adapter), a preprocessor ("module"), a weight, the fraction of the steps it is active in
(guidance start / end), a control mode, a resize mode, pixel perfect and the preprocessor's
resolution and thresholds. ``GenerationRequest.control_units`` holds them (declared once in
``core/request.py``); this module gives that field its checking, its conversions (JSON,
prompt-list text, the CLI's ``--control MODEL,image=...`` syntax) and its infotext, written as
the extension writes it::

    ControlNet 0: "Module: canny, Model: control_v11p_sd15_canny [d14c016b], Weight: 1.0,
    Resize Mode: Crop and Resize, Processor Res: 512, Threshold A: 100.0, Threshold B: 200.0,
    Guidance Start: 0.0, Guidance End: 1.0, Pixel Perfect: False, Control Mode: Balanced"

and read back (also the extension's older formats). The ``[d14c016b]`` after the model name
is A1111's old short hash (:func:`short_hash`: sha256 of 64 KiB at offset 1 MiB), which the
extension puts in its model names.

:func:`list_control_models` lists the control model files in :func:`control_model_dirs`
(SD Studio's own folder, the configured ones) with their kind and architecture read from the
safetensors header alone (bounded); a pickle file (``.pth``) is named by its file name
only here, and the engine reads its weights safely.

Pure Python: no Qt, no torch.
"""

from __future__ import annotations

import dataclasses
import hashlib
import math
import os
import re
import stat
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sdstudio.core import safejson
from sdstudio.core.fields import FieldSpec, InfotextKey, num

CONTROL_MODES: tuple[str, ...] = (
    "Balanced", "My prompt is more important", "ControlNet is more important")
RESIZE_MODES: tuple[str, ...] = ("Just Resize", "Crop and Resize", "Resize and Fill")
IP_ADAPTER_MODULES: tuple[str, ...] = ("ip-adapter_clip_sd15", "ip-adapter_clip_sdxl")
MODEL_KINDS: tuple[str, ...] = ("controlnet", "t2i-adapter", "ip-adapter", "unknown")
CONTROL_SUFFIXES: tuple[str, ...] = (".safetensors", ".pth", ".pt", ".bin", ".ckpt")
MAX_UNITS = 8
MAX_WEIGHT = 2.0  # the extension's weight slider
MIN_PROCESSOR_RES, MAX_PROCESSOR_RES = 64, 2048
MAX_HEADER_BYTES = 64 * 1024 * 1024  # a ControlNet's header is ~100 KB

# other spellings: the extension's older names, its API's numbers, short CLI words
_MODE_WORDS = {
    "balanced": 0, "0": 0, "prompt": 1, "my prompt is more important": 1, "1": 1,
    "controlnet": 2, "control": 2, "controlnet is more important": 2, "2": 2,
    # the 1.1.2xx extension wrote its enums' reprs into the infotext
    "controlmode.balanced": 0, "controlmode.prompt": 1, "controlmode.control": 2,
}
_RESIZE_WORDS = {
    "just resize": 0, "resize": 0, "just-resize": 0, "0": 0,
    "crop and resize": 1, "crop": 1, "scale to fit (inner fit)": 1, "inner fit": 1, "1": 1,
    "resize and fill": 2, "fill": 2, "envelope (outer fit)": 2, "outer fit": 2, "2": 2,
    "resizemode.resize": 0, "resizemode.inner_fit": 1, "resizemode.outer_fit": 2,
}


def normalize_control_mode(value: Any) -> str:
    """A control mode in the extension's words ("Balanced" ...) from its other spellings
    (its API's 0/1/2, "prompt", "controlnet"); the value unchanged when it is none."""
    index = _MODE_WORDS.get(str(value).strip().lower())
    return CONTROL_MODES[index] if index is not None else str(value)


def normalize_resize_mode(value: Any) -> str:
    """A resize mode in the extension's words from its other spellings (0/1/2, "crop",
    "fill", the older "Scale to Fit (Inner Fit)" and "Envelope (Outer Fit)")."""
    index = _RESIZE_WORDS.get(str(value).strip().lower())
    return RESIZE_MODES[index] if index is not None else str(value)


@dataclass(frozen=True)
class ControlUnit:
    """One ControlNet / T2I-Adapter / IP-Adapter unit, as A1111's ControlNet extension."""

    model: str  # a name in the ControlNet folders (see list_control_models) or a path
    image: str | None = None  # control (or reference) image file; None = the init image
    module: str = "none"  # the preprocessor, by the extension's names ("none", "canny" ...)
    weight: float = 1.0
    guidance_start: float = 0.0  # fraction of the sampling steps
    guidance_end: float = 1.0
    control_mode: str = "Balanced"  # one of CONTROL_MODES
    resize_mode: str = "Crop and Resize"  # one of RESIZE_MODES
    pixel_perfect: bool = False
    processor_res: int = 512
    threshold_a: float = -1.0  # module-specific; -1 = the module's default
    threshold_b: float = -1.0
    enabled: bool = True

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def replace(self, **changes: Any) -> ControlUnit:
        return dataclasses.replace(self, **changes)


_FIELDS = {f.name: f for f in dataclasses.fields(ControlUnit)}
# other names of unit fields: the CLI's short words and the extension's API keys
_UNIT_ALIASES = {
    "start": "guidance_start", "end": "guidance_end", "mode": "control_mode",
    "resize": "resize_mode", "res": "processor_res", "resolution": "processor_res",
    "preprocessor": "module", "threshold-a": "threshold_a", "threshold-b": "threshold_b",
    "pixel-perfect": "pixel_perfect", "control-mode": "control_mode",
    "resize-mode": "resize_mode", "processor-res": "processor_res",
    "guidance-start": "guidance_start", "guidance-end": "guidance_end",
}


_SHORT = {"guidance_start": "start", "guidance_end": "end", "control_mode": "mode",
          "resize_mode": "resize", "processor_res": "res", "threshold_a": "threshold-a",
          "threshold_b": "threshold-b"}


def _unit_field(key: str) -> str:
    text = str(key).strip().lower()
    return _UNIT_ALIASES.get(text, text.replace("-", "_").replace(" ", "_"))


def _convert(name: str, value: Any) -> Any:
    """One unit field's value from text / JSON (ValueError when it is no such value)."""
    if name in ("weight", "guidance_start", "guidance_end", "threshold_a", "threshold_b"):
        if isinstance(value, bool):
            raise ValueError(f"{name} must be a number, not {value!r}")
        number = float(value)
        if not math.isfinite(number):
            raise ValueError(f"{name} must be a finite number, not {value!r}")
        return number
    if name == "processor_res":
        if isinstance(value, bool):
            raise ValueError(f"processor_res must be a whole number, not {value!r}")
        number = float(value)
        if not number.is_integer():
            raise ValueError(f"processor_res must be a whole number, not {value!r}")
        return int(number)
    if name in ("pixel_perfect", "enabled"):
        if isinstance(value, bool):
            return value
        text = str(value).strip().lower()
        if text in ("1", "true", "yes", "on", ""):
            return True
        if text in ("0", "false", "no", "off"):
            return False
        raise ValueError(f"{name} must be true or false, not {value!r}")
    if name == "control_mode":
        return normalize_control_mode(value)
    if name == "resize_mode":
        return normalize_resize_mode(value)
    if name == "image":
        return None if value in (None, "") else str(value)
    if name == "module":
        return canonical_module_name(str(value))
    return str(value).strip()


def canonical_module_name(text: str) -> str:
    """A preprocessor named as the extension writes it (its name, label or alias, any case:
    "Canny", "lineart_standard (from white bg & black line)") -> the name SD Studio stores;
    a name the table does not know stays as it is (checking names it)."""
    text = text.strip()
    if text.lower() in ("none", "") or text.lower() in IP_ADAPTER_MODULES:
        return text.lower() or "none"
    try:
        from sdstudio.core.preprocessors import find_preprocessor
    except ImportError:
        return text
    entry = find_preprocessor(text)
    return entry.name if entry is not None else text


def unit_from(value: Any) -> ControlUnit:
    """A unit from a :class:`ControlUnit`, a mapping (JSON: the field names, or the short
    names of :data:`_UNIT_ALIASES`) or the CLI's text ``MODEL[,image=PATH][,module=canny]
    [,weight=W][,start=S][,end=E][,mode=...][,resize=...][,pixel-perfect]``.
    ValueError with a reason people can read."""
    if isinstance(value, ControlUnit):
        return value
    if isinstance(value, str):
        return parse_unit_option(value)
    if not isinstance(value, Mapping):
        raise ValueError(f"{value!r} is not a control unit")
    kwargs: dict[str, Any] = {}
    for key, item in value.items():
        name = _unit_field(key)
        if name not in _FIELDS:
            raise ValueError(f"unknown control unit setting {key!r}")
        kwargs[name] = _convert(name, item)
    if not kwargs.get("model"):
        raise ValueError("a control unit needs a model")
    return ControlUnit(**kwargs)


def parse_unit_option(text: str) -> ControlUnit:
    """The CLI's ``--control`` text: the model first, then ``key=value`` settings separated
    by commas; ``pixel-perfect`` (or ``pixel-perfect=false``) and ``disabled`` alone."""
    parts = [p.strip() for p in str(text).split(",")]
    if not parts or not parts[0] or "=" in parts[0]:
        raise ValueError(f"{text!r}: give the control model first (MODEL,image=PATH,...)")
    kwargs: dict[str, Any] = {"model": parts[0]}
    for part in parts[1:]:
        if not part:
            continue
        key, sep, item = part.partition("=")
        name = _unit_field(key)
        if not sep and name in ("pixel_perfect", "enabled"):
            item = "true"
        elif not sep and name == "disabled":
            name, item = "enabled", "false"
        elif not sep:
            raise ValueError(f"{text!r}: {part!r} is not key=value")
        if name not in _FIELDS or name == "model":
            raise ValueError(f"{text!r}: unknown control unit setting {key.strip()!r}")
        kwargs[name] = _convert(name, item.strip())
    return ControlUnit(**kwargs)


def option_text(unit: ControlUnit) -> str:
    """The CLI text of ``unit`` (the inverse of :func:`parse_unit_option` where the model
    and image hold no commas): only the settings that differ from the defaults."""
    parts = [unit.model]
    for f in dataclasses.fields(ControlUnit):
        if f.name == "model":
            continue
        value = getattr(unit, f.name)
        if value == f.default:
            continue
        key = _SHORT.get(f.name, f.name)
        if f.name == "pixel_perfect":
            parts.append("pixel-perfect")
        elif f.name == "enabled":
            parts.append("disabled")
        elif f.name == "control_mode":
            parts.append(f"mode={('balanced', 'prompt', 'controlnet')[CONTROL_MODES.index(value)]}")
        elif f.name == "resize_mode":
            parts.append(f"resize={('resize', 'crop', 'fill')[RESIZE_MODES.index(value)]}")
        elif isinstance(value, float):
            parts.append(f"{key}={num(value)}")
        else:
            parts.append(f"{key}={value}")
    return ",".join(parts)


def parse_units(value: Any) -> tuple[ControlUnit, ...]:
    """The field's value from JSON or text: a list of units (mappings, CLI texts or units),
    one unit, a JSON array's text, or "" / None for none. ValueError names the unit."""
    if value in (None, ""):
        return ()
    if isinstance(value, str):
        text = value.strip()
        if text.startswith("["):
            try:
                value = safejson.loads(text, max_bytes=1024 * 1024, max_depth=4)
            except ValueError as exc:
                raise ValueError(f"control units: not a JSON list ({exc})") from None
        else:
            value = [v for v in text.split(";") if v.strip()]
    if isinstance(value, (ControlUnit, Mapping)):
        value = [value]
    if not isinstance(value, (list, tuple)):
        raise ValueError(f"control units: {value!r} is not a list of units")
    out = []
    for i, item in enumerate(value):
        try:
            out.append(unit_from(item))
        except (ValueError, TypeError) as exc:
            raise ValueError(f"control unit {i + 1}: {exc}") from None
    return tuple(out)


def known_modules() -> frozenset[str]:
    """The preprocessor names a unit may name: the preprocessor table's (core/preprocessors)
    and the IP-Adapter modules; only "none" when there is no table."""
    names = {"none", *IP_ADAPTER_MODULES}
    try:
        from sdstudio.core import preprocessors  # type: ignore[attr-defined,unused-ignore]
    except ImportError:
        return frozenset(names)
    table: Mapping[str, Any] = getattr(preprocessors, "PREPROCESSORS", {})
    return frozenset(names | set(table))


def unit_problem(unit: Any) -> str | None:
    """Why ``unit`` cannot run, in one line, or None."""
    if not isinstance(unit, ControlUnit):
        return f"{unit!r} is not a control unit"
    if not isinstance(unit.model, str) or not unit.model.strip():
        return "no control model is given"
    if unit.image is not None and not isinstance(unit.image, str):
        return "the control image must be a file path"
    numbers = (("weight", 0.0, MAX_WEIGHT), ("guidance start", 0.0, 1.0),
               ("guidance end", 0.0, 1.0))
    for label, lo, hi in numbers:
        value = getattr(unit, label.replace(" ", "_"))
        if isinstance(value, bool) or not isinstance(value, (int, float)) \
                or not lo <= value <= hi:
            return f"{label} must be between {num(lo)} and {num(hi)}, not {value!r}"
    if unit.guidance_start > unit.guidance_end:
        return (f"guidance start {num(unit.guidance_start)} is after guidance end "
                f"{num(unit.guidance_end)}")
    if unit.control_mode not in CONTROL_MODES:
        return f"control mode must be one of {', '.join(CONTROL_MODES)}, not " \
               f"{unit.control_mode!r}"
    if unit.resize_mode not in RESIZE_MODES:
        return f"resize mode must be one of {', '.join(RESIZE_MODES)}, not " \
               f"{unit.resize_mode!r}"
    res = unit.processor_res
    if isinstance(res, bool) or not isinstance(res, int) or not (
            res == -1 or MIN_PROCESSOR_RES <= res <= MAX_PROCESSOR_RES):
        return (f"processor resolution must be between {MIN_PROCESSOR_RES} and "
                f"{MAX_PROCESSOR_RES}, not {res!r}")
    for label in ("threshold_a", "threshold_b"):
        value = getattr(unit, label)
        if isinstance(value, bool) or not isinstance(value, (int, float)) \
                or not math.isfinite(value):
            return f"{label.replace('_', ' ')} must be a number, not {value!r}"
    if not isinstance(unit.pixel_perfect, bool) or not isinstance(unit.enabled, bool):
        return "pixel perfect and enabled must be true or false"
    modules = known_modules()
    if unit.module not in modules:
        return (f"unknown preprocessor {unit.module!r}; choose one of: "
                f"{', '.join(sorted(modules))}")
    return None


def units_problem(units: Any) -> str | None:
    """Why the field's value is not valid (naming the unit, 1-based), or None."""
    if not isinstance(units, tuple):
        return "control units must be a list of units"
    if len(units) > MAX_UNITS:
        return f"at most {MAX_UNITS} control units, not {len(units)}"
    for i, unit in enumerate(units):
        problem = unit_problem(unit)
        if problem:
            return f"control unit {i + 1}: {problem}"
    return None


def active_units(units: Iterable[ControlUnit]) -> list[tuple[int, ControlUnit]]:
    """(index, unit) of the enabled units, the index as the infotext numbers them."""
    return [(i, u) for i, u in enumerate(units) if u.enabled]


# ------------------------------------------------------------------------------ infotext
INFOTEXT_PREFIX = "ControlNet"
_INFOTEXT_FIELDS = ("module", "model", "weight", "resize_mode", "processor_res",
                    "threshold_a", "threshold_b", "guidance_start", "guidance_end",
                    "pixel_perfect", "control_mode")
_HASH_SUFFIX = re.compile(r"\s*\[([0-9a-fA-F]{8,10})\]\s*$")


def display_key(name: str) -> str:
    """"resize_mode" -> "Resize Mode", as the extension names its infotext fields."""
    return " ".join(word.capitalize() for word in name.split("_"))


def model_title(name: str, short: str = "") -> str:
    """The model as the extension names it: ``name [hash8]`` (the name alone without one)."""
    return f"{name} [{short}]" if short else name


def split_title(model: str) -> tuple[str, str]:
    """``"control_v11p_sd15_canny [d14c016b]"`` -> (name, hash); (model, "") without one."""
    m = _HASH_SUFFIX.search(model)
    if m is None:
        return model.strip(), ""
    return model[:m.start()].strip(), m.group(1).lower()


def _display_value(value: Any) -> str:
    if isinstance(value, float):
        return repr(value)  # Python's str(): "1.0", "100.0", as the extension writes it
    return str(value)


def unit_infotext(unit: ControlUnit, title: str | None = None) -> str:
    """One unit's value of ``ControlNet N`` (unquoted): ``title`` names the model (else its
    name: the file name without the suffix when ``unit.model`` is a path)."""
    values: dict[str, Any] = {name: getattr(unit, name) for name in _INFOTEXT_FIELDS}
    values["model"] = title or model_title(_plain_model_name(unit.model))
    values["weight"] = float(unit.weight)
    for name in ("threshold_a", "threshold_b", "guidance_start", "guidance_end"):
        values[name] = float(values[name])
    return ", ".join(f"{display_key(k)}: {_display_value(v).replace(',', ' ')}"
                     for k, v in values.items())


def _plain_model_name(model: str) -> str:
    text = model.replace("\\", "/").rstrip("/")
    if "/" in text or Path(text).suffix.lower() in CONTROL_SUFFIXES:
        name = text.rsplit("/", 1)[-1]
        for suffix in CONTROL_SUFFIXES:
            if name.lower().endswith(suffix):
                return name[:-len(suffix)]
        return name
    return model


_ITEM = re.compile(r"\s*([A-Za-z][\w /]*?)\s*:\s*(\([^)]*\)|[^,]*)(?:,|$)")
_OLD_NAMES = {"preprocessor": "module", "starting/ending": "guidance",
              "preprocessor params": "params", "guidance strength": "guidance_end"}


def parse_unit_infotext(text: str) -> ControlUnit:
    """A unit from the value of ``ControlNet N``: the extension's format since 1.1.400
    (``Module: canny, Model: ..., Weight: 1.0, ...``) and the one before it (``preprocessor:
    canny, model: ..., weight: 1, starting/ending: (0, 1), ..., preprocessor params: (512,
    100, 200)``). ValueError for text that is neither."""
    values: dict[str, Any] = {}
    for key, value in _ITEM.findall(text):
        name = key.strip().lower()
        name = _OLD_NAMES.get(name, name.replace(" ", "_"))
        value = value.strip()
        if name == "guidance" and value.startswith("("):
            start, _, end = value.strip("()").partition(",")
            values["guidance_start"], values["guidance_end"] = start, end
        elif name == "params" and value.startswith("("):
            for field_name, item in zip(("processor_res", "threshold_a", "threshold_b"),
                                        value.strip("()").split(","), strict=False):
                if item.strip().lower() not in ("none", ""):  # (512, None, None)
                    values[field_name] = item
        elif name in _FIELDS:
            values[name] = value
    if not values.get("model"):
        raise ValueError(f"{text[:80]!r} names no control model")
    kwargs: dict[str, Any] = {}
    for name, value in values.items():
        if name == "model" and value.lower() == "none":
            raise ValueError("the unit has no model (None)")
        if name in ("processor_res",) and str(value).strip() in ("-1", "-1.0"):
            kwargs[name] = -1
            continue
        kwargs[name] = _convert(name, value)
    return ControlUnit(**kwargs)


class ControlUnitsKey(InfotextKey):
    """``ControlNet 0``, ``ControlNet 1`` ...: one key per enabled unit, numbered by its place
    in the list, as the extension writes them; read back from those keys and the older
    ``ControlNet-0 Module: ...`` / ``ControlNet Module: ...`` keys of its first versions. A
    unit's control image is not in the text: a read unit uses the init image (or, run on
    its own, needs one given). Keys that cannot be read stay in ``extras``."""

    def __init__(self) -> None:
        super().__init__(INFOTEXT_PREFIX)

    def write(self, request: Any, spec: FieldSpec) -> Any:
        return None  # see items(): more than one key

    def items(self, request: Any, spec: FieldSpec, info: Any = None) -> list[tuple[str, Any]]:
        titles: Mapping[str, str] = getattr(info, "control_models", None) or {}
        return [(f"{INFOTEXT_PREFIX} {i}", unit_infotext(u, titles.get(u.model)))
                for i, u in active_units(getattr(request, self.field))]

    def read(self, params: Mapping[str, str], extras: dict[str, str], spec: FieldSpec,
             fields: dict[str, Any]) -> None:
        units: list[tuple[int, ControlUnit]] = []
        for key, value in params.items():
            m = re.fullmatch(rf"{INFOTEXT_PREFIX} (\d+)", key, re.IGNORECASE)
            if m is None:
                continue
            try:
                units.append((int(m.group(1)), parse_unit_infotext(value)))
            except ValueError:
                continue  # stays in extras
            extras.pop(key, None)
        units += _old_key_units(params, extras)
        if units:
            fields[self.field] = tuple(u for _, u in sorted(units, key=lambda p: p[0]))


_OLD_KEY = re.compile(rf"{INFOTEXT_PREFIX}(?:-(\d+))? (.+)", re.IGNORECASE)


def _old_key_units(params: Mapping[str, str], extras: dict[str, str]
                   ) -> list[tuple[int, ControlUnit]]:
    """Units of the extension's first infotext (``ControlNet-0 Enabled: True, ControlNet-0
    Module: canny, ControlNet-0 Model: ..., ControlNet-0 Weight: 1, ControlNet-0 Guidance
    Start: 0`` ..., or without the number for a single unit)."""
    groups: dict[int, dict[str, str]] = {}
    keys: dict[int, list[str]] = {}
    for key, value in params.items():
        m = _OLD_KEY.fullmatch(key)
        if m is None or m.group(2).isdigit():
            continue
        index = int(m.group(1) or 0)
        name = m.group(2).strip().lower()
        name = _OLD_NAMES.get(name, name.replace(" ", "_"))
        groups.setdefault(index, {})[name] = value
        keys.setdefault(index, []).append(key)
    out = []
    for index, values in groups.items():
        if values.get("enabled", "True").strip().lower() == "false":
            continue
        known = {k: v for k, v in values.items() if k in _FIELDS and k != "enabled"}
        try:
            unit = unit_from(known)
        except (ValueError, TypeError):
            continue
        out.append((index, unit))
        for key in keys[index]:
            extras.pop(key, None)
    return out


# ------------------------------------------------------------------------------ hashes
def short_hash(path: str | os.PathLike[str]) -> str:
    """A1111's old model hash, which the ControlNet extension puts after its model names:
    the first 8 hex digits of the sha256 of the 64 KiB at offset 1 MiB
    (``sd_models.model_hash``). Cheap: one 64 KiB read. OSError when unreadable."""
    with open(path, "rb") as fh:
        fh.seek(0x100000)
        return hashlib.sha256(fh.read(0x10000)).hexdigest()[:8]


def model_file(path: Path) -> Path:
    """The weights file of a control model: the file itself, or a diffusers folder's
    ``diffusion_pytorch_model.safetensors`` (``.bin``)."""
    if path.is_dir():
        for name in ("diffusion_pytorch_model.safetensors", "diffusion_pytorch_model.bin",
                     "model.safetensors", "ip_adapter.safetensors", "ip_adapter.bin"):
            if (path / name).is_file():
                return path / name
    return path


# ------------------------------------------------------------------------------ listing
@dataclass(frozen=True)
class ControlModel:
    """One control model file (or diffusers folder) in the ControlNet folders."""

    name: str  # as a unit names it: the path in its folder without the suffix
    path: Path
    kind: str  # one of MODEL_KINDS
    arch: str | None  # "sd1" | "sd2" | "sdxl" | None (not known from the header)

    @property
    def title(self) -> str:
        """``name [hash8]`` as the extension lists it (the hash read now: 64 KiB)."""
        try:
            return model_title(self.name, short_hash(model_file(self.path)))
        except OSError:
            return self.name


def control_model_dirs(engine: Any) -> tuple[str, ...]:
    """The folders control models are looked for in: SD Studio's own
    (``paths.model_dir("controlnet")``), then the configured ones (``controlnet_dirs``:
    other apps' ``models/ControlNet``, ``models/controlnet``, ``models/ipadapter`` where the
    welcome panel or the settings added them)."""
    from sdstudio.core.paths import model_dir

    own = str(model_dir("controlnet"))
    configured = tuple(getattr(engine, "controlnet_dirs", ()) or ())
    return (own, *(d for d in configured if d != own))


def safetensors_header(path: Path, max_bytes: int = MAX_HEADER_BYTES) -> dict[str, Any]:
    """The JSON header of a safetensors file (ValueError for a file that is not one, or a
    header over ``max_bytes``; OSError when it cannot be read)."""
    flags = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_BINARY", 0)
    fd = os.open(path, flags)
    with os.fdopen(fd, "rb") as fh:
        if not stat.S_ISREG(os.fstat(fh.fileno()).st_mode):
            raise ValueError(f"{path.name} is not a regular file")
        head = fh.read(9)
        if len(head) < 9 or head[8:9] != b"{":
            raise ValueError(f"{path.name} is not a safetensors file")
        length = int.from_bytes(head[:8], "little")
        if length > max_bytes:
            raise ValueError(f"{path.name}: its header is too large ({length:,} bytes)")
        raw = head[8:] + fh.read(length - 1)
    if len(raw) != length:
        raise ValueError(f"{path.name} is truncated (in its header)")
    header = safejson.loads(raw, max_bytes=max_bytes, max_depth=8)
    if not isinstance(header, dict):
        raise ValueError(f"{path.name}: its header is not a JSON object")
    return header


def classify_keys(shapes: Mapping[str, Any]) -> tuple[str, str | None]:
    """(kind, arch) of a control model from its tensor names and shapes (lists of ints):
    the original layout (``control_model.`` prefix or none), diffusers', T2I-Adapters' and
    IP-Adapters'. The architecture from the cross-attention's context width (768 SD 1.x,
    1024 SD 2.x, 2048 SDXL) and SDXL's ``label_emb`` / ``add_embedding``."""
    names = list(shapes)

    def has(*parts: str) -> bool:
        return any(any(p in n for p in parts) for n in names)

    if has("image_proj.", "ip_adapter.") and has("to_k_ip", "ip_adapter."):
        kind = "ip-adapter"
    elif has("input_hint_block.", "controlnet_cond_embedding."):
        kind = "controlnet"
    elif has("body.0.", "adapter.body") or has("adapter.conv_in"):
        kind = "t2i-adapter"
    else:
        return "unknown", None
    widths = set()
    for name, shape in shapes.items():
        if not isinstance(shape, list) or len(shape) != 2:
            continue
        if name.endswith(("attn2.to_k.weight", "to_k_ip.weight", "to_k_ip.0.weight")):
            widths.add(shape[1])
    if kind != "t2i-adapter" and has("label_emb.", "add_embedding."):
        return kind, "sdxl"
    if 2048 in widths:
        return kind, "sdxl"
    if 1024 in widths:
        return kind, "sd2"
    if 768 in widths:
        return kind, "sd1"
    return kind, None


def describe_file(path: Path) -> tuple[str, str | None]:
    """(kind, arch) of a control model file or folder, read from the safetensors header or
    a diffusers config (bounded); a pickle file: its kind guessed from the name, arch None."""
    path = Path(path)
    config = path / "config.json"
    if path.is_dir():
        return _describe_folder(path, config)
    if path.suffix.lower() == ".safetensors":
        try:
            header = safetensors_header(path)
        except (OSError, ValueError):
            return "unknown", None
        shapes = {k: v.get("shape") for k, v in header.items()
                  if k != "__metadata__" and isinstance(v, dict)}
        return classify_keys(shapes)
    return _kind_from_name(path.name), _arch_from_name(path.name)


def _describe_folder(path: Path, config: Path) -> tuple[str, str | None]:
    try:
        data = safejson.loads(safejson.read_limited(config, 256 * 1024), max_depth=8)
    except (OSError, ValueError):
        data = {}
    if not isinstance(data, dict):
        data = {}
    cls = str(data.get("_class_name", ""))
    kind = {"ControlNetModel": "controlnet", "T2IAdapter": "t2i-adapter",
            "ControlNetXSAdapter": "unknown"}.get(cls, "unknown")
    if kind == "unknown":
        weights = model_file(path)
        if weights != path and weights.suffix == ".safetensors":
            return describe_file(weights)
        return kind, None
    width = data.get("cross_attention_dim")
    if data.get("addition_embed_type") == "text_time" or width == 2048:
        return kind, "sdxl"
    if kind == "t2i-adapter":
        return kind, "sdxl" if data.get("adapter_type") == "full_adapter_xl" else None
    return kind, {768: "sd1", 1024: "sd2"}.get(width if isinstance(width, int) else 0)


def _kind_from_name(name: str) -> str:
    lowered = name.lower()
    if "ip-adapter" in lowered or "ip_adapter" in lowered or "ipadapter" in lowered:
        return "ip-adapter"
    if "t2iadapter" in lowered or "t2i-adapter" in lowered or "t2i_adapter" in lowered:
        return "t2i-adapter"
    return "controlnet"


def _arch_from_name(name: str) -> str | None:
    lowered = name.lower()
    if "sdxl" in lowered or "_xl" in lowered or "-xl" in lowered:
        return "sdxl"
    if "sd21" in lowered or "sd2" in lowered:
        return "sd2"
    if "sd15" in lowered or "sd1" in lowered:
        return "sd1"
    return None


def list_control_models(engine: Any, limit: int = 2000) -> list[ControlModel]:
    """Every control model in :func:`control_model_dirs`, sorted by name: model files
    (:data:`CONTROL_SUFFIXES`, named by their path in the folder without the suffix; the
    first of two same names wins) and diffusers folders (a ``config.json`` beside the
    weights; named by the folder's path). Only headers are read."""
    found: dict[str, ControlModel] = {}
    for folder in control_model_dirs(engine):
        base = Path(folder).expanduser()
        try:
            walk = list(os.walk(base))
        except OSError:
            continue
        for root, subdirs, files in walk:
            subdirs.sort()
            here = Path(root)
            if "config.json" in files and model_file(here) != here and here != base:
                name = here.relative_to(base).as_posix()
                kind, arch = describe_file(here)
                found.setdefault(name, ControlModel(name, here, kind, arch))
                subdirs.clear()
                continue
            for file_name in sorted(files):
                path = here / file_name
                if path.suffix.lower() not in CONTROL_SUFFIXES:
                    continue
                name = path.relative_to(base).with_suffix("").as_posix()
                if name in found:
                    continue
                kind, arch = describe_file(path)
                found[name] = ControlModel(name, path, kind, arch)
                if len(found) >= limit:
                    return sorted(found.values(), key=lambda m: m.name.lower())
    return sorted(found.values(), key=lambda m: m.name.lower())


def find_control_model(models: Iterable[ControlModel], wanted: str) -> ControlModel | None:
    """The listed model a unit names: by name (a ``[hash]`` after it ignored, case
    ignored; the file name alone when unique), else by the hash in the brackets."""
    name, short = split_title(wanted)
    listed = list(models)
    lowered = name.replace("\\", "/").lower()
    for m in listed:
        if m.name.lower() == lowered:
            return m
    stems = [m for m in listed if m.name.rsplit("/", 1)[-1].lower() == lowered]
    if len(stems) == 1:
        return stems[0]
    if short:
        for m in listed:
            try:
                if short_hash(model_file(m.path)) == short[:8]:
                    return m
            except OSError:
                continue
    return None

