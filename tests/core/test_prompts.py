# ruff: noqa: E501
"""Prompt-list parsing: txt with A1111 options, CSV, JSONL, encodings, bad lines."""

from __future__ import annotations

import codecs
import hashlib
from pathlib import Path

import pytest

from sdstudio.core.errors import PromptListError
from sdstudio.core.prompts import decode_prompt_bytes, detect_format, parse_prompt_list
from sdstudio.core.request import GenerationRequest

DEFAULTS = GenerationRequest(prompt="", width=64, height=64, steps=2, seed=-1)

TXT = """\
# my overnight list
a red fox in the snow

   # indented comment
--prompt "a castle, at night" --negative_prompt "blurry, low quality" --steps 30 --seed 5 --cfg_scale 7.5 --sampler_name "DPM++ 2M Karras" --width 512 --height 768
--prompt a   lighthouse on a cliff --n_iter 2 --batch_size 3 --denoising_strength 0.4
--prompt 'single quoted' --sampler_name euler_a
"""


def test_txt_plain_lines_comments_and_a1111_options() -> None:
    pl = parse_prompt_list(TXT, DEFAULTS)
    assert pl.ok, pl.errors
    assert pl.format == "txt"
    assert [i.line_no for i in pl.items] == [2, 5, 6, 7]
    fox, castle, light, single = (i.request for i in pl.items)
    assert fox == DEFAULTS.replace(prompt="a red fox in the snow")
    assert castle.prompt == "a castle, at night"
    assert castle.negative_prompt == "blurry, low quality"
    assert (castle.steps, castle.seed, castle.cfg_scale) == (30, 5, 7.5)
    assert (castle.sampler, castle.schedule_type) == ("DPM++ 2M", "Karras")
    assert (castle.width, castle.height) == (512, 768)
    assert light.prompt == "a lighthouse on a cliff"  # A1111: words up to the next option
    assert (light.batch_count, light.batch_size, light.strength) == (2, 3, 0.4)
    assert light.steps == 2  # from the defaults
    assert single.prompt == "single quoted" and single.sampler == "Euler a"
    assert pl.items[1].sets_seed and not pl.items[0].sets_seed


def test_txt_bad_lines_reported_with_line_numbers() -> None:
    text = "\n".join([
        "ok prompt",
        "--prompt x --bogus 3",
        "--prompt y --width 100",
        '--prompt "unbalanced',
        "--prompt z --steps",
        "--prompt w --sampler_name Nope",
        "--prompt v --steps many",
        "--seed 5",
        "--prompt u --restore_faces true",
        "--outpath_samples /tmp --prompt fine",
    ])
    pl = parse_prompt_list(text, DEFAULTS)
    assert [i.line_no for i in pl.items] == [1, 10]
    by_line = {e.line_no: e.message for e in pl.errors}
    assert set(by_line) == {2, 3, 4, 5, 6, 7, 8, 9}
    assert "unknown option --bogus" in by_line[2]
    assert "multiple of 8" in by_line[3]
    assert "quote" in by_line[4]
    assert "no value" in by_line[5]
    assert "unknown sampler" in by_line[6]
    assert "steps" in by_line[7]
    assert "no prompt" in by_line[8]
    assert "not supported" in by_line[9]
    assert pl.warnings and pl.warnings[0].line_no == 10
    assert "line 2: unknown option --bogus" in pl.error_report()


def test_csv_header_aliases_quoted_cells_and_bad_rows(tmp_path: Path) -> None:
    path = tmp_path / "list.csv"
    path.write_text(
        'Prompt,Negative prompt,Seed,CFG scale,Sampler,Size,steps\n'
        '"a cat, sitting",ugly,3,5,Euler,64x128,\n'
        '# a comment row,,,,,,\n'
        '\n'
        'a dog,,,,,,4\n'
        'bad,,x,,,,\n'
        '"multi\nline prompt",,,,,96x96,\n'
        'too,many,cells,1,2,3,4,5\n',
        encoding="utf-8",
    )
    pl = parse_prompt_list(path, DEFAULTS)
    assert pl.format == "csv"
    reqs = {i.line_no: i.request for i in pl.items}
    assert reqs[2].prompt == "a cat, sitting" and reqs[2].negative_prompt == "ugly"
    assert (reqs[2].seed, reqs[2].cfg_scale, reqs[2].sampler) == (3, 5.0, "Euler")
    assert (reqs[2].width, reqs[2].height, reqs[2].steps) == (64, 128, 2)
    assert reqs[5].prompt == "a dog" and reqs[5].steps == 4 and reqs[5].seed == -1
    assert reqs[7].prompt == "multi\nline prompt" and reqs[7].width == 96
    errors = {e.line_no: e.message for e in pl.errors}
    assert 3 not in errors and 3 not in reqs  # comment row
    assert 6 in errors and "seed" in errors[6]
    assert 9 in errors and "cells" in errors[9]


def test_csv_unknown_column_or_no_prompt_column_is_refused(tmp_path: Path) -> None:
    with pytest.raises(PromptListError, match="unknown columns"):
        parse_prompt_list(b"prompt,colour\na,b\n", DEFAULTS, name="x.csv")
    with pytest.raises(PromptListError, match="no 'prompt' column"):
        parse_prompt_list(b"seed,steps\n1,2\n", DEFAULTS, name="x.csv")


