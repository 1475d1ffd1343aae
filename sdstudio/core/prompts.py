"""Prompt lists for batch generation: plain text (with AUTOMATIC1111 "prompts from file"
options), CSV with a header row, and JSON Lines. Pure Python: no Qt, no torch.

``parse_prompt_list(source, defaults)`` reads the whole list and validates every line before
anything runs. Each good line becomes a ``PromptItem`` (its 1-based line number and the full
``GenerationRequest`` = the shared defaults overridden by what the line sets); each bad line
becomes a ``LineError`` with its line number and the reason. A list that cannot be read at all
(an encoding other than UTF-8 / UTF-16 with BOM, a binary file, a broken CSV header) raises
``PromptListError``.

Formats
- ``.txt``: one prompt per line; blank lines and lines starting with ``#`` are skipped. A line
  starting with ``--`` carries A1111 options, shell-quoted::

      --prompt "a red fox, snow" --negative_prompt "blurry" --steps 30 --seed 5
      --cfg_scale 7 --sampler_name "Euler a" --width 512 --height 768

  As in A1111, ``--prompt`` and ``--negative_prompt`` take every word up to the next option.
  A1111 option names map to request fields (``sampler_name`` -> ``sampler``, ``n_iter`` ->
  ``batch_count``, ``denoising_strength`` -> ``strength``, ``sd_model`` -> ``model``); every
  request field is accepted under its own name too (``--init_image``, ``--clip_skip`` ...).
  A1111 options that only steer A1111's own saving (``--outpath_samples`` ...) are ignored with
  a warning; anything else unknown is a line error.
- ``.csv``: a header row naming request fields (A1111-style names and spellings such as
  ``Negative prompt``, ``CFG scale``, ``Sampler``, ``Size`` = ``512x768`` are accepted); an empty
  cell means "use the default"; a row whose first cell starts with ``#`` is a comment.
- ``.jsonl``: one JSON object per line, keys as in CSV.

Text without a known extension (pasted into the window) is detected from its content: JSON
objects -> JSONL; a first line made only of field names including ``prompt`` -> CSV; else text.
"""

from __future__ import annotations

import codecs
import csv
import hashlib
import io
import json
import os
import re
import shlex
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sdstudio.core.errors import PromptListError, RequestError
from sdstudio.core.fields import InfotextKey
from sdstudio.core.infotext_keys import parse_size
from sdstudio.core.request import FIELD_NAMES, FIELDS, GenerationRequest

FORMATS = ("txt", "csv", "jsonl")



def _key(name: str) -> str:
    return re.sub(r"[\s\-]+", "_", str(name).strip().lower())


# Other names people use for request fields: each field's aliases (A1111 script options, the
# API, CSV headers) and its A1111 infotext key where that holds the plain value ("Denoising
# strength", "CFG scale"); "size" (the infotext's Size: WIDTHxHEIGHT) sets width and height.
ALIASES: dict[str, str] = {
    **{_key(s.infotext.key): s.name for s in FIELDS
       if s.infotext is not None and type(s.infotext) is InfotextKey},
    **{_key(alias): s.name for s in FIELDS for alias in s.aliases},
}
SIZE = "size"
_NAMES = frozenset((*FIELD_NAMES, SIZE))

# A1111 script options that only steer A1111's own saving: ignored with a warning.
IGNORED_OPTIONS = frozenset(
    {"outpath_samples", "outpath_grids", "prompt_for_display", "do_not_save_samples",
     "do_not_save_grid"}
)
# A1111 options that change the image but SD Studio does not support: a line error.
UNSUPPORTED_OPTIONS = frozenset(
    {"styles", "subseed", "subseed_strength", "seed_resize_from_h", "seed_resize_from_w",
     "restore_faces", "tiling"}
)

MAX_LINE_CHARS = 1_000_000  # a JSON Lines line longer than this is that line's error

_EXTENSIONS = {".txt": "txt", ".prompts": "txt", ".csv": "csv", ".jsonl": "jsonl",
               ".ndjson": "jsonl", ".json": "jsonl"}


