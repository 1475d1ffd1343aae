"""File names for saved images, from a pattern such as ``{date}/{index}-{seed}``.

Tokens: ``{index}`` (next free number in the folder, 5 digits as in AUTOMATIC1111),
``{seed}``, ``{prompt}`` (safe for Windows/macOS/Linux, shortened to about 60 characters at a
word boundary), ``{model}``, ``{date}`` (YYYY-MM-DD), ``{time}`` (HH-MM-SS), ``{sampler}``,
``{width}``, ``{height}``, ``{steps}``, ``{cfg}``. ``/`` makes subfolders. The result never
leaves the output folder: ``..``, absolute paths and drive letters are refused.

Everything here is pure except ``next_index``, which lists one folder.
"""

from __future__ import annotations

import os
import re
import unicodedata
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path, PurePosixPath

from sdstudio.core.errors import BIDI_CONTROLS, SDStudioError
from sdstudio.core.metadata import format_number
from sdstudio.core.request import GenerationInfo, GenerationRequest
from sdstudio.core.settings import DEFAULT_FILENAME_PATTERN

TOKENS: tuple[str, ...] = (
    "index", "seed", "prompt", "model", "date", "time", "sampler", "width", "height", "steps",
    "cfg",
)
INDEX_WIDTH = 5
PROMPT_LIMIT = 60
COMPONENT_LIMIT = 150  # characters per folder/file name...
COMPONENT_BYTES = 200  # ...and UTF-8 bytes (file systems allow 255), leaving room for "-N.png"
INDEX_MARK = "\x00index\x00"  # stands for {index} until the folder has been listed

_TOKEN = re.compile(r"\{([^{}]*)\}")
# refused by some file system, or a control character (C0, DEL, C1, line separators, lone
# surrogates): replaced; bidirectional controls (U+202E shows "gpj.exe" as "exe.jpg"): removed
_INVALID = re.compile('[<>:"/\\\\|?*\x00-\x1f\x7f-\x9f\u2028\u2029\ud800-\udfff]')
_BIDI = re.compile("[" + "".join(sorted(BIDI_CONTROLS)) + "]")
_LORA_TAG = re.compile(r"<lora:[^>]*>")
_WINDOWS_RESERVED = frozenset(
    {"CON", "PRN", "AUX", "NUL"}
    | {f"COM{i}" for i in range(1, 10)}
    | {f"LPT{i}" for i in range(1, 10)}
)

__all__ = [
    "DEFAULT_FILENAME_PATTERN",
    "TOKENS",
    "FilenamePatternError",
    "NamePlan",
    "check_pattern",
    "format_filename",
    "next_index",
    "plan_name",
    "safe_component",
    "safe_prompt",
]


class FilenamePatternError(SDStudioError, ValueError):
    """A file name pattern has an unknown token or would leave the output folder."""


@dataclass(frozen=True)
class NamePlan:
    """A pattern rendered for one image, the index still open.

    ``folder`` is relative to the output folder ("" for itself); the file name is
    ``prefix + <index> + suffix`` when ``has_index``, else ``prefix`` (``suffix`` empty)."""

    folder: str
    prefix: str
    suffix: str
    has_index: bool

    def name(self, index: int | None = None, extension: str = ".png", attempt: int = 0) -> str:
        """The file name for ``index``; ``attempt`` > 0 adds ``-attempt`` (collisions without
        an index token)."""
        if self.has_index:
            if index is None:
                raise ValueError("this pattern needs an index")
            stem = f"{self.prefix}{index:0{INDEX_WIDTH}d}{self.suffix}"
        else:
            stem = self.prefix
        if attempt:
            stem = f"{stem}-{attempt}"
        return stem + extension

    def relative(self, index: int | None = None, extension: str = ".png", attempt: int = 0) -> str:
        name = self.name(index, extension, attempt)
        return f"{self.folder}/{name}" if self.folder else name


def safe_component(text: str, limit: int = COMPONENT_LIMIT, fallback: str = "_") -> str:
    """One folder or file name that every common file system accepts."""
    text = _BIDI.sub("", unicodedata.normalize("NFC", text))
    text = _INVALID.sub("_", text)
    text = " ".join(text.split())  # no tabs/newlines, no runs of spaces
    text = _fit(text, limit)
    text = text.rstrip(". ").lstrip(" ")  # Windows drops trailing dots and spaces
    if not text or set(text) <= {"."}:
        return fallback
    if text.split(".")[0].upper() in _WINDOWS_RESERVED:
        text = "_" + text
    return text


def _fit(text: str, limit: int = COMPONENT_LIMIT, max_bytes: int = COMPONENT_BYTES) -> str:
    text = text[:limit]
    while len(text.encode("utf-8")) > max_bytes:
        text = text[:-1]
    return text


def safe_prompt(prompt: str, limit: int = PROMPT_LIMIT) -> str:
    """The prompt as part of a file name: LoRA tags removed, characters that some file system
    refuses replaced, shortened to about ``limit`` characters at a word boundary."""
    text = _LORA_TAG.sub(" ", _BIDI.sub("", prompt))
    text = _INVALID.sub(" ", text)
    text = " ".join(text.split())
    if len(text) > limit:
        cut = text[: limit + 1]
        space = cut.rfind(" ")
        text = cut[:space] if space >= limit // 2 else text[:limit]
    text = text.strip(" ,.;-_")
    return safe_component(text, limit=limit, fallback="untitled") if text else "untitled"


