"""``sdstudio generate --outpaint`` end to end (subprocess, tiny demo model) and its refusals."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

SMALL = ["--width", "64", "--height", "64", "--steps", "2"]


@pytest.fixture(scope="module")
def init_png(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("outpaint") / "init.png"
    rng = np.random.RandomState(1)
    Image.fromarray((rng.rand(64, 64, 3) * 255).astype(np.uint8)).save(path)
    return path


def test_outpaint_end_to_end(run_cli: Any, init_png: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    proc = run_cli(["generate", "--prompt", "a wider view", *SMALL, "--seed", "3",
                    "--outpaint", "left=16,top=0,right=8,bottom=0", "-i", str(init_png),
                    "--mask-blur", "0", "--masked-content", "fill", "--out", str(out)])
    assert proc.returncode == 0, proc.stderr
    path = Path(proc.stdout.strip())
    with Image.open(path) as image:
        assert image.size == (88, 64)
        res = np.asarray(image.convert("RGB"))
    assert np.array_equal(res[:, 16:80], np.asarray(Image.open(init_png).convert("RGB")))
    info = run_cli(["info", "--json", str(path)])
    assert info.returncode == 0, info.stderr
    request = json.loads(info.stdout)["request"]
    assert (request["outpaint_left"], request["outpaint_right"]) == (16, 8)
    assert request["masked_content"] == "fill"
    text = run_cli(["info", str(path)]).stdout
    assert 'Outpaint: "left 16, right 8"' in text and "Masked content: fill" in text


@pytest.mark.parametrize(("args", "message"), [
    (["--outpaint", "left=0,top=0,right=0,bottom=0"], "every side is 0 px"),
    (["--outpaint", "left=12"], "outpaint left 12 is not a multiple of 8 (use 8 or 16)"),
    (["--outpaint-right", "12"], "outpaint right 12 is not a multiple of 8"),
    (["--outpaint", "right=4096", "-W", "4096", "-H", "4096"],
     "outpainted size 8192x4096 is too large"),
    (["--outpaint", "sideways=8"], "unknown side 'sideways'"),
])
def test_bad_outpaints_are_one_line(args: list[str], message: str, run_cli: Any,
                                    init_png: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    proc = run_cli(["generate", "--prompt", "x", *SMALL, "-i", str(init_png), *args,
                    "--out", str(out)], timeout=60)
    assert proc.returncode == 2, proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("sdstudio: error: "), proc.stderr
    assert message in lines[0]
    assert not out.exists()


def test_outpaint_without_an_init_image(run_cli: Any, tmp_path: Path) -> None:
    proc = run_cli(["generate", "--prompt", "x", *SMALL, "--outpaint", "left=8",
                    "--out", str(tmp_path / "out")], timeout=60)
    assert proc.returncode == 2
    assert proc.stderr.strip() == ("sdstudio: error: outpainting needs an init image (the "
                                   "picture to extend)")