@dataclass(frozen=True)
class PromptItem:
    """One good line: its 1-based line number in the source, the full request (defaults
    overridden by the line) and the request fields the line set itself."""

    line_no: int
    request: GenerationRequest
    explicit: frozenset[str] = frozenset()

    @property
    def sets_seed(self) -> bool:
        return "seed" in self.explicit


@dataclass(frozen=True)
class LineError:
    line_no: int
    message: str
    field: str | None = None

    def __str__(self) -> str:
        return f"line {self.line_no}: {self.message}"


@dataclass(frozen=True)
class PromptList:
    items: tuple[PromptItem, ...]
    errors: tuple[LineError, ...]
    source_sha256: str
    format: str
    source_name: str = ""
    encoding: str = "utf-8"
    warnings: tuple[LineError, ...] = field(default=())

    @property
    def ok(self) -> bool:
        return not self.errors

    def error_report(self, limit: int = 50) -> str:
        lines = [str(e) for e in self.errors[:limit]]
        if len(self.errors) > limit:
            lines.append(f"... and {len(self.errors) - limit} more bad lines")
        return "\n".join(lines)


# ------------------------------------------------------------------------------- entry point
def parse_prompt_list(
    source: str | os.PathLike[str] | bytes,
    defaults: GenerationRequest | Mapping[str, Any] | None = None,
    *,
    format: str | None = None,  # "txt" | "csv" | "jsonl"; None = detect from name/content
    name: str = "",
) -> PromptList:
    """Parse and validate a prompt list.

    ``source`` is a path (``Path`` / ``os.PathLike``), raw bytes, or the list's text itself
    (``str``). ``defaults`` supplies every field a line does not set. Raises PromptListError
    when the list cannot be read at all; bad lines are returned in ``.errors``."""
    if isinstance(source, os.PathLike):
        path = Path(source)
        name = name or str(path)
        try:
            data = path.read_bytes()
        except FileNotFoundError as exc:
            raise PromptListError(f"prompt list {path} does not exist") from exc
        except IsADirectoryError as exc:
            raise PromptListError(f"prompt list {path} is a folder, not a file") from exc
        except OSError as exc:
            raise PromptListError(f"cannot read prompt list {path}: {exc.strerror}") from exc
        text, encoding = decode_prompt_bytes(data, name=str(path))
        if format is None:
            format = _EXTENSIONS.get(path.suffix.lower())
    elif isinstance(source, bytes):
        data = source
        text, encoding = decode_prompt_bytes(data, name=name or "prompt list")
        if format is None and name:
            format = _EXTENSIONS.get(Path(name).suffix.lower())
    else:
        text, encoding = str(source).lstrip("\ufeff"), "text"
        data = text.encode("utf-8")
    if format is None:
        format = detect_format(text)
    if format not in FORMATS:
        raise PromptListError(f"unknown prompt list format {format!r} (txt, csv or jsonl)")
    base = _defaults_dict(defaults)
    parser = {"txt": _parse_txt, "csv": _parse_csv, "jsonl": _parse_jsonl}[format]
    items: list[PromptItem] = []
    errors: list[LineError] = []
    warnings: list[LineError] = []
    for line_no, fields_or_error in parser(text, warnings):
        if isinstance(fields_or_error, LineError):
            errors.append(fields_or_error)
            continue
        result = _build(line_no, fields_or_error, base)
        (errors if isinstance(result, LineError) else items).append(result)  # type: ignore[arg-type]
    return PromptList(
        items=tuple(items),
        errors=tuple(errors),
        source_sha256=hashlib.sha256(data).hexdigest(),
        format=format,
        source_name=name,
        encoding=encoding,
        warnings=tuple(warnings),
    )


