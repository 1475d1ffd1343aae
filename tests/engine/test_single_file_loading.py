"""How a single file's weights are loaded: through the layout table (the one ``convert``
writes with), copied out of the memory-mapped file straight into the engine's dtype, old
SD 1.x text-encoder names accepted, wrong shapes refused in one line."""

from __future__ import annotations

import json
import struct
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from sdstudio.core.errors import ModelError
from sdstudio.engine.ldm_layout import SD1_TEXT_PREFIX, VAE_PREFIX
from sdstudio.engine.single_file import load_single_file
from tests.engine._ldm_fixtures import write_single_file


def _metadata(path: Path) -> dict[str, str]:
    raw = path.read_bytes()
    (n,) = struct.unpack("<Q", raw[:8])
    return dict(json.loads(raw[8:8 + n])["__metadata__"])


def _folder_weights(folder: Path, name: str) -> dict[str, torch.Tensor]:
    return load_file(str(next((folder / name).glob("*.safetensors"))))


@pytest.fixture(scope="module")
def sd1_file(tiny_models: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_single_file(tiny_models["sd1"],
                             tmp_path_factory.mktemp("sf-load") / "tiny-sd1.safetensors")


def test_weights_go_straight_into_the_asked_dtype(tiny_models: dict[str, Path],
                                                  sd1_file: Path) -> None:
    pipe = load_single_file(sd1_file, device="cpu", dtype=torch.bfloat16)
    for name in ("unet", "vae", "text_encoder"):
        expected = _folder_weights(tiny_models["sd1"], name)
        got = getattr(pipe, name).state_dict()
        for key, value in expected.items():
            assert got[key].dtype == torch.bfloat16, (name, key)
            assert torch.equal(got[key], value.to(torch.bfloat16)), (name, key)
        assert not any(p.is_meta for p in getattr(pipe, name).parameters())


def test_loaded_weights_are_copies_not_views_on_the_file(tiny_models: dict[str, Path],
                                                         sd1_file: Path, tmp_path: Path) -> None:
    copy = tmp_path / "copy.safetensors"
    copy.write_bytes(sd1_file.read_bytes())
    pipe = load_single_file(copy, device="cpu", dtype=torch.float32)
    raw = bytearray(copy.read_bytes())
    (n,) = struct.unpack("<Q", raw[:8])
    with copy.open("r+b") as fh:  # the same file, its tensor bytes zeroed in place
        fh.seek(8 + n)
        fh.write(bytes(len(raw) - 8 - n))
    expected = _folder_weights(tiny_models["sd1"], "unet")
    got = pipe.unet.state_dict()
    assert all(torch.equal(got[k], v.float()) for k, v in expected.items())


def test_old_sd1_text_encoder_names_load(tiny_models: dict[str, Path], sd1_file: Path,
                                         tmp_path: Path) -> None:
    """SD 1.x files saved with older transformers have no ``text_model.`` level (A1111's
    checkpoint_dict_replacements_sd1)."""
    state = load_file(str(sd1_file))
    new = SD1_TEXT_PREFIX + "text_model."
    old = {(SD1_TEXT_PREFIX + k[len(new):] if k.startswith(new) else k): v
           for k, v in state.items()}
    assert old.keys() != state.keys()
    path = tmp_path / "old-names.safetensors"
    save_file(old, str(path), metadata=_metadata(sd1_file))
    pipe = load_single_file(path, device="cpu", dtype=torch.float32)
    expected = _folder_weights(tiny_models["sd1"], "text_encoder")
    got = pipe.text_encoder.state_dict()
    assert all(torch.equal(got[k], v.float()) for k, v in expected.items())


def test_a_weight_of_the_wrong_shape_is_refused_in_one_line(sd1_file: Path,
                                                            tmp_path: Path) -> None:
    state = load_file(str(sd1_file))
    key = VAE_PREFIX + "decoder.conv_out.weight"
    state[key] = torch.zeros(3, 5, 3, 3)
    path = tmp_path / "bad-shape.safetensors"
    save_file(state, str(path), metadata=_metadata(sd1_file))
    with pytest.raises(ModelError) as err:
        load_single_file(path, device="cpu", dtype=torch.float32)
    assert key in str(err.value) and "(3, 5, 3, 3)" in str(err.value)
    assert "\n" not in str(err.value)


def test_a_missing_weight_is_named(sd1_file: Path, tmp_path: Path) -> None:
    state = load_file(str(sd1_file))
    key = VAE_PREFIX + "decoder.conv_out.bias"
    del state[key]
    path = tmp_path / "missing.safetensors"
    save_file(state, str(path), metadata=_metadata(sd1_file))
    with pytest.raises(ModelError, match="lacks vae weights") as err:
        load_single_file(path, device="cpu", dtype=torch.float32)
    assert key in str(err.value)
