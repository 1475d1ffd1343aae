"""The field table: everything SD Studio knows about each request field, declared once.

Each field of :class:`sdstudio.core.request.GenerationRequest` is declared as

    steps: int = field(default=20, metadata=spec("int", "Steps", minimum=1, maximum=1000, ...))

and :func:`request_fields` gives the table: name, default and :class:`FieldSpec` (kind, range
or choices, label and help, CLI option, infotext key, prompt-list aliases, how the window shows
it). Validation, type coercion, both CLIs' options, the infotext writer and parser, prompt-list
column names, the prompt panel's controls, restoring and the panel's saved settings all come
from this table, so a new field is one declaration plus the code that uses its value.

Pure Python: no Qt, no torch.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from enum import Enum
from typing import Any


class Mode(str, Enum):
    TXT2IMG = "txt2img"
    IMG2IMG = "img2img"
    INPAINT = "inpaint"


ALL_MODES: frozenset[Mode] = frozenset(Mode)
IMAGE_MODES: frozenset[Mode] = frozenset({Mode.IMG2IMG, Mode.INPAINT})
INPAINT_ONLY: frozenset[Mode] = frozenset({Mode.INPAINT})
TXT2IMG_ONLY: frozenset[Mode] = frozenset({Mode.TXT2IMG})

# kinds of value
KINDS = ("int", "float", "bool", "text", "choice", "path", "model", "loras", "units")


@dataclass(frozen=True)
class Ui:
    """How the prompt panel shows a field.

    ``section``: "prompt", "sampling", "image" (img2img and inpaint), "inpaint", "hires"
    (the hires fix, a collapsible section of its own), "advanced";
    or "external" when another part of the window owns the value (the model bar, a canvas, the
    prompt's LoRA tags). Fields without a ``Ui`` get a control in "advanced" from their kind.
    ``inline``: on the previous control's row, with a short label. ``widget``: a special
    control ("seed", "size", "prompt", "file-choice", "upscaler", "line"); "" = the control
    for the kind."""

    section: str = "advanced"
    label: str = ""  # with a & mnemonic; "" = the spec's label
    inline: bool = False
    step: float | None = None
    decimals: int = 2
    suffix: str = ""
    widget: str = ""


@dataclass(frozen=True)
class FieldSpec:
    kind: str
    label: str  # for people: the window's label, CLI help, restore messages
    help: str = ""
    noun: str = ""  # in messages ("images per run must be ..."); "" = label in lower case
    minimum: float | None = None
    maximum: float | None = None
    special: int | None = None  # a value outside the range that means something (seed -1)
    special_meaning: str = ""
    multiple_of: int | None = None
    bounds_style: str = "between"  # or "limits": "too small (at least ...)" messages
    choices: tuple[str, ...] = ()
    choice_labels: tuple[str, ...] = ()  # shown instead of the choices (same order)
    choice_message: str = ""  # "{value!r}" and "{choices}" filled in
    normalize: Callable[[str], str] | None = None  # other spellings -> a choice
    cli: tuple[str, ...] | None = None  # option strings; None = "--field-name"; () = none
    metavar: str | None = None
    aliases: tuple[str, ...] = ()  # other spellings in prompt lists (A1111, CSV headers)
    infotext: InfotextKey | None = None
    ui: Ui | None = None
    persist: bool = True  # the prompt panel keeps it between launches
    modes: frozenset[Mode] = ALL_MODES  # where the value matters (UI shows it there)
    # kind "units" (a tuple of values of their own, as control_units): the value's own
    # checking (a reason or None) and its conversion from JSON / text (raises ValueError)
    check: Callable[[Any], str | None] | None = None
    parse: Callable[[Any], Any] | None = None
    # filled in by request_fields()
    name: str = ""
    default: Any = None

    @property
    def what(self) -> str:
        return self.noun or self.label.lower()

    @property
    def options(self) -> tuple[str, ...]:
        if self.cli is None:
            return ("--" + self.name.replace("_", "-"),)
        return self.cli

    def display(self, value: Any) -> str:
        """A value as people read it: "CPU" for rng "cpu", 7 for 7.0."""
        if self.choice_labels and value in self.choices:
            return self.choice_labels[self.choices.index(value)]
        if isinstance(value, float):
            return num(value)
        return str(value)

    # ------------------------------------------------------------------------ checking
    def problem(self, value: Any) -> str | None:
        """Why ``value`` is not valid for this field, or None."""
        kind = self.kind
        if kind == "int":
            if self.bounds_style == "limits":
                if not is_int(value):
                    return f"{self.what} must be a whole number, not {value!r}"
                if self.minimum is not None and value < self.minimum:
                    return f"{self.what} {value} is too small (at least {num(self.minimum)})"
                if self.maximum is not None and value > self.maximum:
                    return f"{self.what} {value} is too large (at most {num(self.maximum)})"
            elif not (is_int(value) and (value == self.special or self._in_range(value))):
                return self._range_message(value)
            if self.multiple_of and value % self.multiple_of:
                m = self.multiple_of
                lower = value - value % m
                return f"{self.what} {value} is not a multiple of {m} (use {lower} or {lower + m})"
            return None
        if kind == "float":
            if not (is_number(value) and self._in_range(value)):
                return self._range_message(value)
            return None
        if kind == "bool":
            return None if isinstance(value, bool) else f"{self.what} must be true or false"
        if kind in ("text", "model"):
            return None if isinstance(value, str) else f"{self.what} must be text"
        if kind == "path":
            return None if value is None or isinstance(value, str) else (
                f"{self.what} must be a file path")
        if kind == "units" and self.check is not None:
            return self.check(value)
        if kind == "choice":
            if value in self.choices:
                return None
            choices = (" or ".join(self.choices) if len(self.choices) == 2
                       else ", ".join(self.choices))
            template = self.choice_message or (
                "{what} must be " + ("" if len(self.choices) == 2 else "one of ")
                + "{choices}, not {value!r}")
            return template.format(what=self.what, choices=choices, value=value)
        return None

    def _in_range(self, value: float) -> bool:
        return ((self.minimum is None or value >= self.minimum)
                and (self.maximum is None or value <= self.maximum))

    def _range_message(self, value: Any) -> str:
        span = f"between {num(self.minimum)} and {num(self.maximum)}"
        if self.special is not None:
            span = f"{self.special} ({self.special_meaning}) or {span}"
        return f"{self.what} must be {span}, not {value!r}"

    # ------------------------------------------------------------------------ coercion
    def coerce(self, value: Any) -> Any:
        """``value`` from text or JSON converted to the field's type where that is lossless
        (" 768 " -> 768, "yes" -> True, 2.0 -> 2); anything else is returned as it is, for
        :meth:`problem` to explain. Raises ValueError for text that is no such value."""
        kind = self.kind
        if kind == "path":
            return None if value in (None, "") else str(value)
        if kind == "units" and self.parse is not None:
            return self.parse(value)
        if value is None:
            return value
        if kind == "bool":
            if isinstance(value, str):
                lowered = value.strip().lower()
                if lowered in ("1", "true", "yes", "on"):
                    return True
                if lowered in ("0", "false", "no", "off", ""):
                    return False
                raise ValueError(value)
            return bool(value)
        if kind == "int":
            if isinstance(value, float) and value.is_integer():
                return int(value)
            if isinstance(value, str):
                return int(value.strip())
            return value
        if kind == "float":
            if isinstance(value, (int, str)) and not isinstance(value, bool):
                return float(value)
            return value
        if kind == "choice" and self.normalize is not None and (
                isinstance(value, str) or is_int(value)):
            return self.normalize(str(value))  # an int: a choice's index (A1111's API)
        if kind == "choice" and isinstance(value, str):
            wanted = value.strip().lower()
            for names in (self.choices, self.choice_labels):
                for i, name in enumerate(names):
                    if name.lower() == wanted:
                        return self.choices[i]
            return value
        if kind in ("text", "model", "choice"):
            return value if isinstance(value, str) else str(value)
        return value


class InfotextKey:
    """One key of AUTOMATIC1111's parameter line and the request fields it carries.

    ``write`` gives the value to write for a request (None: leave the key out); ``read``
    gives the fields the parameters set (it is called whether or not the key is present, so a
    missing key can mean something, as "RNG" does) and may put what it cannot use into
    ``extras``. ``consumes``: the keys it reads, so they do not also appear as extras."""

    def __init__(self, key: str, field: str = "", modes: frozenset[Mode] = ALL_MODES,
                 omit_default: bool = False, consumes: tuple[str, ...] = ()) -> None:
        self.key = key
        self.field = field
        self.modes = modes
        self.omit_default = omit_default
        self.consumes = consumes or (key,)

    def bind(self, field: str) -> InfotextKey:
        if not self.field:
            self.field = field
        return self

    def items(self, request: Any, spec: FieldSpec, info: Any = None) -> list[tuple[str, Any]]:
        """The (key, value) pairs to write (None values are left out): this key's; a key
        that writes several (``ControlNet 0``, ``ControlNet 1`` ...) overrides it, and may
        use ``info`` (the GenerationInfo: hashes)."""
        return [(self.key, self.write(request, spec))]

    def write(self, request: Any, spec: FieldSpec) -> Any:
        if request.mode not in self.modes:
            return None
        value = getattr(request, self.field)
        if self.omit_default and value == spec.default:
            return None
        return spec.display(value) if spec.kind == "choice" else value

    def read(self, params: Mapping[str, str], extras: dict[str, str], spec: FieldSpec,
             fields: dict[str, Any]) -> None:
        if self.key in params:
            fields[self.field] = parse_value(spec, params[self.key], self.key)


def parse_value(spec: FieldSpec, text: str, key: str) -> Any:
    """A value from infotext as the field's type; ValueError names the key."""
    text = text.strip()
    if spec.kind == "int":
        try:
            return int(text)
        except ValueError:
            number = _finite(text)
            if number is not None and number.is_integer():
                return int(number)
            raise ValueError(f"{key} {text!r} is not a whole number") from None
    if spec.kind == "float":
        number = _finite(text)
        if number is None:
            raise ValueError(f"{key} {text!r} is not a finite number")
        return number
    return spec.coerce(text)


def _finite(text: str) -> float | None:
    try:
        value = float(text)
    except ValueError:
        return None
    return value if math.isfinite(value) else None


def spec(kind: str, label: str, **kwargs: Any) -> dict[str, FieldSpec]:
    """Metadata for ``dataclasses.field``: ``field(default=..., metadata=spec(...))``."""
    if kind not in KINDS:
        raise ValueError(f"unknown field kind {kind!r}")
    return {"spec": FieldSpec(kind, label, **kwargs)}


def num(value: float | None) -> str:
    """7 -> "7", 7.0 -> "7", 0.5 -> "0.5", 4294967295 -> "4294967295"."""
    if value is None:
        return "?"
    if float(value).is_integer():
        return str(int(value))
    return repr(float(value))


def is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def is_number(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and value == value


_TABLES: dict[type, tuple[FieldSpec, ...]] = {}


def request_fields(cls: type) -> tuple[FieldSpec, ...]:
    """The field table of a dataclass declared with :func:`spec` metadata, in order."""
    table = _TABLES.get(cls)
    if table is None:
        out = []
        for f in dataclasses.fields(cls):
            base = f.metadata.get("spec")
            if base is None:
                raise TypeError(f"{cls.__name__}.{f.name} has no field spec")
            default = f.default if f.default is not dataclasses.MISSING else None
            bound = dataclasses.replace(base, name=f.name, default=default)
            if bound.infotext is not None:
                bound.infotext.bind(f.name)
            out.append(bound)
        table = _TABLES[cls] = tuple(out)
    return table


_MAPS: dict[type, dict[str, FieldSpec]] = {}


def field_map(cls: type) -> dict[str, FieldSpec]:
    """The field table by name (built once per class; do not change it)."""
    table = _MAPS.get(cls)
    if table is None:
        table = _MAPS[cls] = {s.name: s for s in request_fields(cls)}
    return table


def infotext_keys(cls: type) -> list[tuple[InfotextKey, FieldSpec]]:
    """Each infotext key once (Size carries two fields), with the first field's spec."""
    seen: set[int] = set()
    out = []
    for s in request_fields(cls):
        if s.infotext is not None and id(s.infotext) not in seen:
            seen.add(id(s.infotext))
            out.append((s.infotext, s))
    return out

