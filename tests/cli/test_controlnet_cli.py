"""``sdstudio generate --control`` and a ``sdstudio batch`` list naming control images, end
to end in subprocesses (tiny model, tiny random ControlNet files)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from tests.engine._controlnet_fixtures import build_controlnets

SMALL = ["--width", "64", "--height", "64", "--steps", "2", "--seed", "4"]


@pytest.fixture(scope="module")
def files(tiny_models: dict[str, Path], tmp_path_factory: pytest.TempPathFactory
          ) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("cn-cli")
    out = build_controlnets(tiny_models["sd1"], root / "ControlNet")
    rng = np.random.RandomState(7)
    for name in ("pose1.png", "pose2.png"):
        Image.fromarray((rng.rand(64, 64, 3) * 255).astype(np.uint8)).save(root / name)
        out[name] = root / name
    out["model"] = tiny_models["sd1"]
    return out


def _request_of(run_cli: Any, path: Path) -> dict[str, Any]:
    info = run_cli(["info", "--json", str(path)])
    assert info.returncode == 0, info.stderr
    request: dict[str, Any] = json.loads(info.stdout)["request"]
    return request


def test_generate_with_a_control_unit(run_cli: Any, files: dict[str, Path],
                                      tmp_path: Path) -> None:
    out = tmp_path / "out"
    base = ["generate", "-p", "a dancer", *SMALL, "-m", str(files["model"])]
    plain = run_cli([*base, "--out", str(out / "plain")])
    assert plain.returncode == 0, plain.stderr
    proc = run_cli([*base, "--control", f"{files['original']},image={files['pose1.png']},"
                    "weight=0.9,end=0.8,mode=prompt", "--out", str(out / "cn")])
    assert proc.returncode == 0, proc.stderr
    made = Path(proc.stdout.strip())
    with Image.open(made) as a, Image.open(Path(plain.stdout.strip())) as b:
        assert not np.array_equal(np.asarray(a.convert("RGB")), np.asarray(b.convert("RGB")))
    units = _request_of(run_cli, made)["control_units"]
    assert units[0]["weight"] == 0.9 and units[0]["guidance_end"] == 0.8
    assert units[0]["image"] == str(files["pose1.png"])
    text = run_cli(["info", str(made)]).stdout
    assert 'ControlNet 0: "Module: none, Model: control_tiny_sd15 [' in text
    assert "Control Mode: My prompt is more important" in text


@pytest.mark.parametrize(("option", "message"), [
    ("nowhere,image=x.png", "no control model 'nowhere'"),
    ("m,weight=9", "weight must be between 0 and 2"),
    ("m,frobnicate=1", "unknown control unit setting 'frobnicate'"),
    ("./missing.safetensors,image=x.png", "control unit 1's model not found"),
    ("m,image=/no/such.png", "control unit 1's image"),
])
def test_bad_control_options_are_one_line(run_cli: Any, files: dict[str, Path],
                                          tmp_path: Path, option: str, message: str) -> None:
    proc = run_cli(["generate", "-p", "x", *SMALL, "-m", str(files["model"]),
                    "--control", option.replace("x.png", str(files["pose1.png"])),
                    "--out", str(tmp_path / "o")], timeout=120)
    assert proc.returncode == 2, proc.stderr
    lines = [line for line in proc.stderr.splitlines()
             if line.strip() and not line.startswith("sdstudio: note:")]
    assert len(lines) == 1 and message in lines[0], proc.stderr


def test_batch_lines_name_their_control_images(run_cli: Any, files: dict[str, Path],
                                               tmp_path: Path) -> None:
    folder = files["original"].parent
    listing = tmp_path / "poses.txt"
    listing.write_text(
        f'--prompt "a dancer" --control "control_tiny_sd15,image={files["pose1.png"]}"\n'
        f'--prompt "a dancer" --control "control_tiny_sd15,image={files["pose2.png"]}"\n',
        encoding="utf-8")
    settings = tmp_path / "home"
    settings.mkdir()
    out = tmp_path / "batch"
    env_settings = {"engine": {"controlnet_dirs": [str(folder)]}}
    (settings / "config").mkdir()
    (settings / "config" / "settings.json").write_text(json.dumps(env_settings))
    proc = run_cli(["batch", str(listing), *SMALL, "-m", str(files["model"]),
                    "--out", str(out)], home=settings, timeout=300)
    assert proc.returncode == 0, proc.stderr
    images = sorted(p for p in out.rglob("*.png"))
    assert len(images) == 2
    got = [_request_of(run_cli, p)["control_units"][0]["image"] for p in images]
    assert sorted(got) == [str(files["pose1.png"]), str(files["pose2.png"])]
    pixels = [np.asarray(Image.open(p).convert("RGB")) for p in images]
    assert not np.array_equal(pixels[0], pixels[1])
