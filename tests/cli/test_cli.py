"""The CLI end to end in subprocesses (on the tiny demo model), its bad-input handling, and
its pieces in-process."""

from __future__ import annotations

import argparse
import json
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from sdstudio import cli
from sdstudio.core.errors import RequestError
from sdstudio.core.events import Progress
from sdstudio.core.request import GenerationRequest, LoraSpec

REPO = Path(__file__).resolve().parents[2]
SMALL = ["--width", "64", "--height", "64", "--steps", "2"]


def images_in(folder: Path) -> list[Path]:
    """Every file in the output folder except storage's lock file; temp files would show."""
    return sorted(p for p in folder.iterdir() if p.name != ".sdstudio.lock")


def assert_one_error_line(proc: subprocess.CompletedProcess[str]) -> str:
    assert "Traceback" not in proc.stderr, proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("sdstudio: error: "), proc.stderr
    return lines[0]


# ---------------------------------------------------------------------- end to end
def test_generate_then_info_round_trip(run_cli: Any, tmp_path: Path) -> None:
    out = tmp_path / "out"
    proc = run_cli(["generate", "--prompt", "a red fox, snow", "--negative-prompt", "blurry",
                    *SMALL, "--seed", "42", "--batch-size", "2", "--sampler", "euler",
                    "--out", str(out)])
    assert proc.returncode == 0, proc.stderr
    assert "Traceback" not in proc.stderr
    assert "untrained" in proc.stderr  # the demo model says so
    paths = [Path(line) for line in proc.stdout.splitlines()]
    assert len(paths) == 2
    assert all(p.is_file() and p.parent == out for p in paths)
    assert images_in(out) == sorted(paths)  # nothing else: no temp files

    from PIL import Image

    with Image.open(paths[0]) as img:
        assert img.size == (64, 64)

    info = run_cli(["info", "--json", *map(str, paths)])
    assert info.returncode == 0, info.stderr
    records = [json.loads(line) for line in info.stdout.splitlines()]
    assert [r["request"]["seed"] for r in records] == [42, 43]
    for r in records:
        assert r["request"]["prompt"] == "a red fox, snow"
        assert r["request"]["negative_prompt"] == "blurry"
        assert r["request"]["sampler"] == "Euler"
        assert (r["request"]["width"], r["request"]["height"], r["request"]["steps"]) == (64, 64, 2)
        assert r["info"]["model_untrained"] is True

    text = run_cli(["info", str(paths[0])])
    assert text.returncode == 0, text.stderr
    assert "a red fox, snow" in text.stdout
    assert "Negative prompt: blurry" in text.stdout
    assert "Seed: 42" in text.stdout and "Size: 64x64" in text.stdout


