"""styles.csv as AUTOMATIC1111 writes and reads it: round trips, old formats, bad files."""

from __future__ import annotations

import csv
import io
from pathlib import Path

import pytest

from sdstudio.core.styles import (
    Style,
    StylesError,
    apply_style,
    format_styles,
    merge_prompt,
    merged,
    parse_styles,
    read_styles,
    styles_path,
    write_styles,
)

STYLES = [
    Style("Cinematic", "cinematic still of {prompt}, shallow depth of field, film grain",
          "anime, cartoon, drawing"),
    Style("Quality", "masterpiece, best quality", "lowres, bad anatomy, (worst quality:1.4)"),
    Style('Quotes "and", commas', 'a "quoted" word, and a comma', ""),
    Style("Multi-line", "first line\nsecond line", "neg\r\nwith CRLF"),
    Style("Ünïcode ✨", "日本の風景, 🌸", "ぼやけた"),
    Style("Empty", "", ""),
]


def a1111_csv_bytes(styles: list[Style]) -> bytes:
    """The bytes A1111's StyleDatabase.save_styles writes: open(path, "w",
    encoding="utf-8-sig", newline="") and csv.DictWriter(fieldnames=[name, prompt,
    negative_prompt]) with its default (Excel) dialect."""
    out = io.StringIO(newline="")
    writer = csv.DictWriter(out, fieldnames=["name", "prompt", "negative_prompt"])
    writer.writeheader()
    for s in styles:
        writer.writerow({"name": s.name, "prompt": s.prompt, "negative_prompt": s.negative_prompt})
    return out.getvalue().encode("utf-8-sig")


def test_a1111_file_reads_back_every_style(tmp_path: Path) -> None:
    path = tmp_path / "styles.csv"
    path.write_bytes(a1111_csv_bytes(STYLES))
    assert read_styles(path) == STYLES


def test_written_file_is_byte_for_byte_what_a1111_writes(tmp_path: Path) -> None:
    path = write_styles(STYLES, tmp_path / "styles.csv")
    raw = path.read_bytes()
    assert raw == a1111_csv_bytes(STYLES)
    assert raw.startswith(b"\xef\xbb\xbfname,prompt,negative_prompt\r\n")
    assert b'"Quotes ""and"", commas"' in raw
    assert read_styles(path) == STYLES


def test_a_literal_a1111_file() -> None:
    # as found in people's stable-diffusion-webui folders: BOM, CRLF, quoted multi-line cells
    text = ('\ufeffname,prompt,negative_prompt\r\n'
            'Photo,"RAW photo, {prompt}, 8k uhd, dslr","(deformed iris:1.4), cgi"\r\n'
            'Painting,oil painting,\r\n'
            '"Two\r\nlines","a\r\nb",c\r\n')
    styles = parse_styles(text)
    assert styles == [Style("Photo", "RAW photo, {prompt}, 8k uhd, dslr",
                            "(deformed iris:1.4), cgi"),
                      Style("Painting", "oil painting", ""),
                      Style("Two\r\nlines", "a\r\nb", "c")]


def test_old_and_hand_written_files() -> None:
    # A1111's first format was "name,text"; A1111 reads with skipinitialspace
    assert parse_styles("name,text\nOld,an old style\n") == [Style("Old", "an old style")]
    assert parse_styles("name, prompt, negative_prompt\nA, x, y\n") == [Style("A", "x", "y")]
    # short rows, blank rows, A1111 1.7's "#" divider rows; a later name wins
    text = "name,prompt,negative_prompt\n\n# STYLES.CSV,,\nA,one\nB,two,neg\nA,again,\n"
    assert parse_styles(text) == [Style("A", "again"), Style("B", "two", "neg")]
    assert parse_styles("") == []
    assert parse_styles("\ufeff") == []


@pytest.mark.parametrize(("text", "message"), [
    ("title,body\nx,y\n", "no “name” column"),
    ("name,colour\nx,red\n", "no “prompt” column"),
])
def test_not_a_styles_file(text: str, message: str) -> None:
    with pytest.raises(StylesError, match=message):
        parse_styles(text, "mine.csv")


def test_bad_files_are_refused_in_one_line(tmp_path: Path,
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    assert read_styles(tmp_path / "missing.csv") == []
    latin = tmp_path / "latin1.csv"
    latin.write_bytes("name,prompt\nCafé,x\n".encode("latin-1"))
    with pytest.raises(StylesError, match="not UTF-8"):
        read_styles(latin)
    with pytest.raises(StylesError, match="not a regular file"):
        read_styles(tmp_path)
    monkeypatch.setattr("sdstudio.core.styles.MAX_STYLES_BYTES", 1000)
    big = tmp_path / "big.csv"
    big.write_bytes(a1111_csv_bytes([Style("x", "y" * 1000)]))
    with pytest.raises(StylesError, match="too large for a styles file"):
        read_styles(big)


def test_write_keeps_a_backup_and_is_atomic(tmp_path: Path) -> None:
    path = tmp_path / "sub" / "styles.csv"
    write_styles(STYLES[:1], path)
    write_styles(STYLES[1:2], path)
    assert read_styles(path) == STYLES[1:2]
    assert read_styles(path.with_name("styles.csv.bak")) == STYLES[:1]
    assert sorted(p.name for p in path.parent.iterdir()) == ["styles.csv", "styles.csv.bak"]
    blocked = tmp_path / "file"
    blocked.write_text("x")
    with pytest.raises(StylesError, match="cannot write"):
        write_styles(STYLES, blocked / "styles.csv")


def test_applying_a_style_as_a1111() -> None:
    assert merge_prompt("cinematic still of {prompt}, film grain", "a cat") == \
        "cinematic still of a cat, film grain"
    assert merge_prompt("masterpiece", "a cat ") == "a cat, masterpiece"
    assert merge_prompt("masterpiece", "") == "masterpiece"
    assert merge_prompt("", "a cat") == "a cat"
    assert merge_prompt("{prompt} and {prompt}", "x") == "x and x"
    prompt, negative = apply_style(STYLES[0], "a lighthouse", "blurry")
    assert prompt == "cinematic still of a lighthouse, shallow depth of field, film grain"
    assert negative == "blurry, anime, cartoon, drawing"


def test_merged_replaces_by_name_in_place() -> None:
    a, b, c = Style("A", "1"), Style("B", "2"), Style("C", "3")
    out, replaced = merged([a, b], [Style("B", "new"), c, Style("A", "1")])
    assert out == [a, Style("B", "new"), c]
    assert replaced == 1


def test_the_collection_lives_in_the_config_folder(tmp_path: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SDSTUDIO_CONFIG_DIR", str(tmp_path / "cfg"))
    assert styles_path() == tmp_path / "cfg" / "styles.csv"
    write_styles(STYLES)
    assert read_styles(tmp_path / "cfg" / "styles.csv") == STYLES
    assert format_styles([]) == "name,prompt,negative_prompt\r\n"
