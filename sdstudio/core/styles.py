"""Prompt styles in AUTOMATIC1111's ``styles.csv`` format, read and written as A1111 does.

A style is a name, a prompt and a negative prompt. Applying it (:func:`merge_prompt`, A1111's
``merge_prompts``): a style text holding ``{prompt}`` has the prompt put in its place;
otherwise the style text is added after the prompt with ", " between (empty parts left out).
The prompt and the negative prompt are merged each with its own style text.

The file: CSV (Excel dialect: ``\\r\\n`` line ends, quotes only where needed, ``""`` for a
quote), UTF-8 with a byte-order mark, header ``name,prompt,negative_prompt``. Reading takes
what every A1111 version writes and reads: with or without the BOM, spaces after the commas,
the old ``name,text`` header, rows with fewer cells, blank rows and rows whose name starts
with ``#`` (A1111 1.7's dividers) skipped; a later row with the same name wins. Writing keeps
the previous file as ``styles.csv.bak`` (as A1111 does) and replaces the file atomically.

SD Studio's own collection is ``styles.csv`` in its config folder. Pure Python: no Qt.
"""

from __future__ import annotations

import csv
import io
import os
import shutil
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from sdstudio.core import paths
from sdstudio.core.errors import SDStudioError
from sdstudio.core.files import FileRefused, read_regular, write_atomic

FIELDNAMES = ("name", "prompt", "negative_prompt")
MAX_STYLES_BYTES = 32 * 1024 * 1024  # the large shared collections are a few MB


class StylesError(SDStudioError):
    """A styles file that cannot be read or written (one line for the person)."""


@dataclass(frozen=True)
class Style:
    name: str
    prompt: str = ""
    negative_prompt: str = ""


def styles_path() -> Path:
    """SD Studio's own styles file (in A1111's format)."""
    return paths.config_dir() / "styles.csv"


def merge_prompt(style_text: str, prompt: str) -> str:
    """A1111's ``merge_prompts``: the prompt in place of ``{prompt}``, else the style text
    after the prompt."""
    if "{prompt}" in style_text:
        return style_text.replace("{prompt}", prompt)
    return ", ".join(part for part in (prompt.strip(), style_text.strip()) if part)


def apply_style(style: Style, prompt: str, negative_prompt: str) -> tuple[str, str]:
    """The prompt and negative prompt with ``style`` applied to each."""
    return merge_prompt(style.prompt, prompt), merge_prompt(style.negative_prompt,
                                                            negative_prompt)


def parse_styles(text: str, source: str = "styles.csv") -> list[Style]:
    """The styles in the text of a ``styles.csv`` (a leading BOM is dropped). StylesError
    for a file that is not one."""
    text = text.removeprefix("\ufeff")
    reader = csv.DictReader(io.StringIO(text, newline=""), skipinitialspace=True)
    found: dict[str, Style] = {}
    try:
        columns = reader.fieldnames or []
        if not columns:
            return []
        if "name" not in columns:
            raise StylesError(f"{source} is not a styles file: its first line names no "
                              f"“name” column (it has {_columns(columns)})")
        if "prompt" not in columns and "text" not in columns:
            raise StylesError(f"{source} is not a styles file: it has no “prompt” column")
        for row in reader:
            name = row.get("name")
            if not name or name.startswith("#"):
                continue
            prompt = row.get("prompt") if "prompt" in columns else row.get("text")
            found[name] = Style(name, prompt or "", row.get("negative_prompt") or "")
    except csv.Error as exc:
        raise StylesError(f"{source}, line {reader.line_num}: not valid CSV ({exc})") from None
    return list(found.values())


def _columns(columns: Iterable[str]) -> str:
    shown = [c[:40] for c in list(columns)[:5]]
    return ", ".join(f"“{c}”" for c in shown) or "none"


def format_styles(styles: Iterable[Style]) -> str:
    """The CSV text A1111 writes for ``styles`` (without the BOM, which the writer adds)."""
    out = io.StringIO(newline="")
    writer = csv.DictWriter(out, fieldnames=FIELDNAMES)
    writer.writeheader()
    for style in styles:
        writer.writerow({"name": style.name, "prompt": style.prompt,
                         "negative_prompt": style.negative_prompt})
    return out.getvalue()


def read_styles(path: str | os.PathLike[str]) -> list[Style]:
    """The styles of a ``styles.csv``: [] when the file does not exist; StylesError for one
    that is not a regular file, is too large, is not UTF-8 or not a styles CSV."""
    p = Path(path)
    try:
        raw = read_regular(p, MAX_STYLES_BYTES, "styles file")
    except FileNotFoundError:
        return []
    except FileRefused as exc:
        raise StylesError(str(exc), str(p)) from None
    except OSError as exc:
        raise StylesError(f"cannot read {p.name}: {exc.strerror or exc}", str(p)) from None
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise StylesError(f"{p.name} is not UTF-8 text (byte {exc.start}); A1111 writes "
                          "styles.csv as UTF-8", str(p)) from None
    return parse_styles(text, p.name)


def write_styles(styles: Iterable[Style], path: str | os.PathLike[str] | None = None) -> Path:
    """Write ``styles`` as A1111 does (UTF-8 with BOM), keeping the old file as ``.bak``;
    atomic: a temp file in the same folder, fsync, rename. StylesError when it fails."""
    p = Path(path) if path is not None else styles_path()
    data = format_styles(styles).encode("utf-8-sig")
    try:
        if p.is_file():
            shutil.copyfile(p, p.with_name(p.name + ".bak"))
        write_atomic(p, data, prefix=".styles-")
    except OSError as exc:
        raise StylesError(f"cannot write {p.name}: {exc.strerror or exc}", str(p)) from None
    return p


def merged(existing: Iterable[Style], added: Iterable[Style]) -> tuple[list[Style], int]:
    """``existing`` with ``added`` put in (a style with a name already there replaces it in
    its place; new ones go at the end), and how many were replaced."""
    out = {s.name: s for s in existing}
    replaced = 0
    for style in added:
        if style.name in out and out[style.name] != style:
            replaced += 1
        out[style.name] = style
    return list(out.values()), replaced
