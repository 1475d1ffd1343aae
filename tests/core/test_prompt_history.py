"""Prompt history: newest first, duplicates folded, bounded, searchable, persisted."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from sdstudio.core.prompt_history import (
    MAX_PROMPT_CHARS,
    HistoryEntry,
    PromptHistory,
    history_path,
    load_history,
    save_history,
)


def test_newest_first_and_duplicates_fold() -> None:
    h = PromptHistory()
    assert h.add("a cat", "blurry", when=1)
    assert h.add("a dog", when=2)
    assert h.add("a cat", "blurry", when=3)  # moves to the top
    assert [(e.prompt, e.time) for e in h.entries] == [("a cat", 3), ("a dog", 2)]
    assert not h.add("a cat", "blurry", when=4)  # already on top: nothing changes but the time
    assert h.entries[0].time == 4 and len(h) == 2
    assert h.add("a cat ", "blurry")  # the same prompt but for spaces: folded, newest text kept
    assert [e.prompt for e in h.entries] == ["a cat ", "a dog"]
    assert h.add("a cat", "other negative")  # another negative: another entry
    assert len(h) == 3


def test_empty_and_huge_prompts_are_not_kept() -> None:
    h = PromptHistory()
    assert not h.add("   ", "negative only")
    assert not h.add("x" * (MAX_PROMPT_CHARS + 1))
    assert len(h) == 0


def test_bounded() -> None:
    h = PromptHistory(limit=5)
    for i in range(12):
        h.add(f"prompt {i}", when=i)
    assert [e.prompt for e in h.entries] == [f"prompt {i}" for i in (11, 10, 9, 8, 7)]
    assert len(PromptHistory([HistoryEntry(f"p{i}") for i in range(900)])) == 500


def test_search_every_word_any_case_prompt_or_negative() -> None:
    h = PromptHistory()
    h.add("A red Cat on a roof", "blurry", when=1)
    h.add("a blue cat", "lowres", when=2)
    h.add("a dog", "BLURRY cat", when=3)
    assert [e.prompt for e in h.search("cat")] == ["a dog", "a blue cat", "A red Cat on a roof"]
    assert [e.prompt for e in h.search("RED  cat")] == ["A red Cat on a roof"]
    assert [e.prompt for e in h.search("blurry roof")] == ["A red Cat on a roof"]
    assert h.search("giraffe") == []
    assert len(h.search("")) == 3


def test_remove_and_clear() -> None:
    h = PromptHistory()
    h.add("one")
    h.add("two")
    h.remove(HistoryEntry("one"))
    assert [e.prompt for e in h.entries] == ["two"]
    h.clear()
    assert len(h) == 0


def test_persists_in_the_data_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SDSTUDIO_DATA_DIR", str(tmp_path / "data"))
    assert history_path() == tmp_path / "data" / "prompt_history.json"
    h = PromptHistory()
    h.add("ünïcode ✨ prompt\nsecond line", "neg", when=5)
    h.add("later", when=6)
    save_history(h)
    back = load_history()
    assert back.entries == h.entries
    assert not list((tmp_path / "data").glob("*.tmp"))


def test_a_missing_file_is_an_empty_history(tmp_path: Path) -> None:
    assert len(load_history(tmp_path / "none.json")) == 0


@pytest.mark.parametrize("content", [b"not json", b"[" * 10_000, b'{"entries": 5}', b"[]"])
def test_a_damaged_file_gives_an_empty_history(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "prompt_history.json"
    path.write_bytes(content)
    assert len(load_history(path)) == 0
    if content in (b"not json", b"[" * 10_000):  # moved aside, kept for the person
        assert not path.exists()
        assert [p.read_bytes() for p in tmp_path.glob("prompt_history.json.bad-*")] == [content]


def test_odd_entries_are_skipped(tmp_path: Path) -> None:
    path = tmp_path / "h.json"
    path.write_text(json.dumps({"version": 1, "entries": [
        {"prompt": "good", "negative_prompt": "n", "time": 3},
        {"prompt": 5}, "text", None, {"prompt": "no negative"},
        {"prompt": "bad time", "time": "yesterday"}, {"prompt": "bool", "time": True},
        {"prompt": "x", "negative_prompt": ["list"]},
        {"prompt": "good", "negative_prompt": "n", "time": 1},  # an older duplicate
    ]}))
    h = load_history(path)
    assert [(e.prompt, e.negative_prompt, e.time) for e in h.entries] == [
        ("good", "n", 3.0), ("no negative", "", 0.0), ("bad time", "", 0.0), ("bool", "", 0.0)]
