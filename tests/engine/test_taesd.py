"""TAESD live previews: a tiny random decoder saved in madebyollin's layout loads through the
real loader, decodes previews at the image's size, is used when present (Live preview: TAESD)
and not when absent or not chosen; hostile and wrong files are refused in one line."""

from __future__ import annotations

import pickle
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors.torch import save_file

from sdstudio.core.errors import ModelError
from sdstudio.core.events import Notice, Preview
from sdstudio.core.settings import EngineSettings
from sdstudio.engine import taesd


def tiny_taesd_state(channels: int = 8, seed: int = 0) -> dict[str, torch.Tensor]:
    """A random TAESD decoder's weights in madebyollin's key layout (``1.weight`` …)."""
    from diffusers.models.autoencoders.vae import DecoderTiny

    torch.manual_seed(seed)
    decoder = DecoderTiny(in_channels=4, out_channels=3, num_blocks=taesd.NUM_BLOCKS,
                          block_out_channels=(channels,) * 4, upsampling_scaling_factor=2,
                          act_fn="relu", upsample_fn="nearest")
    out = {}
    for key, tensor in decoder.state_dict().items():
        index, rest = key.removeprefix("layers.").split(".", 1)
        out[f"{int(index) + 1}.{rest}"] = tensor.clone().contiguous()
    return out


def write_taesd(folder: Path, name: str = "taesd_decoder.safetensors",
                state: dict[str, torch.Tensor] | None = None) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    state = state if state is not None else tiny_taesd_state()
    if name.endswith(".safetensors"):
        save_file(state, str(path))
    else:
        torch.save(state, path)
    return path


def test_keys_as_madebyollin_writes_them() -> None:
    """Layer 0 of madebyollin's decoder is the clamp: ``N.…`` is DecoderTiny's layers.(N-1)."""
    state = tiny_taesd_state()
    assert "1.weight" in state and "0.weight" not in state
    assert any(k.startswith("3.conv.0.") for k in state)


@pytest.mark.parametrize("name", ["taesd_decoder.safetensors", "taesd_decoder.pth"])
def test_loads_and_decodes_at_image_size(tmp_path: Path, name: str) -> None:
    path = write_taesd(tmp_path, name)
    decoder = taesd.load_decoder(path)
    image = taesd.decode_preview(decoder, torch.randn(2, 4, 8, 12))
    assert image.size == (96, 64) and image.mode == "RGB"
    # the same weights give the same pixels whichever format they came in
    other = write_taesd(tmp_path / "other", "taesd_decoder.pth" if name.endswith(
        ".safetensors") else "taesd_decoder.safetensors")
    latent = torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(1))
    assert taesd.decode_preview(taesd.load_decoder(other), latent).tobytes() == \
        taesd.decode_preview(decoder, latent).tobytes()


def test_diffusers_layout_is_taken(tmp_path: Path) -> None:
    state = {f"decoder.layers.{int(k.split('.', 1)[0]) - 1}.{k.split('.', 1)[1]}": v
             for k, v in tiny_taesd_state().items()}
    state["encoder.layers.0.weight"] = torch.zeros(8, 3, 3, 3)
    path = write_taesd(tmp_path, state=state)
    assert taesd.decode_preview(taesd.load_decoder(path), torch.randn(4, 8, 8)).size == (64, 64)


def test_found_by_name_per_architecture(tmp_path: Path) -> None:
    own, webui = tmp_path / "own", tmp_path / "a1111" / "models" / "VAE-approx"
    write_taesd(webui, "taesdxl_decoder.pth")
    sd = write_taesd(own, "taesd_decoder.safetensors")
    (own / "taesdxl_decoder.txt").write_text("not a model")
    assert taesd.find_decoder("sd1", [own, webui]) == sd.resolve()
    assert taesd.find_decoder("sd2-v", [own, webui]) == sd.resolve()
    assert taesd.find_decoder("sdxl", [own, webui]) == (webui / "taesdxl_decoder.pth").resolve()
    assert taesd.find_decoder("sdxl", [own]) is None
    assert taesd.find_decoder("sd1", [tmp_path / "missing"]) is None


def test_a_link_out_of_its_folder_is_not_taken(tmp_path: Path) -> None:
    outside = write_taesd(tmp_path / "elsewhere")
    folder = tmp_path / "vae_approx"
    folder.mkdir()
    (folder / "taesd_decoder.safetensors").symlink_to(outside)
    assert taesd.find_decoder("sd1", [folder]) is None


def test_a1111_folders_from_the_settings(tmp_path: Path, monkeypatch: pytest.MonkeyPatch
                                         ) -> None:
    monkeypatch.setenv("SDSTUDIO_HOME", str(tmp_path / "home"))
    models = tmp_path / "webui" / "models"
    (models / "VAE").mkdir(parents=True)
    (models / "VAE-approx").mkdir()
    (tmp_path / "other" / "VAE").mkdir(parents=True)  # no VAE-approx beside it
    settings = EngineSettings(vae_dirs=(str(models / "VAE"), str(tmp_path / "other" / "VAE")),
                              model_dirs=(str(models / "Stable-diffusion"),))
    assert taesd.decoder_dirs(settings) == [models / "VAE-approx"]
    own = tmp_path / "home" / "data" / "models" / "vae_approx"
    own.mkdir(parents=True)
    assert taesd.decoder_dirs(settings)[0].resolve() == own.resolve()