def _values(
    request: GenerationRequest, info: GenerationInfo | None, now: datetime
) -> dict[str, str]:
    model = (info.model_name if info else "") or (
        PurePosixPath(request.model.replace("\\", "/")).stem if request.model else ""
    )
    return {
        "seed": str(request.seed),
        "prompt": safe_prompt(request.prompt),
        "model": safe_component(model, limit=60, fallback="model"),
        "date": now.strftime("%Y-%m-%d"),
        "time": now.strftime("%H-%M-%S"),
        "sampler": safe_component(request.sampler, limit=40),
        "width": str(request.width),
        "height": str(request.height),
        "steps": str(request.steps),
        "cfg": format_number(request.cfg_scale),
    }


def check_pattern(pattern: str) -> None:
    """Raise FilenamePatternError if ``pattern`` cannot be used (for the settings dialog)."""
    plan_name(pattern, GenerationRequest(prompt="check"), None, now=datetime(2000, 1, 1))


def plan_name(
    pattern: str,
    request: GenerationRequest,
    info: GenerationInfo | None = None,
    *,
    now: datetime | None = None,
) -> NamePlan:
    """Render every token of ``pattern`` except ``{index}``; validate the result."""
    if not isinstance(pattern, str) or not pattern.strip():
        raise FilenamePatternError("the file name pattern is empty")
    values = _values(request, info, now or datetime.now())
    literal_parts = _TOKEN.split(pattern)  # literal, token, literal, token, ...
    out: list[str] = []
    index_count = 0
    for i, part in enumerate(literal_parts):
        if i % 2 == 0:
            if "{" in part or "}" in part:
                raise FilenamePatternError(
                    f"file name pattern {pattern!r} has an unmatched '{{' or '}}'"
                )
            out.append(part.replace("\\", "/"))
        elif part == "index":
            index_count += 1
            out.append(INDEX_MARK)
        elif part in values:
            out.append(values[part].replace("/", "_"))
        else:
            raise FilenamePatternError(
                f"unknown token {{{part}}} in file name pattern {pattern!r}; "
                f"use {', '.join('{' + t + '}' for t in TOKENS)}"
            )
    if index_count > 1:
        raise FilenamePatternError(f"file name pattern {pattern!r} has {{index}} more than once")
    rendered = "".join(out)
    if rendered.startswith("/") or re.match(r"^[A-Za-z]:", rendered):
        raise FilenamePatternError(
            f"file name pattern {pattern!r} must be relative to the output folder"
        )
    raw_parts = rendered.split("/")
    for part in raw_parts:
        if part.strip() in ("..", "."):
            raise FilenamePatternError(
                f"file name pattern {pattern!r} may not use '.' or '..': "
                "files stay inside the output folder"
            )
    parts = [p for p in raw_parts if p.strip()]
    if not parts:
        raise FilenamePatternError(f"file name pattern {pattern!r} gives an empty file name")
    *folders, stem = parts
    if any(INDEX_MARK in f for f in folders):
        raise FilenamePatternError(
            f"file name pattern {pattern!r}: {{index}} may only appear in the file name"
        )
    safe_folders = [safe_component(f) for f in folders]
    if INDEX_MARK in stem:
        prefix, suffix = (_INVALID.sub("_", _BIDI.sub("", p)) for p in stem.split(INDEX_MARK))
        budget = COMPONENT_BYTES - INDEX_WIDTH - 4  # room for a longer index
        while len((prefix + suffix).encode("utf-8")) > budget:
            if len(suffix) >= len(prefix):
                suffix = suffix[:-1]
            else:
                prefix = prefix[:-1]
        suffix = suffix.rstrip(". ")
        return NamePlan("/".join(safe_folders), prefix, suffix, has_index=True)
    return NamePlan("/".join(safe_folders), safe_component(stem), "", has_index=False)


def format_filename(
    pattern: str,
    request: GenerationRequest,
    info: GenerationInfo | None = None,
    *,
    index: int = 0,
    now: datetime | None = None,
    extension: str = ".png",
) -> str:
    """The relative path (``/``-separated) for one image with a given index. Pure."""
    return plan_name(pattern, request, info, now=now).relative(index, extension)


def next_index(folder: Path, plan: NamePlan) -> int:
    """One more than the highest index among the folder's files named like ``plan``
    (0 for an empty or missing folder), as AUTOMATIC1111 numbers its outputs."""
    if not plan.has_index:
        return 0
    highest = -1
    prefix = plan.prefix
    try:
        entries = os.listdir(folder)
    except FileNotFoundError:
        return 0
    for entry in entries:
        if not entry.startswith(prefix):
            continue
        rest = entry[len(prefix):]
        digits = len(rest) - len(rest.lstrip("0123456789"))
        if digits:
            highest = max(highest, int(rest[:digits]))
    return highest + 1
