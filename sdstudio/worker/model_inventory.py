"""The model manager's listing: every installed model file by kind, with its architecture,
size, short hash and where it lives.

Folders (:func:`model_folders`): SD Studio's own (``core.paths.model_dir(kind)``), the ones
in the settings, and other apps' folders found by ``core.other_apps`` (labelled with the
app). Each is walked once, however many of those name it.

Architecture from the file's bytes, never its name: checkpoints as the model bar lists them
(``engine.library.scan``: the safetensors header's tensor names and shapes, a diffusers
folder's configs); the other kinds from the safetensors header alone: the metadata's
``modelspec.architecture`` / ``ss_base_model_version``, else the text-conditioning width of
a cross-attention weight (768 = SD 1.x, 1024 = SD 2.x, 2048 = SDXL), SDXL's second text
encoder's LoRA keys, an embedding's ``clip_g``. Only headers are read here (at most
``engine.checkpoint.MAX_HEADER_BYTES``); a pickle is never opened. Short hashes are
AUTOMATIC1111's (the sha256's first 10 hex digits), taken from the hash cache when it has
them; :func:`compute_short_hash` computes (and caches) one.

Blocking and torch-free: the window runs it on a background thread. ``sdstudio.engine`` is
imported inside the functions only (its header readers do not import torch).
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from sdstudio.core import paths
from sdstudio.core.settings import EngineSettings

KIND_LABELS = {"checkpoint": "Checkpoints", "lora": "LoRAs", "vae": "VAEs",
               "embedding": "Embeddings", "upscaler": "Upscalers", "controlnet": "ControlNets"}
KINDS = tuple(KIND_LABELS)
SUFFIXES = {
    "lora": (".safetensors", ".ckpt", ".pt", ".pth", ".bin"),
    "vae": (".safetensors", ".ckpt", ".pt", ".pth"),
    "embedding": (".safetensors", ".pt", ".bin"),
    "upscaler": (".pth", ".pt", ".safetensors"),
    "controlnet": (".safetensors", ".pth", ".pt", ".bin"),
}
OTHER_APP_KINDS = {"checkpoints": "checkpoint", "loras": "lora", "vae": "vae",
                   "embeddings": "embedding", "upscalers": "upscaler",
                   "controlnet": "controlnet"}
OWN = "SD Studio"
CONFIGURED = "Settings"
MAX_FILES = 5000  # per kind
_CONTEXT_ARCH = {768: "sd1", 1024: "sd2", 2048: "sdxl"}
_CROSS_ATTENTION_KEYS = ("attn2.to_k.weight", "attn2_to_k.lora_down.weight",
                         "attn2.to_k.lora_down.weight", "attn2.to_k.lora_A.weight")


@dataclass(frozen=True)
class Folder:
    kind: str  # a key of KIND_LABELS
    path: str
    origin: str  # OWN, CONFIGURED or another app's name


@dataclass(frozen=True)
class InstalledModel:
    kind: str
    name: str  # as SD Studio names it (the path in its folder, without the suffix)
    path: str
    arch: str  # "sd1", "sd2-v", "sdxl", ... or "" when the file does not say
    size: int  # bytes (a diffusers folder: all its files)
    short_hash: str | None  # A1111's 10 hex digits; None until computed
    origin: str  # OWN, CONFIGURED or the app whose folder it is in
    folder: str  # the model folder it was found in
    problem: str = ""  # why it cannot be used ("" = fine)

    @property
    def where(self) -> str:
        return self.origin if self.origin in (OWN, CONFIGURED) else f"{self.origin} folder"


_Item = TypeVar("_Item", Folder, InstalledModel)


def preferred_size(arch: str) -> int:
    """The side a model of ``arch`` was trained at: 1024 SDXL, 768 SD 2.x v-prediction
    (768-v), else 512."""
    if arch.startswith("sdxl"):
        return 1024
    if arch.startswith("sd2-v"):
        return 768
    return 512


def model_folders(engine: EngineSettings, found: Iterable[Any] = ()) -> list[Folder]:
    """The folders to list: SD Studio's own per kind, other apps' (``found``: the
    ``core.other_apps.FoundFolder`` of a search), then the configured ones. A folder named
    twice is listed once, under the first origin."""
    folders: list[Folder] = [Folder(kind, str(paths.model_dir(kind)), OWN) for kind in KINDS]
    for item in found:
        kind = OTHER_APP_KINDS.get(getattr(item, "kind", ""))
        if kind is not None:
            folders.append(Folder(kind, str(item.folder), str(item.app)))
    for kind, setting in paths.SETTINGS_DIRS.items():
        for folder in getattr(engine, setting, ()) or ():
            folders.append(Folder(kind, str(folder), CONFIGURED))
    return _unique(folders)


def _norm(folder: str) -> str:
    try:
        return os.path.normcase(str(Path(folder).expanduser().resolve()))
    except (OSError, RuntimeError):
        return os.path.normcase(folder)


def list_installed(folders: Sequence[Folder]) -> list[InstalledModel]:
    """Every model file in ``folders``, by kind then name (blocking; torch-free)."""
    from sdstudio.engine import hashing, library

    cache = hashing._load_cache()
    out: list[InstalledModel] = []
    seen: set[str] = set()
    counts: dict[str, int] = {}
    for folder in folders:
        base = Path(folder.path).expanduser()
        if not base.is_dir():
            continue
        if folder.kind == "checkpoint":
            for entry in library.scan([base]):
                out.append(InstalledModel("checkpoint", entry.name, str(entry.path),
                                          "" if entry.arch == "?" else entry.arch,
                                          entry.size_bytes, entry.short_hash, folder.origin,
                                          folder.path, _one_line(entry.problem)))
            continue
        for path in _files(base, SUFFIXES[folder.kind]):
            key = _norm(str(path))
            if key in seen or counts.get(folder.kind, 0) >= MAX_FILES:
                continue
            seen.add(key)
            counts[folder.kind] = counts.get(folder.kind, 0) + 1
            try:
                size = path.stat().st_size
            except OSError:
                continue
            arch, problem = file_arch(folder.kind, path)
            sha = library.cached_hash(path, cache)
            name = path.relative_to(base).with_suffix("").as_posix()
            out.append(InstalledModel(folder.kind, name, str(path), arch, size,
                                      sha[:10] if sha else None, folder.origin, folder.path,
                                      problem))
    order = {kind: i for i, kind in enumerate(KINDS)}
    out.sort(key=lambda m: (order.get(m.kind, 99), m.name.lower(), m.path))
    return _unique(out)


def _unique(items: list[_Item]) -> list[_Item]:
    """``items`` without the repeats of one (kind, resolved path): the first one stays."""
    seen: set[tuple[str, str]] = set()
    unique = []
    for item in items:
        key = (item.kind, _norm(item.path))
        if key not in seen:
            seen.add(key)
            unique.append(item)
    return unique


def _files(base: Path, suffixes: tuple[str, ...]) -> Iterable[Path]:
    for root, dirs, files in os.walk(base):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        for name in sorted(files):
            if name.lower().endswith(suffixes) and not name.startswith("."):
                yield Path(root) / name


def arch_from_metadata(metadata: Mapping[str, str]) -> str:
    """The base model a file says it was made for (kohya's and Stability's metadata)."""
    text = (metadata.get("modelspec.architecture") or metadata.get("ss_base_model_version")
            or "").lower()
    if not text:
        return ""
    if "xl" in text:
        return "sdxl"
    if "v2" in text or "sd2" in text or "v-2" in text:
        return "sd2"
    if "v1" in text or "sd1" in text or "v-1" in text:
        return "sd1"
    return ""


def arch_from_shapes(shapes: Mapping[str, tuple[int, ...]]) -> str:
    """The base model from tensor names and shapes: SDXL's second text encoder or ``clip_g``,
    else the width of a cross-attention key projection's input (the text conditioning)."""
    if any(k.startswith(("lora_te2_", "lora_te1_")) for k in shapes) or "clip_g" in shapes:
        return "sdxl"
    for name, shape in shapes.items():
        if (name.endswith(_CROSS_ATTENTION_KEYS) and shape
                and shape[-1] in _CONTEXT_ARCH):
            return _CONTEXT_ARCH[shape[-1]]
    for name in ("emb_params", "clip_l"):  # an embedding's vectors: 768 or 1024 wide
        vectors = shapes.get(name)
        if vectors and vectors[-1] in _CONTEXT_ARCH:
            return _CONTEXT_ARCH[vectors[-1]]
    return ""


def file_arch(kind: str, path: Path) -> tuple[str, str]:
    """(architecture or "", problem or "") of a LoRA / VAE / embedding / upscaler /
    ControlNet file, from its header only."""
    from sdstudio.core.control import describe_file
    from sdstudio.core.errors import ModelError
    from sdstudio.engine import checkpoint

    if kind == "controlnet":  # as the Control section lists them (a pickle: by its name)
        return describe_file(path)[1] or "", ""
    try:
        fmt = checkpoint.detect_format(path)
        if fmt != "safetensors":
            return "", ""  # a PyTorch file: its architecture shows when it is loaded
        header = checkpoint.read_safetensors_header(path)
    except (ModelError, OSError) as exc:
        return "", _one_line(str(exc))
    if kind == "upscaler":
        return "", ""
    return arch_from_metadata(header.metadata) or arch_from_shapes(header.shapes()), ""


def compute_short_hash(path: str) -> str:
    """A1111's short hash of a file or diffusers folder (computed, then cached)."""
    from sdstudio.engine import hashing

    return hashing.model_sha256(path)[:10]


def _one_line(text: str) -> str:
    return text.splitlines()[0][:300] if text else ""