class _Exploit:
    def __reduce__(self) -> tuple[Any, ...]:
        return (eval, ("__import__('pathlib').Path('PWNED').touch()",))


def test_hostile_pickle_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    path = tmp_path / "taesd_decoder.pth"
    with open(path, "wb") as fh:
        pickle.dump({"1.weight": _Exploit()}, fh, protocol=2)
    with pytest.raises(ModelError) as err:
        taesd.load_decoder(path)
    assert "\n" not in str(err.value)
    assert not (tmp_path / "PWNED").exists()


@pytest.mark.parametrize("state", [
    {"weight": torch.zeros(3)},  # not the layout
    {"1.weight": torch.zeros(8, 3, 3, 3)},  # 3 input channels: not a latent decoder
    {k: v for k, v in tiny_taesd_state().items() if not k.startswith("4.")},  # incomplete
    {**tiny_taesd_state(), "2.weight": torch.zeros(8, 8, 3, 3)},  # ReLU has no weights
], ids=["layout", "channels", "missing", "unexpected"])
def test_wrong_files_are_refused_in_one_line(tmp_path: Path,
                                             state: dict[str, torch.Tensor]) -> None:
    path = write_taesd(tmp_path, state=state)
    with pytest.raises(ModelError) as err:
        taesd.load_decoder(path)
    assert "not a TAESD decoder" in str(err.value) and "\n" not in str(err.value)


def test_a_shape_that_does_not_fit_is_refused(tmp_path: Path) -> None:
    state = tiny_taesd_state()
    state["3.conv.0.weight"] = torch.zeros(8, 8, 1, 1)
    with pytest.raises(ModelError, match="not a TAESD decoder"):
        taesd.load_decoder(write_taesd(tmp_path, state=state))


# ----------------------------------------------------------------------------- the engine
@pytest.fixture()
def sd1_engine(engines: Callable[[str], Any]) -> Iterator[Any]:
    engine = engines("sd1")
    before = engine.settings
    yield engine
    engine.configure(before)


def _previews(engine: Any, request: Any) -> tuple[list[Preview], list[str]]:
    events: list[Any] = []
    engine.generate(request, events.append)
    return ([e for e in events if isinstance(e, Preview)],
            [e.message for e in events if isinstance(e, Notice)])


def test_engine_previews_with_taesd_when_present(tmp_path: Path, sd1_engine: Any,
                                                 make_request: Callable[..., Any]) -> None:
    models = tmp_path / "webui" / "models"
    (models / "VAE").mkdir(parents=True)
    base = sd1_engine.settings.replace(preview_every=1, vae_dirs=(str(models / "VAE"),))
    request = make_request("sd1", steps=2)
    # Live preview TAESD, but no file: the linear map (latent size, 8x8)
    sd1_engine.configure(base.replace(preview_method="TAESD"))
    previews, notices = _previews(sd1_engine, request)
    assert [p.image.size for p in previews] == [(8, 8)] * 2 and not notices
    # the file present: previews at the image's size
    write_taesd(models / "VAE-approx")
    previews, notices = _previews(sd1_engine, request)
    assert [p.image.size for p in previews] == [(64, 64)] * 2 and not notices
    # Approx cheap chosen: the linear map although the file is there
    sd1_engine.configure(base.replace(preview_method="Approx cheap"))
    previews, _ = _previews(sd1_engine, request)
    assert [p.image.size for p in previews] == [(8, 8)] * 2
    # every N steps still honoured
    sd1_engine.configure(base.replace(preview_method="TAESD", preview_every=2))
    previews, _ = _previews(sd1_engine, make_request("sd1", steps=4))
    assert [p.image.size for p in previews] == [(64, 64)] * 2


def test_engine_tells_a_refused_file_once_and_falls_back(
        tmp_path: Path, sd1_engine: Any, make_request: Callable[..., Any]) -> None:
    models = tmp_path / "webui" / "models"
    (models / "VAE").mkdir(parents=True)
    write_taesd(models / "VAE-approx", state={"weight": torch.zeros(3)})
    sd1_engine.configure(sd1_engine.settings.replace(
        preview_every=1, preview_method="TAESD", vae_dirs=(str(models / "VAE"),)))
    previews, notices = _previews(sd1_engine, make_request("sd1", steps=2))
    assert [p.image.size for p in previews] == [(8, 8)] * 2
    assert len(notices) == 1 and "TAESD" in notices[0] and "\n" not in notices[0]
    previews, notices = _previews(sd1_engine, make_request("sd1", steps=2))
    assert not notices and previews[0].image.size == (8, 8)
