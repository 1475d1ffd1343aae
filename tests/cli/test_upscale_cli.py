"""``sdstudio upscale``: end to end with a random-weight ESRGAN file (a subprocess, as a
person runs it), the metadata kept and the upscale noted as A1111's Extras does; bad input
refused in one line before anything is loaded or written (in-process: no torch needed)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from sdstudio.cli import main
from sdstudio.core.request import GenerationRequest
from sdstudio.storage.png import read_image_metadata, read_texts, save_image


@pytest.fixture(scope="module")
def inputs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    from sdstudio.engine.tiny_upscalers import build_upscaler

    root = tmp_path_factory.mktemp("upscale-cli")
    request = GenerationRequest(prompt="a lighthouse, dusk", seed=1234, width=64, height=48)
    made = save_image(Image.new("RGB", (64, 48), (30, 90, 160)), request, None, root / "made")
    plain = root / "plain.png"
    Image.new("RGB", (40, 40), "red").save(plain)
    model = build_upscaler(root / "models" / "4x-tiny.pth", "esrgan", scale=4)
    truncated = root / "truncated.png"
    truncated.write_bytes(made.read_bytes()[:120])
    notmodel = root / "models" / "notes.safetensors"
    notmodel.write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00" + b'{"a": "b"}      ')
    return {"made": made, "plain": plain, "model": model, "truncated": truncated,
            "notmodel": notmodel, "root": root}


def test_upscale_a_batch_keeps_metadata_and_notes_the_upscale(run_cli: Any,
                                                              inputs: dict[str, Path],
                                                              tmp_path: Path) -> None:
    out = tmp_path / "out"
    args = ["upscale", str(inputs["made"]), str(inputs["plain"]), "--upscaler", "4x-tiny",
            "--upscaler-dir", str(inputs["model"].parent), "--scale", "2", "--out", str(out)]
    proc = run_cli(args)
    assert proc.returncode == 0, proc.stderr
    printed = [Path(line) for line in proc.stdout.split()]
    assert [p.name for p in printed] == [f"{inputs['made'].stem}-2x.png", "plain-2x.png"]
    with Image.open(printed[0]) as im:
        assert im.size == (128, 96)
    with Image.open(printed[1]) as im:
        assert im.size == (80, 80)
    texts, _ = read_texts(printed[0])
    assert texts["extras"] == "Postprocess upscale by: 2, Postprocess upscaler: 4x-tiny"
    original = read_image_metadata(inputs["made"])
    kept = read_image_metadata(printed[0])
    assert kept.request == original.request and kept.infotext == original.infotext
    assert read_texts(printed[1])[0] == {
        "extras": "Postprocess upscale by: 2, Postprocess upscaler: 4x-tiny"}
    assert "step 1/1" in proc.stderr  # the progress bar (not a terminal: its last line)
    # again: new names, nothing overwritten
    again = run_cli(args)
    assert again.returncode == 0, again.stderr
    assert [Path(line).name for line in again.stdout.split()] == [
        f"{inputs['made'].stem}-2x-1.png", "plain-2x-1.png"]


@pytest.mark.parametrize("extra,message", [
    (["--scale", "0"], "upscale factor 0 is outside 1 to 8"),
    (["--scale", "100"], "upscale factor 100 is outside 1 to 8"),
    (["--upscaler", "R-ESRGAN 4x+"], "unknown upscaler 'R-ESRGAN 4x+'"),
    (["--upscaler", "Latent"], "Latent upscales latents, in the hires fix only"),
])
def test_bad_options_are_one_line_and_write_nothing(inputs: dict[str, Path], tmp_path: Path,
                                                    capsys: pytest.CaptureFixture[str],
                                                    extra: list[str], message: str) -> None:
    out = tmp_path / "out"
    assert main(["upscale", str(inputs["plain"]), "--out", str(out), *extra]) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1
    assert not out.exists()


def test_a_truncated_image_is_refused_before_any_is_done(inputs: dict[str, Path],
                                                         tmp_path: Path,
                                                         capsys: pytest.CaptureFixture[str]
                                                         ) -> None:
    out = tmp_path / "out"
    assert main(["upscale", str(inputs["plain"]), str(inputs["truncated"]), "--out",
                 str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert "truncated.png" in err and "truncated" in err.lower() and len(err.splitlines()) == 1
    assert not out.exists()


def test_a_result_above_the_pixel_limit_is_refused(tmp_path: Path,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    big = tmp_path / "big.png"
    Image.new("RGB", (4096, 2048)).save(big)
    assert main(["upscale", str(big), "--scale", "4", "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err.strip()
    assert "16384x8192" in err and "at most" in err


def test_a_file_that_is_no_upscaler_is_refused_in_one_line(
        inputs: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["upscale", str(inputs["plain"]), "--upscaler", str(inputs["notmodel"]),
                 "--out", str(tmp_path / "o"), "--quiet"]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and "notes.safetensors" in lines[0], lines
    assert not (tmp_path / "o").exists()
