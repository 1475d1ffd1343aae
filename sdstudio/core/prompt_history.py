"""The prompts a person generated with, newest first: bounded, searchable, persisted.

Each entry is a prompt with its negative prompt. Adding one that is already there moves it to
the top (duplicates are folded, so the list is of distinct prompts); past ``limit`` entries
(500) the oldest go. :meth:`PromptHistory.search` keeps the entries holding every word of the
query, in the prompt or the negative prompt, ignoring case.

Persisted as JSON (``prompt_history.json`` in SD Studio's data folder), written atomically.
A damaged file is moved aside as ``prompt_history.json.bad-<time>`` and an empty history
used; entries that are not two strings are skipped. Pure Python: no Qt.
"""

from __future__ import annotations

import contextlib
import json
import os
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sdstudio.core import paths, safejson
from sdstudio.core.files import write_atomic

LIMIT = 500
MAX_PROMPT_CHARS = 50_000  # longer texts are not kept (a pasted document, not a prompt)
MAX_FILE_BYTES = 64 * 1024 * 1024  # 500 entries of the longest prompts kept


@dataclass(frozen=True)
class HistoryEntry:
    prompt: str
    negative_prompt: str = ""
    time: float = 0.0  # when it was last used (seconds since the epoch)

    def key(self) -> tuple[str, str]:
        return self.prompt.strip(), self.negative_prompt.strip()

    def matches(self, words: Iterable[str]) -> bool:
        haystack = f"{self.prompt}\n{self.negative_prompt}".casefold()
        return all(w in haystack for w in words)


class PromptHistory:
    """Distinct (prompt, negative prompt) pairs, newest first, at most ``limit``."""

    def __init__(self, entries: Iterable[HistoryEntry] = (), limit: int = LIMIT) -> None:
        self.limit = max(1, limit)
        self._entries: list[HistoryEntry] = []
        seen: set[tuple[str, str]] = set()
        for entry in entries:  # newest first: a later duplicate is older, dropped
            if entry.key() not in seen and entry.prompt.strip():
                seen.add(entry.key())
                self._entries.append(entry)
        del self._entries[self.limit:]

    @property
    def entries(self) -> list[HistoryEntry]:
        return list(self._entries)

    def __len__(self) -> int:
        return len(self._entries)

    def add(self, prompt: str, negative_prompt: str = "", when: float | None = None) -> bool:
        """Put a prompt at the top (moving it there when it is already in). Empty and overly
        long prompts are not kept; returns whether the history changed."""
        if not prompt.strip() or len(prompt) + len(negative_prompt) > MAX_PROMPT_CHARS:
            return False
        entry = HistoryEntry(prompt, negative_prompt, time.time() if when is None else when)
        top = self._entries[0] if self._entries else None
        self._entries = [entry, *(e for e in self._entries if e.key() != entry.key())]
        del self._entries[self.limit:]
        return top is None or (top.prompt, top.negative_prompt) != (prompt, negative_prompt)

    def remove(self, entry: HistoryEntry) -> None:
        self._entries = [e for e in self._entries if e.key() != entry.key()]

    def clear(self) -> None:
        self._entries = []

    def search(self, query: str) -> list[HistoryEntry]:
        """The entries holding every word of ``query`` (any case), newest first."""
        words = query.casefold().split()
        return [e for e in self._entries if e.matches(words)]

    def to_json(self) -> dict[str, Any]:
        return {"version": 1, "entries": [
            {"prompt": e.prompt, "negative_prompt": e.negative_prompt, "time": e.time}
            for e in self._entries]}

    @classmethod
    def from_json(cls, data: Any, limit: int = LIMIT) -> PromptHistory:
        items = data.get("entries") if isinstance(data, Mapping) else None
        entries = []
        for item in items if isinstance(items, list) else ():
            if not isinstance(item, Mapping):
                continue
            prompt, negative = item.get("prompt"), item.get("negative_prompt", "")
            when = item.get("time", 0.0)
            if isinstance(prompt, str) and isinstance(negative, str) \
                    and len(prompt) + len(negative) <= MAX_PROMPT_CHARS:
                entries.append(HistoryEntry(prompt, negative, float(when) if isinstance(
                    when, (int, float)) and not isinstance(when, bool) else 0.0))
        return cls(entries, limit)


def history_path() -> Path:
    return paths.data_dir() / "prompt_history.json"


def load_history(path: Path | None = None, limit: int = LIMIT) -> PromptHistory:
    """The saved history; empty when there is none. A damaged file is moved aside."""
    path = path or history_path()
    try:
        data = safejson.load_file(path, max_bytes=MAX_FILE_BYTES, max_depth=8)
    except FileNotFoundError:
        return PromptHistory(limit=limit)
    except OSError:  # unreadable: leave it where it is, start empty
        return PromptHistory(limit=limit)
    except ValueError:  # not JSON, too large or deep, not a regular file
        with contextlib.suppress(OSError):
            os.replace(path, path.with_name(f"{path.name}.bad-{time.strftime('%Y%m%d-%H%M%S')}"))
        return PromptHistory(limit=limit)
    return PromptHistory.from_json(data, limit)


def save_history(history: PromptHistory, path: Path | None = None) -> Path:
    """Write atomically (temp file in the same folder, fsync, rename). OSError on failure."""
    data = json.dumps(history.to_json(), ensure_ascii=False).encode("utf-8")
    return write_atomic(path or history_path(), data, prefix=".history-")
