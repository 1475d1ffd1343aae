"""storage.naming: file name patterns, safe prompts, index allocation."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

import pytest

from sdstudio.core.request import GenerationInfo, GenerationRequest
from sdstudio.storage.naming import (
    FilenamePatternError,
    check_pattern,
    format_filename,
    next_index,
    plan_name,
    safe_component,
    safe_prompt,
)

NOW = datetime(2024, 3, 9, 14, 5, 7)
REQ = GenerationRequest(
    prompt="a photo of a cat", seed=1234, width=512, height=768, steps=25, cfg_scale=7.5,
    sampler="DPM++ 2M Karras", model="/models/dreamshaper_8.safetensors",  # = DPM++ 2M + Karras
)


def test_default_pattern() -> None:
    assert format_filename("{index}-{seed}", REQ, index=7, now=NOW) == "00007-1234.png"


def test_every_token() -> None:
    pattern = (
        "{date}/{time}_{index}_{seed}_{prompt}_{model}_{sampler}_{width}x{height}_{steps}_{cfg}"
    )
    info = GenerationInfo(model_name="dreamshaper 8")
    assert format_filename(pattern, REQ, info, index=42, now=NOW) == (
        "2024-03-09/14-05-07_00042_1234_a photo of a cat_dreamshaper 8_DPM++ 2M_"
        "512x768_25_7.5.png"
    )
    # without info the model's file name is used
    assert format_filename("{model}", REQ, now=NOW) == "dreamshaper_8.png"
    assert format_filename("{cfg}", REQ.replace(cfg_scale=7.0), now=NOW) == "7.png"


def test_prompt_is_made_safe_and_shortened_at_a_word_boundary() -> None:
    prompt = (
        'portrait of a knight: "dark" armour <lora:film:0.5>, cinematic lighting/dramatic, '
        "highly detailed, 8k, trending on artstation\nsecond line"
    )
    safe = safe_prompt(prompt)
    assert safe == "portrait of a knight dark armour , cinematic lighting"
    assert len(safe) <= 60
    for bad in '<>:"/\\|?*\n':
        assert bad not in safe
    assert safe_prompt("") == "untitled"
    assert safe_prompt("???") == "untitled"
    assert safe_prompt("x" * 100) == "x" * 60  # no space: hard cut


def test_safe_component_for_windows() -> None:
    assert safe_component("CON") == "_CON"
    assert safe_component("nul.txt") == "_nul.txt"
    assert safe_component("name. . ") == "name"
    assert safe_component("a:b|c") == "a_b_c"
    assert safe_component("..") == "_"


def test_values_cannot_create_folders_or_escape() -> None:
    req = REQ.replace(prompt="../../etc/passwd", sampler="a/b")
    name = format_filename("{prompt}-{sampler}", req, now=NOW)
    assert "/" not in name and ".." not in name.split("/")


@pytest.mark.parametrize(
    ("pattern", "message"),
    [
        ("{bogus}-{seed}", "unknown token {bogus}"),
        ("{Seed}", "unknown token {Seed}"),
        ("{index:03}", "unknown token"),
        ("{seed", "unmatched"),
        ("seed}", "unmatched"),
        ("../{seed}", "may not use '.' or '..'"),
        ("a/../../{seed}", "may not use '.' or '..'"),
        ("/tmp/{seed}", "relative to the output folder"),
        ("C:/x/{seed}", "relative to the output folder"),
        ("{index}/{seed}", "only appear in the file name"),
        ("{index}-{index}", "more than once"),
        ("", "empty"),
        (" / ", "empty file name"),
    ],
)
def test_bad_patterns_are_refused_clearly(pattern: str, message: str) -> None:
    with pytest.raises(FilenamePatternError, match=message):
        check_pattern(pattern)


def test_subfolders_and_backslashes() -> None:
    assert format_filename("{date}\\{seed}", REQ, now=NOW) == "2024-03-09/1234.png"
    plan = plan_name("out/{date}/img-{index}-{seed}", REQ, now=NOW)
    assert (plan.folder, plan.prefix, plan.suffix, plan.has_index) == (
        "out/2024-03-09", "img-", "-1234", True,
    )
    assert plan.relative(3) == "out/2024-03-09/img-00003-1234.png"
    no_index = plan_name("{seed}", REQ, now=NOW)
    assert no_index.name(attempt=2) == "1234-2.png"


def test_next_index_follows_existing_files(tmp_path: Path) -> None:
    plan = plan_name("{index}-{seed}", REQ, now=NOW)
    assert next_index(tmp_path, plan) == 0
    assert next_index(tmp_path / "missing", plan) == 0
    for name in ("00000-1.png", "00012-5.png", "00003-x.png", "notes.txt", ".sdstudio-1.tmp"):
        (tmp_path / name).write_bytes(b"")
    assert next_index(tmp_path, plan) == 13
    prefixed = plan_name("img-{index}", REQ, now=NOW)
    assert next_index(tmp_path, prefixed) == 0  # other prefix
    (tmp_path / "img-00099.png").write_bytes(b"")
    assert next_index(tmp_path, prefixed) == 100


def test_long_names_fit_file_system_limits() -> None:
    req = REQ.replace(prompt="日本語の長いプロンプト " * 40, sampler="x" * 300)
    for pattern in ("{index}-{sampler}-{sampler}", "{sampler}{prompt}", "{prompt}/{sampler}"):
        rel = format_filename(pattern, req, index=123456, now=NOW)
        for part in rel.split("/"):
            assert len(part.encode("utf-8")) <= 255 - 10, part
    assert format_filename("{index}-{sampler}", req, index=5, now=NOW).startswith("00005-xxx")


BIDI_AND_CONTROLS = "\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069\u200e\u200f\u061c"


def test_bidi_and_control_characters_never_reach_a_file_name() -> None:
    # U+202E would show "cat\u202egnp.exe" as "catexe.png": bidi controls are removed,
    # control characters (C0, DEL, C1, separators, lone surrogates) replaced
    req = REQ.replace(prompt="a \u202eevil\u202c cat \x1b[2J\x00 \x85 \u2028 \udc80 end")
    for pattern in ("{prompt}", "{prompt}/{index}-{prompt}", "\u202e{index}\u2066x",
                    "{prompt}/{seed}", "x\u202e/{prompt}"):
        name = format_filename(pattern, req, index=3, now=NOW)
        assert not set(name) & set(BIDI_AND_CONTROLS), (pattern, name)
        assert all(c.isprintable() for c in name), (pattern, name)
        name.encode("utf-8")  # no lone surrogate left
    assert format_filename("{prompt}", req, now=NOW) == "a evil cat [2J end.png"
    assert safe_prompt("ab\u202ecd") == "abcd"
    assert safe_component("gpj.\u202eexe") == "gpj.exe"
    info = GenerationInfo(model_name="model\u202e\u2067\x9b2J")
    assert format_filename("{model}", REQ, info, now=NOW) == "model_2J.png"
