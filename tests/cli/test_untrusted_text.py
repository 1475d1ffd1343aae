"""Untrusted text (an image's infotext, model file names and metadata, prompt lists) reaches
the terminal with its control and bidi characters escaped: an ANSI sequence cannot clear the
screen or recolour it, a NUL cannot cut the line, U+202E cannot reorder what is shown."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

# raw characters that must never reach the terminal
RAW = ("\x1b", "\x00", "\x9b", "\x7f", "\u202e", "\u202c", "\u2066", "\u200f")
EVIL = "evil \x1b[2J\x1b[31mred\x00nul \u202eRTL\u202c \x9b2J \x7f end"


def _no_raw(text: str) -> None:
    found = [repr(c) for c in RAW if c in text]
    assert not found, f"raw {found} in {text!r}"


@pytest.fixture(scope="module")
def evil_png(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from PIL import Image, PngImagePlugin

    path = tmp_path_factory.mktemp("untrusted") / "evil.png"
    info = PngImagePlugin.PngInfo()
    info.add_itxt("parameters", f"{EVIL}\nNegative prompt: \u2066blurry\u2069\n"
                  "Steps: 20, Sampler: Euler, CFG scale: 7, Seed: 1, Size: 8x8")
    Image.new("RGB", (8, 8)).save(path, pnginfo=info)
    return path


def test_info_shows_control_and_bidi_characters_escaped(run_cli: Any, evil_png: Path) -> None:
    proc = run_cli(["info", str(evil_png)], timeout=60)
    assert proc.returncode == 0, proc.stderr
    _no_raw(proc.stdout + proc.stderr)
    for shown in ("\\x1b[2J", "\\x1b[31mred", "\\x00nul", "\\u202eRTL\\u202c", "\\x9b2J",
                  "\\x7f", "\\u2066blurry\\u2069"):
        assert shown in proc.stdout, shown
    lines = proc.stdout.splitlines()
    assert lines[0] == f"{evil_png}:" and len(lines) == 4  # still one infotext line per line
    assert "Steps: 20" in lines[3]


def test_info_json_escapes_them_and_keeps_the_same_values(run_cli: Any,
                                                          evil_png: Path) -> None:
    proc = run_cli(["info", "--json", str(evil_png)], timeout=60)
    assert proc.returncode == 0, proc.stderr
    _no_raw(proc.stdout + proc.stderr)
    record = json.loads(proc.stdout)
    assert record["infotext"].startswith(EVIL + "\n")  # the data itself is unchanged
    assert "\u202eRTL" in record["request"]["prompt"]
    assert "\\u202e" in proc.stdout and "\\u001b[2J" in proc.stdout


def test_models_shows_hostile_names_and_metadata_escaped(run_cli: Any, tmp_path: Path) -> None:
    import struct

    folder = tmp_path / "models"
    folder.mkdir()
    (folder / "evil\x1b[2J\u202eRTL.safetensors").write_bytes(b"junk")
    header = json.dumps({"__metadata__": {"modelspec.title": "t\x1b[31m\u202e"},
                         "w": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]}}).encode()
    (folder / "meta\u2066x.safetensors").write_bytes(
        struct.pack("<Q", len(header)) + header + b"\0" * 4)
    proc = run_cli(["models", str(folder)], timeout=60)
    assert proc.returncode == 0, proc.stderr
    _no_raw(proc.stdout + proc.stderr)
    assert "evil\\x1b[2J\\u202eRTL" in proc.stdout and "meta\\u2066x" in proc.stdout
    proc = run_cli(["models", "--json", str(folder)], timeout=60)
    _no_raw(proc.stdout + proc.stderr)
    names = {json.loads(line)["name"] for line in proc.stdout.splitlines()}
    assert "evil\x1b[2J\u202eRTL" in names


def test_batch_dry_run_and_bad_lines_show_prompts_escaped(run_cli: Any, tmp_path: Path) -> None:
    good = tmp_path / "bidi.txt"
    good.write_text("a \u202eevil\u202c cat \x1b[31mred\n", encoding="utf-8")
    proc = run_cli(["batch", str(good), "--dry-run", "--out", str(tmp_path / "out")],
                   timeout=60)
    assert proc.returncode == 0, proc.stderr
    _no_raw(proc.stdout + proc.stderr)
    assert "\\u202eevil\\u202c cat \\x1b[31mred" in proc.stdout
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"prompt": "x", "sampler": "\\u001b[2J\\u202e"}\n'
                   '{"prompt": "y", "\\u001b[2Jkey\\u202e": 1}\n'
                   '{"prompt": "z", "width": "\\u001b[2J\\u202e"}\n', encoding="utf-8")
    proc = run_cli(["batch", str(bad), "--dry-run", "--out", str(tmp_path / "out2")],
                   timeout=60)
    assert proc.returncode == 2
    _no_raw(proc.stdout + proc.stderr)
    assert "line 1:" in proc.stderr and "line 2:" in proc.stderr and "line 3:" in proc.stderr
    options = tmp_path / "options\u202e.txt"
    options.write_text("--prompt x --\x1b[2Jfoo\u202e 1\n", encoding="utf-8")
    proc = run_cli(["batch", str(options), "--dry-run", "--out", str(tmp_path / "out3")],
                   timeout=60)
    assert proc.returncode == 2
    _no_raw(proc.stdout + proc.stderr)
    assert "line 1: unknown option --\\x1b[2Jfoo\\u202e" in proc.stderr


def test_batch_progress_lines_show_model_names_notes_and_reasons_escaped() -> None:
    import io

    from sdstudio.batch.cli import ProgressBar
    from sdstudio.batch.events import UnitEngineEvent, UnitFailed, UnitStarted
    from sdstudio.batch.plan import WorkUnit
    from sdstudio.core.events import LoadProgress, ModelReady, Notice
    from sdstudio.core.request import GenerationRequest

    class Tty(io.StringIO):
        def isatty(self) -> bool:
            return True

    unit = WorkUnit(0, 0, 1, 0, 1, "k", 1, GenerationRequest(prompt="x"))
    stream = Tty()
    bar = ProgressBar(stream)
    bar.on_event(UnitStarted(unit, 1, 1))
    bar.on_event(UnitEngineEvent(unit, LoadProgress("Loading m\x1b[2J\u202e", 0.1)))
    bar.on_event(UnitEngineEvent(unit, ModelReady("m\x1b[2J\u202e", "sd1", "cpu", "fp32")))
    bar.on_event(UnitEngineEvent(unit, Notice("embedding \u202eevil skipped: \x1b[31m")))
    bar.on_event(UnitFailed(unit, "bad \x1b[2J\u2066 file"))
    bar.close()
    out = stream.getvalue().replace("\r", "")  # the bar's own carriage returns
    _no_raw(out)
    assert "note: embedding \\u202eevil skipped: \\x1b[31m" in out
    assert "model m\\x1b[2J\\u202e on cpu" in out and "failed: bad \\x1b[2J\\u2066 file" in out


def test_error_lines_show_hostile_file_names_escaped(run_cli: Any, tmp_path: Path) -> None:
    notimage = tmp_path / "x\x1b[2J\u202e.png"
    notimage.write_text("\x1b[2J\u202e not an image", encoding="utf-8")
    for args in (["info", str(notimage)], ["info", str(tmp_path / "missing\x1b[31m\u2066.png")],
                 ["generate", "-p", "x", "--init-image", str(notimage)],
                 ["batch", str(tmp_path / "list\x1b[2J\u202e.txt"), "--dry-run"]):
        proc = run_cli(args, timeout=60)
        assert proc.returncode == 2, (args, proc.stderr)
        _no_raw(proc.stdout + proc.stderr)
        assert len(proc.stderr.strip().splitlines()) == 1 and "\\x1b[" in proc.stderr
