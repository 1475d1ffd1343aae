"""Ctrl+Up/Down weight editing, case by case as AUTOMATIC1111's edit-attention.js does it.

Each case is (text with ``|`` for the cursor or ``[...]`` for the selection, key, expected
text with the selection after the edit in ``[...]``); the expectations were worked out by
following edit-attention.js line by line on the same input."""

from __future__ import annotations

import pytest

from sdstudio.core.weights import edit_weight, format_weight


def _parse(marked: str) -> tuple[str, int, int]:
    if "|" in marked:
        at = marked.index("|")
        return marked.replace("|", ""), at, at
    start = marked.index("[")
    end = marked.index("]") - 1
    return marked.replace("[", "").replace("]", ""), start, end


def _mark(text: str, start: int, end: int) -> str:
    return f"{text[:start]}[{text[start:end]}]{text[end:]}"


CASES = [
    # the word under the cursor gets (word:1.1); the word stays selected
    ("a red| cat", True, "a ([red]:1.1) cat"),
    ("a r|ed cat", False, "a ([red]:0.9) cat"),
    ("|cat", True, "([cat]:1.1)"),
    ("cat|", True, "([cat]:1.1)"),
    # words end at A1111's delimiters, line breaks included
    ("masterpiece,best| quality", True, "masterpiece,([best]:1.1) quality"),
    ("one\ntw|o", True, "one\n([two]:1.1)"),
    # an existing emphasis: the block around the cursor, its weight moved by 0.1
    ("(red hair:1.|2)", False, "([red hair]:1.1)"),
    ("a (red h|air:1.2), cat", True, "a ([red hair]:1.3), cat"),
    ("(cat:1.1|)", True, "([cat]:1.2)"),
    ("(cat:0.9|5)", True, "([cat]:1.05)"),
    ("(cat:1.9|)", True, "([cat]:2.0)"),
    ("(cat:9.9|)", True, "([cat]:10)"),
    # down to exactly 1: the parentheses go (A1111 keeps the text selected)
    ("a (cat|:1.1) b", False, "a [cat] b"),
    ("(c|at:0.9)", True, "[cat]"),
    # nested blocks: the innermost one around the cursor
    ("((a:1.2) b|:1.5)", True, "([(a:1.2) b]:1.6)"),
    ("((a|:1.2) b:1.5)", True, "(([a]:1.3) b:1.5)"),
    # a selection is used as it is (trailing spaces left out of the wrap)
    ("[red cat ]dog", True, "([red cat]:1.1) dog"),
    ("a ([red]:1.1) cat", True, "a ([red]:1.2) cat"),
    ("a ([red]:1.1) cat", False, "a [red] cat"),
    # LoRA and other <...> tags: 0.05 steps, never unwrapped
    ("<lora:detail|:1>", True, "<[lora:detail]:1.05>"),
    ("x <lora:de|tail:0.8> y", False, "x <[lora:detail]:0.75> y"),
    ("<lora:detail:1.05|>", False, "<[lora:detail]:1.0>"),
    ("<lora:a:1> (|b:1.2)", True, "<lora:a:1> ([b]:1.3)"),
    # no ")" after the cursor: not a block; the word "1" ("." ends words) is wrapped
    ("(cat:1.1|", True, "(cat:1.([1]:1.1)"),
]


@pytest.mark.parametrize(("marked", "up", "expected"), CASES)
def test_edit_weight_as_a1111(marked: str, up: bool, expected: str) -> None:
    text, start, end = _parse(marked)
    edit = edit_weight(text, start, end, up)
    assert edit is not None
    assert _mark(edit.text, edit.start, edit.end) == expected


def test_pressing_again_keeps_going() -> None:
    text, start, end = "a red cat", 3, 3
    for expected in ("a (red:1.1) cat", "a (red:1.2) cat", "a (red:1.3) cat"):
        edit = edit_weight(text, start, end, True)
        assert edit is not None
        text, start, end = edit.text, edit.start, edit.end
        assert text == expected
    for expected in ("a (red:1.2) cat", "a (red:1.1) cat", "a red cat", "a (red:0.9) cat"):
        edit = edit_weight(text, start, end, False)
        assert edit is not None
        text, start, end = edit.text, edit.start, edit.end
        assert text == expected


@pytest.mark.parametrize("marked", [
    "(cat|)",  # a block without a weight: A1111 finds no number and changes nothing
    "(cat:a|bc)",  # not a number
    "(cat:1.9)|",  # just after the block: A1111 finds neither the block nor a word
    "<lora:a:1> |(b:1.2)",  # on the bracket: no word either
    "a |  b",  # the cursor between spaces: no word
    "|",
    "[   ]x",  # a selection of spaces
])
def test_where_a1111_changes_nothing(marked: str) -> None:
    text, start, end = _parse(marked)
    assert edit_weight(text, start, end, True) is None
    assert edit_weight(text, start, end, False) is None


def test_out_of_range_positions_are_clamped() -> None:
    for start, end in ((10, 99), (99, 10), (-5, -1)):
        edit = edit_weight("cat", start, end, True)
        assert edit is not None and (edit.text, edit.start, edit.end) == ("(cat:1.1)", 1, 4)


def test_steps_are_settable() -> None:
    edit = edit_weight("(cat:1.0)", 4, 4, True, attention_step=0.05)
    assert edit is not None and edit.text == "(cat:1.05)"
    edit = edit_weight("<lora:x:1>", 3, 3, False, extra_step=0.1)
    assert edit is not None and edit.text == "<lora:x:0.9>"


@pytest.mark.parametrize(("weight", "text"), [
    (1.2000000000000002, "1.2"), (2.0, "2.0"), (10.0, "10"), (0.0, "0.0"), (-1.0, "-1"),
    (0.30000000000000004, "0.3"), (1.05, "1.05")])
def test_weights_are_written_as_a1111_writes_them(weight: float, text: str) -> None:
    assert format_weight(weight) == text