# ---------------------------------------------------------------------------------- encoding
def decode_prompt_bytes(data: bytes, name: str = "prompt list") -> tuple[str, str]:
    """Decode UTF-8 (with or without BOM) or UTF-16 with BOM; refuse anything else clearly.
    Returns (text, encoding name)."""
    if data.startswith(codecs.BOM_UTF32_LE) or data.startswith(codecs.BOM_UTF32_BE):
        raise PromptListError(
            f"{name} is UTF-32; save it as UTF-8 (or UTF-16 with a byte-order mark)"
        )
    if data.startswith(codecs.BOM_UTF8):
        return _strict(data[3:], "utf-8", name), "utf-8-sig"
    if data.startswith(codecs.BOM_UTF16_LE):
        return _strict(data[2:], "utf-16-le", name), "utf-16-le"
    if data.startswith(codecs.BOM_UTF16_BE):
        return _strict(data[2:], "utf-16-be", name), "utf-16-be"
    if b"\x00" in data:
        hint = (
            "it looks like UTF-16 without a byte-order mark"
            if data[1:2] == b"\x00" or data[:1] == b"\x00"
            else "it looks like a binary file, not text"
        )
        raise PromptListError(
            f"{name} is not a text prompt list ({hint}); save it as UTF-8 "
            "or UTF-16 with a byte-order mark"
        )
    return _strict(data, "utf-8", name), "utf-8"


def _strict(data: bytes, encoding: str, name: str) -> str:
    try:
        return data.decode(encoding)
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n" if encoding == "utf-8" else "\n".encode(encoding)) + 1
        label = "UTF-8" if encoding == "utf-8" else "UTF-16"
        raise PromptListError(
            f"{name} is not valid {label} (byte {exc.start} on line {line}); "
            "save it as UTF-8 or UTF-16 with a byte-order mark"
        ) from exc


def detect_format(text: str) -> str:
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith("{"):
            return "jsonl"
        try:
            cells = next(csv.reader([line]))
        except (csv.Error, StopIteration):
            return "txt"
        names = {_field_name(c) for c in cells if c.strip()}
        if len(cells) > 1 and "prompt" in names and names <= _NAMES:
            return "csv"
        return "txt"
    return "txt"


# ---------------------------------------------------------------------------------- parsers
_Parsed = tuple[int, "dict[str, Any] | LineError"]


def _parse_txt(text: str, warnings: list[LineError]) -> list[_Parsed]:
    out: list[_Parsed] = []
    for line_no, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith("--"):
            out.append((line_no, _a1111_options(line_no, line, warnings)))
        else:
            out.append((line_no, {"prompt": line}))
    return out


def _a1111_options(
    line_no: int, line: str, warnings: list[LineError]
) -> dict[str, Any] | LineError:
    try:
        args = shlex.split(line)
    except ValueError as exc:
        return LineError(line_no, f"cannot split the options: {exc} (unbalanced quotes?)")
    res: dict[str, Any] = {}
    pos = 0
    while pos < len(args):
        arg = args[pos]
        if not arg.startswith("--") or len(arg) == 2:
            return LineError(line_no, f"expected an option starting with --, found {arg!r}")
        tag = arg[2:].replace("-", "_").lower()
        if pos + 1 >= len(args) or args[pos + 1].startswith("--"):
            return LineError(line_no, f"option {arg} has no value")
        if tag in ("prompt", "negative_prompt"):
            words = [args[pos + 1]]
            pos += 2
            while pos < len(args) and not args[pos].startswith("--"):
                words.append(args[pos])
                pos += 1
            res[tag] = " ".join(words)
            continue
        value = args[pos + 1]
        pos += 2
        if tag in IGNORED_OPTIONS:
            warnings.append(LineError(line_no, f"option {arg} ignored (A1111 saving option)"))
            continue
        if tag in UNSUPPORTED_OPTIONS:
            return LineError(line_no, f"option {arg} is not supported by SD Studio", tag)
        fld = _field_name(tag)
        if fld not in _NAMES:
            return LineError(line_no, f"unknown option {arg}", tag)
        res[tag] = value
    return res


def _runs_to_the_end(lines: list[str], start: int) -> bool:
    """Whether the row starting on line ``start`` (1-based) of ``lines`` opened a quote that
    is never closed: Python's csv then makes one cell of everything up to the end of the
    file; read strictly, the same lines end with "unexpected end of data"."""
    try:
        for _ in csv.reader(io.StringIO("".join(lines[start - 1:]), newline=""), strict=True):
            pass
    except csv.Error as exc:
        return "unexpected end of data" in str(exc)
    return False


_UNTERMINATED = "unterminated quote: the quoted cell runs to the end of the file"