def test_ctrl_c_cancels_and_keeps_saved_images(cli_environment: dict[str, str],
                                               tmp_path: Path) -> None:
    out = tmp_path / "out"
    proc = subprocess.Popen(
        [sys.executable, "-m", "sdstudio", "generate", "--prompt", "many", *SMALL,
         "--batch-count", "500", "--seed", "1", "--out", str(out)],
        cwd=REPO, env=cli_environment, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    try:
        assert proc.stdout is not None
        first = proc.stdout.readline()  # the first image is saved: the run is under way
        assert first.strip(), proc.stderr.read() if proc.stderr else ""
        proc.send_signal(signal.SIGINT)
        rest, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 130, err
    assert "Traceback" not in err
    assert "cancelled" in err
    saved = [Path(p.strip()) for p in [first, *rest.splitlines()] if p.strip()]
    assert 1 <= len(saved) < 500
    assert images_in(out) == sorted(saved)  # every printed file, no partial or temp file
    from PIL import Image

    for p in saved:
        with Image.open(p) as img:
            img.load()


# ------------------------------------------------------------------------- bad input
FAST_BAD_INPUTS: dict[str, list[str]] = {
    "missing model path": ["--model", "{root}/no/such/model"],
    "missing model file": ["--model", "{root}/missing.safetensors"],
    "width not a multiple of 8": ["--width", "100"],
    "absurd size": ["--width", "100000", "--height", "100000"],
    "huge area": ["--width", "8192", "--height", "8192"],
    "steps 0": ["--steps", "0"],
    "steps negative": ["--steps", "-3"],
    "strength 1.5": ["--strength", "1.5", "--init-image", "{init}"],
    "strength negative": ["--strength", "-0.1", "--init-image", "{init}"],
    "mask size differs": ["--init-image", "{init}", "--mask", "{mask32}"],
    "mask without init image": ["--mask", "{mask64}"],
    "non-image init file": ["--init-image", "{notimage}"],
    "missing init file": ["--init-image", "{root}/missing.png"],
    "truncated png": ["--init-image", "{truncated}"],
    "decompression bomb": ["--init-image", "{bomb}"],
    "bomb as mask": ["--init-image", "{init}", "--mask", "{bomb}"],
    "unknown sampler": ["--sampler", "Euler z"],
    "not a number": ["--width", "abc"],
    "bad lora weight": ["--lora", "detail:abc"],
    "unknown option": ["--colour", "red"],
    "missing vae file": ["--vae", "{root}/missing-vae.safetensors"],
    "bad file name pattern": ["--pattern", "{{nope}}"],
    "out is a file": ["--out", "{init}"],
}


def _fill(args: list[str], files: dict[str, Path]) -> list[str]:
    values = {name: str(path) for name, path in files.items()}
    values["root"] = str(files["init"].parent)
    return [a.format(**values) for a in args]


@pytest.mark.parametrize("case", sorted(FAST_BAD_INPUTS))
def test_bad_input_fails_fast_with_one_line(case: str, run_cli: Any, bad_files: dict[str, Path],
                                            tmp_path: Path) -> None:
    out = tmp_path / "out"
    start = time.monotonic()
    proc = run_cli(["generate", "--prompt", "x", *SMALL, "--out", str(out),
                    *_fill(FAST_BAD_INPUTS[case], bad_files)], timeout=60)
    elapsed = time.monotonic() - start
    assert proc.returncode == 2, (case, proc.stderr)
    assert_one_error_line(proc)
    assert proc.stdout == ""
    assert not out.exists()  # nothing written, not even the folder
    assert elapsed < 20, f"{case}: took {elapsed:.1f} s (checked before loading torch?)"


def test_folder_that_is_not_a_model(run_cli: Any, bad_files: dict[str, Path],
                                    tmp_path: Path) -> None:
    out = tmp_path / "out"
    proc = run_cli(["generate", "--prompt", "x", *SMALL, "--out", str(out),
                    "--model", str(bad_files["notamodel"])])
    assert proc.returncode == 2, proc.stderr
    line = assert_one_error_line(proc)
    assert "notamodel" in line
    assert not out.exists()


def test_info_bad_files(run_cli: Any, bad_files: dict[str, Path]) -> None:
    for name in ("truncated", "notimage", "bomb", "init"):  # init.png has no parameters
        proc = run_cli(["info", str(bad_files[name])], timeout=60)
        assert proc.returncode != 0, name
        assert_one_error_line(proc)
    proc = run_cli(["info", str(bad_files["init"].parent / "missing.png")], timeout=60)
    assert proc.returncode == 2
    assert_one_error_line(proc)


def test_no_command_prints_help(run_cli: Any) -> None:
    proc = run_cli(["--version"], timeout=60)
    assert proc.returncode == 0 and proc.stdout.startswith("sdstudio ")


# --------------------------------------------------------------------------- in-process
def _subcommands() -> list[str]:
    parser = cli.build_parser()
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return sorted(action.choices)
    return []


@pytest.mark.parametrize("command", ["", *_subcommands()])
def test_help_for_each_subcommand(command: str, capsys: pytest.CaptureFixture[str]) -> None:
    argv = [command, "--help"] if command else ["--help"]
    assert cli.main(argv) == 0
    out = capsys.readouterr().out
    assert out.startswith("usage: sdstudio")


def test_generate_and_info_are_registered() -> None:
    assert {"generate", "info"} <= set(_subcommands())


def test_other_modules_register_their_subcommands() -> None:
    assert {"batch", "models", "convert"} <= set(_subcommands())


def test_unexpected_error_is_one_line_and_logged(capsys: pytest.CaptureFixture[str]) -> None:
    def boom(args: argparse.Namespace) -> int:
        raise RuntimeError("something broke\nsecond line")

    assert cli.run_handler(boom, argparse.Namespace(), ["generate"]) == 1
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1
    assert "something broke" in err and "details in" in err and "Traceback" not in err
    log = Path(err.rsplit("details in ", 1)[1].rstrip(")\n"))
    assert "RuntimeError: something broke" in log.read_text()


def test_request_from_args() -> None:
    parser = cli.build_parser()
    args = parser.parse_args(["generate", "-p", "a cat <lora:x:0.5>", "-W", "768", "--seed", "3",
                              "--sampler", "dpmpp_2m_karras", "--lora", "style:0.7",
                              "--lora", "plain", "--inpaint-only-masked"])
    req = cli.request_from_args(args).validated()
    assert req == GenerationRequest(
        prompt="a cat <lora:x:0.5>", width=768, seed=3, sampler="DPM++ 2M Karras",
        loras=(LoraSpec("style", 0.7), LoraSpec("plain", 1.0)), inpaint_only_masked=True,
    )
    args = parser.parse_args(["generate", "-p", "x", "--init-image", "rel.png"])
    assert Path(cli.request_from_args(args).init_image or "").is_absolute()


def test_normalize_sampler() -> None:
    assert cli.normalize_sampler("euler_a") == "Euler a"
    assert cli.normalize_sampler("Euler A") == "Euler a"
    assert cli.normalize_sampler("DPM++ SDE Karras") == "DPM++ SDE Karras"
    assert cli.normalize_sampler("dpmpp_sde_karras") == "DPM++ SDE Karras"
    assert cli.normalize_sampler("nonsense") == "nonsense"


def test_parse_lora() -> None:
    assert cli.parse_lora("name:0.5") == LoraSpec("name", 0.5)
    assert cli.parse_lora("C:/loras/a.safetensors:1.2") == LoraSpec("C:/loras/a.safetensors", 1.2)
    assert cli.parse_lora("name") == LoraSpec("name", 1.0)
    with pytest.raises(RequestError):
        cli.parse_lora("name:heavy")


def test_looks_like_path() -> None:
    assert cli.looks_like_path("/abs/model")
    assert cli.looks_like_path("./rel")
    assert cli.looks_like_path("model.safetensors")
    assert not cli.looks_like_path("runwayml/stable-diffusion-v1-5")
    assert not cli.looks_like_path("my-model")


def test_format_progress() -> None:
    line = cli.format_progress(Progress(step=5, total=20, run=1, runs=2, elapsed_s=5.0,
                                        s_per_it=1.0))
    assert "run 1/2" in line and "step 5/20" in line and "1.00 s/it" in line
    assert "ETA 0:35" in line  # 15 steps left in this run + 20 in the next
    fast = cli.format_progress(Progress(step=1, total=2, s_per_it=0.02))
    assert "50.0 it/s" in fast and "run" not in fast


def test_progress_bar_non_tty_is_sparse() -> None:
    import io

    stream = io.StringIO()
    bar = cli.ProgressBar(stream=stream, interval_s=3600)
    for i in range(1, 21):
        bar.update(Progress(step=i, total=20))
    lines = stream.getvalue().splitlines()
    assert len(lines) == 2 and "step 20/20" in lines[-1]


def test_main_without_window_generates(monkeypatch: pytest.MonkeyPatch) -> None:
    import sdstudio.__main__ as entry

    calls: list[list[str]] = []
    monkeypatch.setattr(entry, "_has_window", lambda: False)
    monkeypatch.setattr(cli, "main", lambda argv=None: calls.append(list(argv or [])) or 0)
    assert entry.main([]) == 0
    assert calls and calls[0][0] == "generate" and "--prompt" in calls[0]
    assert calls[0][calls[0].index("--width") + 1] == "256"  # the demo model: quick
    assert entry.main(["info", "x.png"]) == 0
    assert calls[-1] == ["info", "x.png"]


def test_main_without_display_generates(monkeypatch: pytest.MonkeyPatch) -> None:
    import sdstudio.__main__ as entry

    calls: list[list[str]] = []
    monkeypatch.setattr(entry, "_has_window", lambda: True)
    monkeypatch.setattr(entry, "has_display", lambda: False)
    monkeypatch.setattr(cli, "main", lambda argv=None: calls.append(list(argv or [])) or 0)
    assert entry.main([]) == 0
    assert calls and calls[0][0] == "generate"


def test_has_display() -> None:
    from sdstudio.__main__ import has_display

    assert has_display("win32", {})
    assert has_display("darwin", {})
    assert not has_display("linux", {})
    assert has_display("linux", {"DISPLAY": ":0"})
    assert has_display("linux", {"WAYLAND_DISPLAY": "wayland-0"})
    assert has_display("linux", {"QT_QPA_PLATFORM": "offscreen"})


def test_threads_option_sets_the_cpu_threads_setting() -> None:
    from sdstudio.cli.request_args import engine_settings_from_args
    from sdstudio.core.settings import Settings

    parser = cli.build_parser()
    settings = Settings()
    args = parser.parse_args(["generate", "-p", "x", "--threads", "3"])
    assert engine_settings_from_args(args, settings).cpu_threads == 3
    args = parser.parse_args(["generate", "-p", "x"])
    assert engine_settings_from_args(args, settings).cpu_threads == 0  # automatic
    for bad in ("0", "-2", "100000"):
        args = parser.parse_args(["generate", "-p", "x", "--threads", bad])
        with pytest.raises(RequestError, match="--threads"):
            engine_settings_from_args(args, settings)
