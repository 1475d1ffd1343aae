"""``sdstudio generate --control ADAPTER,module=ip-adapter_clip_sd15,...`` end to end: a tiny
random IP-Adapter with its CLIP image encoder beside it (the h94 layout), the image made,
its infotext, and the missing encoder refused in one line."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

SMALL = ["--prompt", "a cat", "-W", "64", "-H", "64", "--steps", "2", "--seed", "1"]


@pytest.fixture(scope="module")
def adapter_files(tiny_models: dict[str, Path], tmp_path_factory: pytest.TempPathFactory
                  ) -> dict[str, Path]:
    from diffusers import UNet2DConditionModel

    from sdstudio.engine.tiny_ip_adapter import build_tiny_clip_vision, build_tiny_ip_adapter

    root = tmp_path_factory.mktemp("ip-cli")
    unet = UNet2DConditionModel.from_pretrained(tiny_models["sd1"] / "unet")
    out = {"adapter": build_tiny_ip_adapter(root / "models" / "ip-adapter_tiny.safetensors",
                                            unet),
           "lonely": build_tiny_ip_adapter(root / "alone" / "ip-adapter_alone.safetensors",
                                           unet)}
    build_tiny_clip_vision(root / "models" / "image_encoder")
    out["ref"] = root / "ref.png"
    rng = np.random.RandomState(3)
    Image.fromarray((rng.rand(40, 50, 3) * 255).astype(np.uint8)).save(out["ref"])
    return out


def test_generate_with_an_ip_adapter(run_cli: Any, tiny_models: dict[str, Path],
                                     adapter_files: dict[str, Path], tmp_path: Path) -> None:
    base = ["generate", "--model", str(tiny_models["sd1"]), *SMALL]
    control = (f"{adapter_files['adapter']},image={adapter_files['ref']},"
               "module=ip-adapter_clip_sd15,weight=0.8,end=0.5")
    plain = run_cli([*base, "--out", str(tmp_path / "plain")])
    used = run_cli([*base, "--control", control, "--out", str(tmp_path / "ip")])
    assert plain.returncode == 0, plain.stderr
    assert used.returncode == 0, used.stderr
    with Image.open(plain.stdout.strip()) as a, Image.open(used.stdout.strip()) as b:
        assert not np.array_equal(np.asarray(a), np.asarray(b))
    info = run_cli(["info", used.stdout.strip()])
    assert info.returncode == 0, info.stderr
    assert ('ControlNet 0: "Module: ip-adapter_clip_sd15, Model: ip-adapter_tiny ['
            in info.stdout)
    assert "Weight: 0.8" in info.stdout and "Guidance End: 0.5" in info.stdout


def test_missing_image_encoder_is_one_line(run_cli: Any, tiny_models: dict[str, Path],
                                           adapter_files: dict[str, Path],
                                           tmp_path: Path) -> None:
    control = f"{adapter_files['lonely']},image={adapter_files['ref']},module=ip-adapter_clip_sd15"
    proc = run_cli(["generate", "--model", str(tiny_models["sd1"]), *SMALL, "--control",
                    control, "--out", str(tmp_path / "out")])
    assert proc.returncode != 0
    errors = [line for line in proc.stderr.splitlines() if "error" in line]
    assert len(errors) == 1, proc.stderr
    assert "IP-Adapter ip-adapter_alone needs its CLIP image encoder" in errors[0]
    assert "clip_vision" in errors[0]
    assert not list(tmp_path.rglob("*.png"))
