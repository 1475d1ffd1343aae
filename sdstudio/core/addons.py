"""LoRA and embedding files for the prompt panel's picker: names, previews, trigger words.

Torch-free and bounded, for the window (the engine loads these files; this only looks at
them):

* :func:`list_addons` walks the LoRA or embedding folders (``core.paths.named_files``) and
  names each file as a prompt refers to it: a LoRA by its file name without the suffix (its
  path in the folder when two files share that name), an embedding by its file name (the
  token the engine loads it as). A preview is an image next to the file, found as A1111
  finds it: ``name.png``, ``name.preview.png``, then ``.jpg``, ``.jpeg``, ``.webp``, ``.gif``.
* :func:`read_details` reads what the person or the trainer wrote about a file: A1111's own
  notes beside it (``name.json``: "activation text", "preferred weight"), the safetensors
  metadata's ``modelspec.trigger_phrase`` and the training captions' tags
  (``ss_tag_frequency``, ordered by count as A1111's Lora page shows them). Only the 8-byte
  length and the JSON header of a safetensors file are read, at most
  :data:`MAX_HEADER_BYTES`; a bad file gives one line in ``AddonDetails.note``, never an
  exception.

Everything from a file is data: names are shown and inserted as text, never used as paths;
previews and notes are only those inside the folder they belong to (resolved, then checked).
"""

from __future__ import annotations

import os
import re
import stat
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sdstudio.core import safejson
from sdstudio.core.paths import named_files

LORA_SUFFIXES = (".safetensors", ".ckpt", ".pt", ".pth", ".bin")  # as the engine loads them
EMBEDDING_SUFFIXES = (".safetensors", ".pt", ".bin")
PREVIEW_EXTENSIONS = ("png", "jpg", "jpeg", "webp", "gif")
MAX_HEADER_BYTES = 16 * 1024 * 1024  # LoRA headers are tens of KB; with tag lists, a few MB
MAX_NOTES_BYTES = 1024 * 1024  # A1111's name.json notes are a few hundred bytes
MAX_TAGS = 24  # A1111's Lora page shows the 24 most frequent training tags
KINDS = {"lora": LORA_SUFFIXES, "embedding": EMBEDDING_SUFFIXES}

_WORD = re.compile(r"[-_\w']+")


@dataclass(frozen=True)
class Addon:
    kind: str  # "lora" or "embedding"
    name: str  # as the prompt names it: <lora:NAME:1>, or the embedding's token
    path: Path
    folder: Path  # the LoRA / embedding folder it was found in
    preview: Path | None = None

    @property
    def insertable(self) -> bool:
        """Whether the name can go into a prompt (a LoRA tag ends at ``:`` and ``>``)."""
        return bool(self.name) and not (self.kind == "lora" and any(c in self.name for c in ":<>"))


@dataclass(frozen=True)
class AddonDetails:
    activation_text: str = ""  # what A1111 inserts with the LoRA (the person's own notes)
    preferred_weight: float | None = None  # from A1111's notes; None = 1
    tags: tuple[tuple[str, int], ...] = ()  # training tags, most frequent first
    note: str = ""  # one line when the file or its notes could not be read
    extra: Mapping[str, str] = field(default_factory=dict)  # trigger phrase, base model...


def list_addons(kind: str, dirs: Iterable[str], limit: int = 2000) -> list[Addon]:
    """The LoRA (``kind="lora"``) or embedding files in ``dirs``, sorted by name."""
    suffixes = KINDS[kind]
    found: list[Addon] = []
    names: dict[str, int] = {}
    for folder in dirs:
        base = Path(folder).expanduser()
        for rel, path in named_files((folder,), suffixes, limit):
            name = rel.rsplit("/", 1)[-1]
            if kind == "embedding" and name in names:
                continue  # the engine loads the first file of a token only
            names[name] = names.get(name, 0) + 1
            found.append(Addon(kind, name, path, base, find_preview(path, base)))
    if kind == "lora":  # two files with one name: name them by their path in the folder
        found = [a if names[a.name] == 1 else Addon(
            a.kind, a.path.relative_to(a.folder).with_suffix("").as_posix(), a.path, a.folder,
            a.preview) for a in found]
    return sorted(found, key=lambda a: a.name.lower())


def _inside(path: Path, folder: Path) -> Path | None:
    """``path`` resolved when it is a regular file inside ``folder`` (resolved), else None."""
    try:
        resolved = path.resolve()
        if not resolved.is_relative_to(folder.resolve()):
            return None
        return resolved if stat.S_ISREG(resolved.stat().st_mode) else None
    except (OSError, RuntimeError, ValueError):
        return None


def find_preview(path: Path, folder: Path) -> Path | None:
    """The preview image beside ``path`` (A1111's names), if it is inside ``folder``."""
    stem = path.with_suffix("")
    for ext in PREVIEW_EXTENSIONS:
        for candidate in (f"{stem.name}.{ext}", f"{stem.name}.preview.{ext}"):
            found = _inside(stem.with_name(candidate), folder)
            if found is not None:
                return found
    return None


class HeaderError(ValueError):
    """A safetensors header that cannot be read (the message is one line)."""