def _parse_csv(text: str, warnings: list[LineError]) -> list[_Parsed]:
    lines = io.StringIO(text, newline="").readlines()  # as the reader counts them
    rows = csv.reader(io.StringIO(text, newline=""))
    out: list[_Parsed] = []
    header: list[str] | None = None
    last_line = 0
    try:
        for row in rows:
            start, last_line = last_line + 1, rows.line_num
            if not row or all(not c.strip() for c in row):
                continue
            if last_line >= len(lines) and _runs_to_the_end(lines, start):
                if header is None:
                    raise PromptListError(f"CSV header (line {start}): {_UNTERMINATED}")
                out.append((start, LineError(start, _UNTERMINATED)))
                continue
            if header is None:
                if row[0].lstrip().startswith("#"):
                    continue
                header = [c.strip() for c in row]
                unknown = [h for h in header if h and _field_name(h) not in _NAMES]
                if unknown:
                    raise PromptListError(
                        f"CSV header (line {start}) names unknown columns: "
                        + ", ".join(repr(u) for u in unknown)
                    )
                if "prompt" not in {_field_name(h) for h in header}:
                    raise PromptListError(f"CSV header (line {start}) has no 'prompt' column")
                continue
            if row[0].lstrip().startswith("#"):
                continue  # a comment row, as in text lists
            if len(row) > len(header):
                out.append((start, LineError(
                    start, f"{len(row)} cells but the header names {len(header)} columns")))
                continue
            values = {h: c for h, c in zip(header, row, strict=False) if h and c.strip() != ""}
            out.append((start, values))
    except csv.Error as exc:
        raise PromptListError(f"CSV cannot be read at line {rows.line_num}: {exc}") from exc
    if header is None:
        raise PromptListError("CSV prompt list has no header row")
    return out


def _parse_jsonl(text: str, warnings: list[LineError]) -> list[_Parsed]:
    out: list[_Parsed] = []
    for line_no, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if len(line) > MAX_LINE_CHARS:
            out.append((line_no, LineError(
                line_no, f"line too long ({len(line)} characters; at most {MAX_LINE_CHARS})")))
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as exc:
            message = f"not valid JSON: {exc.msg} (column {exc.colno})"
            out.append((line_no, LineError(line_no, message)))
            continue
        except RecursionError:  # arrays or objects nested thousands deep
            out.append((line_no, LineError(line_no, "not valid JSON: nested too deeply")))
            continue
        if not isinstance(obj, dict):
            out.append((line_no, LineError(line_no, "expected a JSON object {...}")))
            continue
        out.append((line_no, obj))
    return out


# --------------------------------------------------------------------------------- building
def _field_name(name: str) -> str:
    key = _key(name)
    return ALIASES.get(key, key)


def _defaults_dict(defaults: GenerationRequest | Mapping[str, Any] | None) -> dict[str, Any]:
    if defaults is None:
        return {}
    if isinstance(defaults, GenerationRequest):
        return defaults.to_dict()
    return {_field_name(k): v for k, v in defaults.items()}


def _size(line_no: int, value: Any) -> tuple[int, int] | LineError:
    try:
        return parse_size(value)
    except ValueError:
        return LineError(line_no, f"size {value!r} is not WIDTHxHEIGHT", SIZE)


def _build(
    line_no: int, raw: Mapping[str, Any], base: Mapping[str, Any]
) -> PromptItem | LineError:
    fields: dict[str, Any] = {}
    for key, value in raw.items():
        name = _field_name(key)
        if name == SIZE:
            size = _size(line_no, value)
            if isinstance(size, LineError):
                return size
            fields["width"], fields["height"] = size
            continue
        if name not in FIELD_NAMES:
            return LineError(line_no, f"unknown field {key!r}", str(key))
        if name in fields and _field_name(key) != key:
            continue  # the field's own name wins over an alias given on the same line
        fields[name] = value
    prompt = fields.get("prompt", base.get("prompt", ""))
    if not isinstance(prompt, str) or not prompt.strip():
        return LineError(line_no, "no prompt on this line", "prompt")
    merged = {**base, **fields, "prompt": prompt}
    try:
        request = GenerationRequest.from_dict(merged).validated()
    except RequestError as exc:
        return LineError(line_no, str(exc), exc.field)
    except (TypeError, ValueError, KeyError) as exc:
        return LineError(line_no, f"bad value: {exc}")
    return PromptItem(line_no, request, frozenset(fields))
