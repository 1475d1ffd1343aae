"""Ctrl+Up / Ctrl+Down on a prompt: AUTOMATIC1111's attention editing (``edit-attention.js``).

:func:`edit_weight` takes the text and the selection and gives the new text and selection,
doing what A1111's web UI does on the same keys:

* with nothing selected, the ``<...>`` block around the cursor (a ``<lora:name:0.8>`` tag:
  its name is selected, its last number moves by 0.05), else the ``(...)`` block around it
  (``(red hair:1.2)``: the text before the last colon), else the word under the cursor
  (words end at A1111's delimiters ``.,\\/!?%^*;:{}=`~()``, spaces, tabs and line breaks);
* text not yet in ``(...)`` is wrapped as ``(text:1.0)`` first (trailing spaces left out),
  so a word becomes ``(word:1.1)`` on Ctrl+Up and ``(word:0.9)`` on Ctrl+Down;
* the weight moves by 0.1, rounded to 12 significant digits (1.1 + 0.1 is 1.2), written
  as A1111 writes it (``1.2``, ``2.0``, ``10``); an emphasis reaching exactly 1 loses its
  parentheses (``(word:1.1)`` Ctrl+Down gives ``word``), a ``<...>`` tag keeps its number;
* the edited text stays selected, so the keys can be pressed again;
* where A1111 changes nothing (a ``(word)`` block without a weight, a block whose closing
  bracket is missing, a selection of spaces), the result is None; so it is for a weight
  that is not finite (A1111 would write ``Infinity``) and where A1111's search for the
  opening bracket never ends (the browser tab hangs on ``) ( ) x`` with the cursor at the
  end; here nothing changes).

Positions are indices into the Python string (code points). Pure Python: no Qt.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

DELIMITERS = ".,\\/!?%^*;:{}=`~() " + "\t\r\n"  # A1111's keyedit_delimiters + whitespace
ATTENTION_STEP = 0.1  # A1111's keyedit_precision_attention
EXTRA_STEP = 0.05  # A1111's keyedit_precision_extra (<lora:name:w> and other extra networks)

_FLOAT = re.compile(r"\s*([+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?|[+-]?Infinity)")


@dataclass(frozen=True)
class WeightEdit:
    """The text after the edit and the selection to show (``start`` <= ``end``)."""

    text: str
    start: int
    end: int


def _last_index(text: str, sub: str, start: int | None = None) -> int:
    """JavaScript's ``text.lastIndexOf(sub, start)`` for a one-character ``sub``."""
    if start is None:
        return text.rfind(sub)
    return text.rfind(sub, 0, max(start, 0) + 1)


def _select_block(text: str, pos: int, open_: str, close: str) -> tuple[int, int] | None:
    """The selection A1111 makes inside the ``open_ ... close`` block around ``pos``: from
    after the opening bracket to the block's last colon (None when there is no block)."""
    before = text[:pos]
    before_open = _last_index(before, open_)
    if before_open == -1:
        return None
    before_close = _last_index(before, close)
    while before_close != -1 and before_close > before_open:
        before_open = _last_index(before, open_, before_open - 1)
        if before_open == -1:  # stays -1 (A1111's loop can spin forever on ") ( )" here)
            return None
        before_close = _last_index(before, close, before_close - 1)
    after = text[pos:]
    after_close = after.find(close)
    if after_close == -1:
        return None
    after_open = after.find(open_)
    while after_open != -1 and after_close > after_open:
        after_close = after.find(close, after_close + 1)
        after_open = after.find(open_, after_open + 1)
    if before_open == -1 or after_close == -1:
        return None
    content = text[before_open + 1:pos + after_close]
    start = before_open + 1
    return start, start + content.rfind(":")


def _select_word(text: str, start: int, end: int, delimiters: str) -> tuple[int, int]:
    while start > 0 and text[start - 1] not in delimiters:
        start -= 1
    while end < len(text) and text[end] not in delimiters:
        end += 1
    return start, end


def _parse_float(text: str) -> float | None:
    """JavaScript's ``parseFloat``: the number at the start of ``text`` (None for NaN)."""
    m = _FLOAT.match(text)
    if m is None:
        return None
    return float(m.group(1).replace("Infinity", "inf"))


def format_weight(weight: float) -> str:
    """A weight as A1111 writes it after an edit: 12 significant digits, ``1.0`` not ``1``
    for one-digit whole numbers, ``10`` for larger ones (JavaScript's number formatting)."""
    weight = float(f"{weight:.12g}")
    text = str(int(weight)) if weight.is_integer() else repr(weight)
    return text + ".0" if len(text) == 1 else text


def edit_weight(text: str, start: int, end: int, up: bool, *,
                attention_step: float = ATTENTION_STEP, extra_step: float = EXTRA_STEP,
                delimiters: str = DELIMITERS) -> WeightEdit | None:
    """Ctrl+Up (``up``) or Ctrl+Down on ``text`` with the selection ``start``..``end`` (equal
    for a bare cursor). None when A1111 would leave the text as it is."""
    start, end = sorted((max(0, min(start, len(text))), max(0, min(end, len(text)))))
    if start == end:
        block = _select_block(text, start, "<", ">") or _select_block(text, start, "(", ")")
        start, end = block if block is not None else _select_word(text, start, end, delimiters)
    close, step = ")", attention_step
    if start > 0 and text[start - 1] == "<":
        close, step = ">", extra_step
    elif start == 0 or text[start - 1] != "(":
        while end > start and text[end - 1] == " ":
            end -= 1
        if start >= end:
            return None
        text = f"{text[:start]}({text[start:end]}:1.0){text[end:]}"
        start += 1
        end += 1
    length = text[end + 1:].find(close) + 1
    weight = _parse_float(text[end + 1:end + 1 + length])
    if weight is None or not math.isfinite(weight):
        return None
    weight = float(f"{weight + (step if up else -step):.12g}")
    if close == ")" and weight == 1:
        paren = end + text[end:].find(")")
        text = text[:start - 1] + text[start:end] + text[paren + 1:]
        return WeightEdit(text, start - 1, end - 1)
    text = text[:end + 1] + format_weight(weight) + text[end + length:]
    return WeightEdit(text, start, end)