def safetensors_metadata(path: Path, max_bytes: int = MAX_HEADER_BYTES) -> dict[str, str]:
    """The ``__metadata__`` of a safetensors file from its header alone (HeaderError for a
    file that is not one, a header that is too large, truncated or not JSON; OSError when it
    cannot be read). Values are strings, as the format stores them."""
    flags = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_BINARY", 0)
    fd = os.open(path, flags)
    st = os.fstat(fd)
    if not stat.S_ISREG(st.st_mode):
        os.close(fd)
        raise HeaderError(f"{path.name} is not a regular file")
    with os.fdopen(fd, "rb") as fh:
        head = fh.read(9)
        if len(head) < 9 or head[8:9] != b"{":
            raise HeaderError(f"{path.name} is not a safetensors file")
        length = int.from_bytes(head[:8], "little")
        if length < 2:
            raise HeaderError(f"{path.name} is not a safetensors file (empty header)")
        if length > max_bytes:
            raise HeaderError(f"{path.name}: its safetensors header is too large "
                              f"({length:,} bytes; at most {max_bytes:,})")
        if 8 + length > st.st_size:
            raise HeaderError(f"{path.name} is truncated (its header is longer than the file)")
        raw = head[8:] + fh.read(length - 1)
    if len(raw) != length:
        raise HeaderError(f"{path.name} is truncated (in its header)")
    try:
        header = safejson.loads(raw, max_bytes=max_bytes, max_depth=8)
    except ValueError as exc:
        raise HeaderError(f"{path.name}: its safetensors header is not valid ({exc})") from None
    if not isinstance(header, dict):
        raise HeaderError(f"{path.name}: its safetensors header is not a JSON object")
    meta = header.get("__metadata__") or {}
    if not isinstance(meta, dict):
        raise HeaderError(f"{path.name}: its safetensors metadata is not a JSON object")
    return {str(k): v for k, v in meta.items() if isinstance(v, str)}


def training_tags(metadata: Mapping[str, str],
                  limit: int = MAX_TAGS) -> tuple[tuple[str, int], ...]:
    """The training captions' tags by frequency, as A1111's Lora page lists them: the counts
    of ``ss_tag_frequency`` (kohya's trainer) summed over its datasets; when the captions are
    sentences rather than tags (16 characters or more on average), their words of three
    letters or more instead. ValueError when the value is not the JSON kohya writes."""
    text = metadata.get("ss_tag_frequency")
    if not text:
        return ()
    data = safejson.loads(text, max_bytes=MAX_HEADER_BYTES, max_depth=4)
    tags: dict[str, int] = {}
    if not isinstance(data, dict):
        raise ValueError("ss_tag_frequency is not a JSON object")
    for per_dataset in data.values():
        if not isinstance(per_dataset, dict):
            continue
        for tag, count in per_dataset.items():
            if isinstance(count, int) and not isinstance(count, bool) and count > 0:
                tag = str(tag).strip()
                if tag:
                    tags[tag] = tags.get(tag, 0) + count
    if tags and sum(len(t) for t in tags) / len(tags) >= 16:
        words: dict[str, int] = {}
        for tag, count in tags.items():
            for word in _WORD.findall(tag):
                if len(word) >= 3:
                    words[word] = words.get(word, 0) + count
        tags = words
    ordered = sorted(tags.items(), key=lambda kv: kv[1], reverse=True)
    return tuple((tag[:200], count) for tag, count in ordered[:limit])


def read_notes(addon: Addon) -> dict[str, Any]:
    """A1111's notes on a file (``name.json`` beside it, written by its "Edit metadata"
    dialog): {} when there are none. ValueError / OSError for a file that cannot be used."""
    notes = _inside(addon.path.with_suffix(".json"), addon.folder)
    if notes is None:
        return {}
    data = safejson.load_file(notes, max_bytes=MAX_NOTES_BYTES, max_depth=8)
    if not isinstance(data, dict):
        raise ValueError(f"{notes.name} is not a JSON object")
    return data


def read_details(addon: Addon) -> AddonDetails:
    """Trigger words and notes for ``addon``; never raises (see ``AddonDetails.note``)."""
    problems: list[str] = []
    activation, weight = "", None
    try:
        notes = read_notes(addon)
    except (OSError, ValueError) as exc:
        notes = {}
        problems.append(f"{addon.path.with_suffix('.json').name}: {_one_line(exc)}")
    if isinstance(notes.get("activation text"), str):
        activation = notes["activation text"].strip()
    value = notes.get("preferred weight")
    if isinstance(value, (int, float)) and not isinstance(value, bool) and value:
        weight = float(value) if abs(float(value)) <= 100 else None
    meta: dict[str, str] = {}
    tags: tuple[tuple[str, int], ...] = ()
    if addon.path.suffix.lower() == ".safetensors":
        try:
            meta = safetensors_metadata(addon.path)
            tags = training_tags(meta)
        except (OSError, ValueError) as exc:
            problems.append(_one_line(exc) if isinstance(exc, HeaderError)
                            else f"{addon.path.name}: {_one_line(exc)}")
    extra = {label: meta[key].strip()[:500] for key, label in (
        ("modelspec.trigger_phrase", "Trigger phrase"), ("ss_sd_model_name", "Trained on"),
        ("modelspec.architecture", "Architecture"), ("ss_output_name", "Output name"))
        if meta.get(key, "").strip()}
    return AddonDetails(activation, weight, tags, "; ".join(problems), extra)


def _one_line(exc: BaseException) -> str:
    text = getattr(exc, "strerror", None) or str(exc) or type(exc).__name__
    return text.splitlines()[0][:300]


def lora_tag(name: str, weight: float | None = None) -> str:
    """``<lora:name:1>`` (A1111's tag; the weight as short as it reads)."""
    w = 1.0 if weight is None else weight
    return f"<lora:{name}:{w:g}>"
