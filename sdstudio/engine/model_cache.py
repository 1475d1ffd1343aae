"""Checkpoints kept in RAM between switches (A1111's "Checkpoints to cache in RAM").

When the engine switches from model A to model B, A's loaded components can stay in RAM so
that switching back to A is near-instant instead of a cold load. What is kept is the loaded
model itself, made pristine first: LoRAs removed (the original weights copied back), its own
VAE back, textual-inversion embeddings unloaded, IP-Adapters and ControlNets freed, offload
hooks removed, and on a GPU the weights moved to the CPU (back to the GPU on switch-to). On
the CPU path the weights simply stay where they are.

The setting (``EngineSettings.checkpoint_cache``) is how many models *besides the one in use*
are kept: 0 = none (every switch frees the previous model), N = up to N, ``AUTO`` (-1, the
default) = one when the computer's available memory holds it with room to spare
(:func:`capacity`). Whatever the setting, the least recently used models are freed first
when the available memory would drop below a margin (:func:`evictions`); both decisions are
pure functions of numbers, tested without a model.

An entry is keyed by the model reference, the file's identity (size and modification time of
the file or of every weight file in a folder: a changed file is loaded afresh) and what the
weights were loaded as (device, dtype, compiled or not).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from sdstudio.core.settings import MAX_CACHED_CHECKPOINTS

AUTO = -1
MAX_CACHED = MAX_CACHED_CHECKPOINTS  # the most a setting may ask for
MEMORY_MARGIN = 2 * 2**30  # left to the rest of the computer after keeping a model


def available_memory() -> int:
    """The RAM the computer can give without swapping (psutil's ``available``)."""
    import psutil

    return int(psutil.virtual_memory().available)


def capacity(setting: int, available: int, model_bytes: int,
             margin: int = MEMORY_MARGIN) -> int:
    """How many models besides the loaded one to keep in RAM.

    ``setting`` 0 = none, N > 0 = N (at most :data:`MAX_CACHED`), :data:`AUTO` = 1 when
    ``available`` bytes hold one more model of ``model_bytes`` and still leave ``margin``,
    else 0. (Keeping a model costs its size in RAM: on the CPU path the next model is loaded
    beside it; on a GPU the kept one moves into RAM.)"""
    if setting == 0 or model_bytes <= 0:
        return 0
    if setting > 0:
        return min(int(setting), MAX_CACHED)
    return 1 if available >= model_bytes + margin else 0


def evictions(sizes: Sequence[int], capacity: int, available: int, needed: int = 0,
              margin: int = MEMORY_MARGIN) -> int:
    """How many of the kept models to free, oldest (least recently used) first: enough that
    at most ``capacity`` remain and that ``available`` bytes, plus what the freed ones give
    back, cover ``needed`` (the model about to be loaded) and the ``margin``."""
    count = max(0, len(sizes) - max(0, capacity))
    freed = sum(sizes[:count])
    while count < len(sizes) and available + freed < needed + margin:
        freed += sizes[count]
        count += 1
    return count


def _stat_stamp(path: Path) -> str:
    st = path.stat()
    return f"{st.st_size}:{st.st_mtime_ns}"


def source_stamp(path: Path) -> str:
    """The identity of a model on disk: a file's size and modification time, or a folder's
    model_index.json and every weight file's. "" when it cannot be read (never cached)."""
    try:
        if path.is_file():
            return _stat_stamp(path)
        parts = [_stat_stamp(path / "model_index.json")]
        for weight in sorted(path.rglob("*.safetensors")):
            parts.append(f"{weight.relative_to(path)}={_stat_stamp(weight)}")
        return "|".join(parts)
    except OSError:
        return ""


def cache_key(ref_key: str, path: Path, *loaded_as: object) -> str:
    """The cache key of a model: its reference, its files' identity and how it was loaded
    (device, dtype, ...). "" = not cacheable (its files could not be read)."""
    stamp = source_stamp(Path(path))
    if not stamp:
        return ""
    return "\n".join((ref_key, stamp, *(str(part) for part in loaded_as)))


def disk_bytes(path: Path) -> int:
    """A model's size on disk (a file, or a folder's weight files)."""
    try:
        if path.is_file():
            return path.stat().st_size
        return sum(p.stat().st_size for p in path.rglob("*.safetensors") if p.is_file())
    except OSError:
        return 0


def loaded_estimate(path: Path, element_size: int) -> int:
    """What a model will take once loaded: its size on disk, scaled for fp32 (files are
    fp16 as a rule)."""
    return disk_bytes(path) * max(1, element_size // 2)


def unload_embeddings(pipe: Any, attr: str) -> None:
    """Remove the textual-inversion tokens the engine added (their names are in
    ``pipe.<attr>``) from every tokenizer / text encoder pair, so that a cached model comes
    back as its file made it; the engine loads the embeddings again on the next run."""
    if not getattr(pipe, attr, None):
        return
    pairs = [(getattr(pipe, "tokenizer", None), getattr(pipe, "text_encoder", None)),
             (getattr(pipe, "tokenizer_2", None), getattr(pipe, "text_encoder_2", None))]
    for tokenizer, encoder in pairs:
        if tokenizer is not None and encoder is not None:
            pipe.unload_textual_inversion(tokenizer=tokenizer, text_encoder=encoder)
    setattr(pipe, attr, {})


class ModelCache:
    """The kept models, least recently used first. It only holds them; the engine makes a
    model pristine before :meth:`put` and frees what :meth:`trim` / :meth:`clear` return."""

    def __init__(self) -> None:
        self._entries: OrderedDict[str, tuple[Any, int]] = OrderedDict()

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, key: object) -> bool:
        return key in self._entries

    def keys(self) -> list[str]:
        return list(self._entries)

    def sizes(self) -> list[int]:
        """The kept models' sizes, least recently used first."""
        return [nbytes for _model, nbytes in self._entries.values()]

    def take(self, key: str) -> Any | None:
        """The model kept under ``key``, removed from the cache (the caller owns it now)."""
        entry = self._entries.pop(key, None) if key else None
        return None if entry is None else entry[0]

    def put(self, key: str, model: Any, nbytes: int) -> None:
        self._entries.pop(key, None)
        self._entries[key] = (model, int(nbytes))

    def trim(self, capacity: int, available: int, needed: int = 0,
             margin: int = MEMORY_MARGIN) -> list[Any]:
        """Remove (and return, oldest first) the models :func:`evictions` says to free."""
        count = evictions(self.sizes(), capacity, available, needed, margin)
        return [self._entries.popitem(last=False)[1][0] for _ in range(count)]

    def clear(self) -> list[Any]:
        models = [model for model, _nbytes in self._entries.values()]
        self._entries.clear()
        return models

