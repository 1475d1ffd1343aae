"""JSON with limits: deep nesting, size and non-regular files give one ValueError subclass."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from sdstudio.core import safejson


@pytest.mark.parametrize("text", ["[" * 100_000 + "]" * 100_000,
                                  '{"a":' * 50_000 + "1" + "}" * 50_000])
def test_deep_nesting_is_refused_not_a_recursion_error(text: str) -> None:
    with pytest.raises(safejson.JSONLimitError, match="nested too deeply"):
        safejson.loads(text)


def test_depth_limit_below_the_recursion_limit() -> None:
    assert safejson.loads("[[[1]]]", max_depth=3) == [[[1]]]
    with pytest.raises(safejson.JSONLimitError, match="nested too deeply"):
        safejson.loads("[[[[1]]]]", max_depth=3)


def test_size_and_syntax() -> None:
    with pytest.raises(safejson.JSONLimitError, match="too large"):
        safejson.loads(b"[" + b"1," * 100 + b"1]", max_bytes=50)
    with pytest.raises(ValueError, match="not valid JSON"):
        safejson.loads("{nope")
    with pytest.raises(ValueError, match="UTF-8"):
        safejson.loads(b"\xff\xfe")
    assert safejson.loads(b'{"a": [1, 2]}') == {"a": [1, 2]}


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="no FIFOs here")
def test_a_fifo_is_refused_without_blocking(tmp_path: Path) -> None:
    fifo = tmp_path / "settings.json"
    os.mkfifo(fifo)
    with pytest.raises(safejson.JSONLimitError, match="not a regular file"):
        safejson.load_file(fifo)
    with pytest.raises(FileNotFoundError):
        safejson.load_file(tmp_path / "missing.json")
