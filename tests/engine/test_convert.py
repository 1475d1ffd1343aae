"""``sdstudio convert``: .ckpt -> .safetensors through the safe loader only, single file ->
diffusers folder, diffusers folder -> single file (exact round trip)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from sdstudio.core.errors import ModelError
from sdstudio.engine.convert import convert
from tests.engine._ldm_fixtures import write_single_file


class _Evil:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[object, tuple[str, str]]:
        return (open, (str(self.marker), "w"))


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
    return subprocess.run([sys.executable, "-m", "sdstudio", *args], capture_output=True,
                          text=True, timeout=300, env=env)


def test_ckpt_to_safetensors_unwraps_state_dict(tmp_path: Path) -> None:
    shared = torch.arange(12, dtype=torch.float32)
    state = {"a": shared[:6].view(2, 3), "b": shared[6:], "c": torch.ones(2).T}
    src = tmp_path / "model.ckpt"
    torch.save({"state_dict": state, "global_step": 3}, src)
    out = convert(src, tmp_path / "model.safetensors", log=lambda m: None)
    loaded = load_file(str(out))
    assert set(loaded) == {"a", "b", "c"}
    assert all(torch.equal(loaded[k], state[k]) for k in state)
    with pytest.raises(ModelError, match="already exists"):
        convert(src, out, log=lambda m: None)


def test_malicious_ckpt_is_never_converted(tmp_path: Path) -> None:
    marker = tmp_path / "PWNED"
    src = tmp_path / "evil.ckpt"
    torch.save({"state_dict": {"w": torch.zeros(1), "x": _Evil(marker)}}, src)
    proc = _cli("convert", str(src), str(tmp_path / "evil.safetensors"))
    assert proc.returncode == 2, proc.stderr
    assert "evil.ckpt" in proc.stderr and "Traceback" not in proc.stderr
    assert not marker.exists() and not (tmp_path / "evil.safetensors").exists()
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]


def test_single_file_to_folder_and_back(tiny_models: dict[str, Path], tmp_path: Path) -> None:
    single = write_single_file(tiny_models["sd1"], tmp_path / "tiny.safetensors")
    folder = convert(single, tmp_path / "as-folder", log=lambda m: None)
    assert (folder / "model_index.json").is_file()
    assert list((folder / "unet").glob("*.safetensors"))
    assert not list(folder.rglob("*.bin"))
    for comp in ("unet", "vae", "text_encoder"):
        a = load_file(str(next((tiny_models["sd1"] / comp).glob("*.safetensors"))))
        b = load_file(str(next((folder / comp).glob("*.safetensors"))))
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a), comp
    back = convert(folder, tmp_path / "again.safetensors", log=lambda m: None)
    x, y = load_file(str(single)), load_file(str(back))
    assert x.keys() == y.keys() and all(torch.equal(x[k], y[k]) for k in x)


@pytest.mark.parametrize("kind", ["sd1", "sd2-v", "sdxl"])
def test_ldm_writer_is_the_inverse_of_diffusers_converters(
    kind: str, tiny_models: dict[str, Path], tmp_path: Path
) -> None:
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from diffusers.loaders.single_file_utils import (
        convert_ldm_unet_checkpoint,
        convert_ldm_vae_checkpoint,
    )

    folder = tiny_models[kind]
    ldm = load_file(str(write_single_file(folder, tmp_path / f"{kind}.safetensors")))
    unet_cfg = UNet2DConditionModel.load_config(folder / "unet")
    vae_cfg = AutoencoderKL.load_config(folder / "vae")
    for comp, back in (("unet", convert_ldm_unet_checkpoint(ldm, unet_cfg)),
                       ("vae", convert_ldm_vae_checkpoint(ldm, vae_cfg))):
        original = load_file(str(next((folder / comp).glob("*.safetensors"))))
        assert back.keys() == original.keys(), comp
        assert all(torch.equal(back[k], original[k]) for k in original), comp


def test_bad_conversions(tmp_path: Path, tiny_models: dict[str, Path]) -> None:
    with pytest.raises(ModelError, match="Not found"):
        convert(tmp_path / "none.ckpt", tmp_path / "x.safetensors")
    with pytest.raises(ModelError, match="single file"):
        convert(tiny_models["sd1"], tmp_path / "out-folder")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ModelError, match="not a diffusers model folder"):
        convert(tmp_path / "empty", tmp_path / "x.safetensors")