def test_jsonl_objects_and_errors() -> None:
    text = (
        '{"prompt": "a", "seed": 1, "steps": 3, "n_iter": 2}\n'
        "# comment\n"
        '{"prompt": "b", "loras": [{"name": "x", "weight": 0.5}], "inpaint_only_masked": true}\n'
        "[1, 2]\n"
        '{"prompt": "c", "colour": 1}\n'
        '{"prompt": "d", "steps": 0}\n'
        "{broken\n"
    )
    pl = parse_prompt_list(text.encode(), DEFAULTS, name="list.jsonl")
    assert pl.format == "jsonl"
    a, b = (i.request for i in pl.items)
    assert (a.seed, a.steps, a.batch_count) == (1, 3, 2)
    assert b.loras[0].name == "x" and b.inpaint_only_masked is True
    assert [e.line_no for e in pl.errors] == [4, 5, 6, 7]
    assert "unknown field 'colour'" in pl.errors[1].message
    assert "steps" in pl.errors[2].message


@pytest.mark.parametrize(
    "encode",
    [
        lambda t: t.encode("utf-8"),
        lambda t: codecs.BOM_UTF8 + t.encode("utf-8"),
        lambda t: codecs.BOM_UTF16_LE + t.encode("utf-16-le"),
        lambda t: codecs.BOM_UTF16_BE + t.encode("utf-16-be"),
    ],
    ids=["utf8", "utf8-bom", "utf16le-bom", "utf16be-bom"],
)
def test_encodings_accepted(tmp_path: Path, encode) -> None:  # type: ignore[no-untyped-def]
    text = "un chat café ☕\r\n--prompt \"crème brûlée\" --seed 7\r\n"
    path = tmp_path / "list.txt"
    data = encode(text)
    path.write_bytes(data)
    pl = parse_prompt_list(path, DEFAULTS)
    assert [i.request.prompt for i in pl.items] == ["un chat café ☕", "crème brûlée"]
    assert pl.source_sha256 == hashlib.sha256(data).hexdigest()


@pytest.mark.parametrize(
    ("data", "match"),
    [
        ("un chat café".encode("latin-1"), "not valid UTF-8"),
        ("a cat\nb".encode("utf-16-le"), "UTF-16 without a byte-order mark"),
        (codecs.BOM_UTF32_LE + "a".encode("utf-32-le"), "UTF-32"),
        (b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR", "binary"),
        (codecs.BOM_UTF16_LE + b"\x00\xd8a\x00", "not valid UTF-16"),
    ],
    ids=["latin1", "utf16-nobom", "utf32", "binary", "bad-utf16"],
)
def test_other_encodings_refused(tmp_path: Path, data: bytes, match: str) -> None:
    path = tmp_path / "list.txt"
    path.write_bytes(data)
    with pytest.raises(PromptListError, match=match):
        parse_prompt_list(path, DEFAULTS)


def test_missing_file_and_folder(tmp_path: Path) -> None:
    with pytest.raises(PromptListError, match="does not exist"):
        parse_prompt_list(tmp_path / "nope.txt")
    with pytest.raises(PromptListError, match="folder"):
        parse_prompt_list(tmp_path)


def test_format_detection_for_pasted_text() -> None:
    assert detect_format('{"prompt": "a"}\n') == "jsonl"
    assert detect_format("prompt,seed\na,1\n") == "csv"
    assert detect_format("a cat, a dog\n") == "txt"  # commas in a prompt: still text
    assert detect_format("# c\n--prompt x\n") == "txt"
    assert parse_prompt_list("prompt,seed\na,1\n", DEFAULTS).items[0].request.seed == 1


def test_defaults_mapping_and_default_prompt() -> None:
    pl = parse_prompt_list("--seed 3\n", {"prompt": "from panel", "width": 128, "height": 64})
    req = pl.items[0].request
    assert (req.prompt, req.seed, req.width, req.height) == ("from panel", 3, 128, 64)


def test_decode_strips_bom() -> None:
    assert decode_prompt_bytes(codecs.BOM_UTF8 + b"x") == ("x", "utf-8-sig")


@pytest.mark.parametrize("tail", ["\n", "", "\r\n"])
def test_csv_unterminated_quote_is_an_error_on_its_line(tail: str) -> None:
    # csv lets a quoted cell run to the end of the file: the rest of the list is not swallowed
    # into one prompt, the line that opened the quote is reported
    sep = "\r\n" if tail == "\r\n" else "\n"
    text = sep.join(["prompt,steps", "first,3", '"a cat,5', "second,6", "third,7"]) + tail
    pl = parse_prompt_list(text.encode(), DEFAULTS, name="list.csv")
    assert [i.request.prompt for i in pl.items] == ["first"]
    assert [str(e) for e in pl.errors] == [
        "line 3: unterminated quote: the quoted cell runs to the end of the file"]
    # a quoted cell that spans lines and is closed on the last line is fine
    pl = parse_prompt_list(b'prompt,steps\n"a\nb",3\n"last\nline"', DEFAULTS, name="l.csv")
    assert pl.ok and [i.request.prompt for i in pl.items] == ["a\nb", "last\nline"]


def test_csv_unterminated_quote_in_the_header() -> None:
    with pytest.raises(PromptListError, match=r"line 1\): unterminated quote"):
        parse_prompt_list(b'"prompt,steps\na,3\n', DEFAULTS, name="list.csv")


def test_jsonl_deep_nesting_and_huge_lines_are_their_lines_errors() -> None:
    deep = "[" * 100_000 + "]" * 100_000
    huge = '{"prompt": "' + "x" * 1_100_000 + '"}'
    text = "\n".join(['{"prompt": "ok"}', deep, '{"prompt": ' + deep + "}", huge,
                      '{"prompt": "fine"}'])
    pl = parse_prompt_list(text.encode(), DEFAULTS, name="list.jsonl")
    assert [i.request.prompt for i in pl.items] == ["ok", "fine"]
    errors = {e.line_no: e.message for e in pl.errors}
    assert sorted(errors) == [2, 3, 4]
    assert errors[2] == errors[3] == "not valid JSON: nested too deeply"
    assert errors[4] == "line too long (1100014 characters; at most 1000000)"
