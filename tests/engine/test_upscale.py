"""Upscalers: built-ins, model files (ESRGAN old/new layouts, Real-ESRGAN compact, SwinIR as
.pth and .safetensors) loaded through the safe loader and spandrel, refusals, tiling with
feathered blending, progress and cancel, the torchvision stand-in, the tile-size policy."""

from __future__ import annotations

import importlib.util
import itertools
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import save_file

from sdstudio.core import upscalers as names
from sdstudio.core.cancel import CancelToken
from sdstudio.core.errors import CancelledError, ModelError, RequestError
from sdstudio.engine import memory, upscale
from sdstudio.engine.spandrel_import import import_spandrel, torchvision_works, using_standin
from sdstudio.engine.tiny_upscalers import build_upscaler

FILES = [("esrgan", ".pth", 4), ("esrgan", ".safetensors", 4), ("esrgan-new", ".pth", 4),
         ("compact", ".pth", 2), ("compact", ".safetensors", 4), ("swinir", ".pth", 2),
         ("swinir", ".safetensors", 2)]
ARCH = {"esrgan": "ESRGAN", "esrgan-new": "ESRGAN", "compact": "Compact", "swinir": "SwinIR"}


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("upscalers")
    for kind, suffix, scale in FILES:
        build_upscaler(root / f"{kind}-x{scale}{suffix}", kind, scale=scale)
    build_upscaler(root / "sub" / "nested-esrgan.pth", "esrgan", scale=2)
    return root


@pytest.fixture(autouse=True)
def _free() -> None:
    yield
    upscale.unload_upscaler()


def _noise(width: int, height: int, seed: int = 0) -> Image.Image:
    rng = np.random.default_rng(seed)
    smooth = rng.random((height // 4 + 1, width // 4 + 1, 3))
    base = np.kron(smooth, np.ones((4, 4, 1)))[:height, :width]
    return Image.fromarray((255 * (0.7 * base + 0.3 * rng.random((height, width, 3))))
                           .astype(np.uint8))


# ------------------------------------------------------------------------------ built-ins
def test_builtin_names_and_latent_modes_are_a1111s() -> None:
    assert names.BUILTIN_UPSCALERS == ("None", "Lanczos", "Nearest")
    assert list(names.LATENT_UPSCALE_MODES) == [
        "Latent", "Latent (antialiased)", "Latent (bicubic)", "Latent (bicubic antialiased)",
        "Latent (nearest)", "Latent (nearest-exact)"]
    assert names.LATENT_UPSCALE_MODES["Latent (bicubic antialiased)"] == names.LatentMode(
        "bicubic", True)
    assert names.normalise(" lanczos ") == "Lanczos"
    assert names.normalise("") == "None"
    assert names.normalise("latent (NEAREST)") == "Latent (nearest)"
    assert names.normalise("4x-UltraSharp") == "4x-UltraSharp"
    assert names.kind_of("Latent") == "latent" and names.kind_of("Nearest") == "builtin"
    assert names.kind_of("RealESRGAN_x4plus") == "model"
    assert "hires fix only" in names.describe("Latent")


def test_target_size_is_a1111s_rounded_to_eight() -> None:
    assert names.target_size(100, 60, 2.5) == (248, 144)
    assert names.target_size(512, 512, 4) == (2048, 2048)
    assert names.target_size(3, 3, 1) == (8, 8)


@pytest.mark.parametrize("name", ["None", "Lanczos", "Nearest", "nearest"])
def test_builtin_upscalers_give_the_size_asked_for(name: str) -> None:
    image = _noise(100, 60)
    assert upscale.upscale_image(image, name, 2.5).size == (248, 144)
    assert upscale.upscale_image(image, name, size=(150, 97)).size == (150, 97)


def test_nearest_repeats_pixels_and_lanczos_does_not() -> None:
    image = _noise(16, 16)
    near = np.asarray(upscale.upscale_image(image, "Nearest", 2))
    assert (near[::2, ::2] == np.asarray(image)).all()
    assert (near[1::2, 1::2] == near[::2, ::2]).all()
    lanczos = np.asarray(upscale.upscale_image(image, "Lanczos", 2))
    assert not (lanczos[1::2, 1::2] == lanczos[::2, ::2]).all()


def test_alpha_is_kept() -> None:
    image = _noise(32, 24).convert("RGBA")
    image.putalpha(128)
    out = upscale.upscale_image(image, "Lanczos", 2)
    assert out.mode == "RGBA" and out.size == (64, 48)
    assert np.asarray(out)[..., 3].min() >= 127


@pytest.mark.parametrize("scale", [0, 0.5, 100, float("nan")])
def test_a_factor_outside_one_to_eight_is_refused(scale: float) -> None:
    with pytest.raises(RequestError) as err:
        upscale.upscale_image(_noise(16, 16), "Lanczos", scale)
    assert "outside 1 to 8" in str(err.value)


def test_a_result_above_the_pixel_limit_is_refused_before_any_work() -> None:
    with pytest.raises(RequestError) as err:
        upscale.upscale_image(Image.new("RGB", (4000, 3000)), "Lanczos", 4)
    assert "16000x12000" in str(err.value) and "at most" in str(err.value)


def test_latent_modes_are_for_the_hires_fix_only() -> None:
    with pytest.raises(RequestError) as err:
        upscale.upscale_image(_noise(16, 16), "Latent (bicubic)", 2)
    assert "hires fix only" in str(err.value)


# ---------------------------------------------------------------------------- model files
@pytest.mark.parametrize("kind,suffix,scale", FILES)
def test_model_files_load_with_architecture_and_scale_detected(folder: Path, kind: str,
                                                               suffix: str, scale: int) -> None:
    name = f"{kind}-x{scale}"
    image = _noise(40, 24)
    out = upscale.upscale_image(image, name + suffix, scale, dirs=[str(folder)])
    loaded = upscale.loaded_upscaler()
    assert loaded is not None and loaded.architecture == ARCH[kind] and loaded.scale == scale
    assert loaded.dtype == torch.float32 and loaded.device.type == "cpu"
    assert out.size == (40 * scale, 24 * scale)
    assert np.asarray(out).std() > 5  # a real image came out, not a flat clamp


def test_listing_and_names(folder: Path) -> None:
    listed = upscale.list_upscalers([str(folder)])
    assert listed[:3] == ["None", "Lanczos", "Nearest"]
    assert "esrgan-x4" in listed and "sub/nested-esrgan" in listed
    assert upscale.resolve_upscaler("sub/nested-esrgan", [str(folder)]).name == "nested-esrgan.pth"
    assert upscale.resolve_upscaler("NESTED-ESRGAN", [str(folder)]).name == "nested-esrgan.pth"
    assert upscale.resolve_upscaler("compact-x2.pth", [str(folder)]).suffix == ".pth"


def test_esrgan_old_and_new_key_layouts_are_the_same_model(tmp_path: Path) -> None:
    old = build_upscaler(tmp_path / "old.pth", "esrgan", seed=3)
    new = build_upscaler(tmp_path / "new.safetensors", "esrgan-new", seed=3)
    new_keys = set(torch.load(old, weights_only=True)) ^ set(
        __import__("safetensors.torch", fromlist=["load_file"]).load_file(str(new)))
    assert "conv_first.weight" in new_keys and "model.0.weight" in new_keys
    image = _noise(24, 24)
    a = upscale.upscale_image(image, "old", 4, dirs=[str(tmp_path)])
    b = upscale.upscale_image(image, "new", 4, dirs=[str(tmp_path)])
    assert np.array_equal(np.asarray(a), np.asarray(b))


def test_eight_times_with_a_four_times_model_runs_it_twice(folder: Path) -> None:
    seen: list[tuple[int, int]] = []
    out = upscale.upscale_image(_noise(20, 12), "esrgan-x4", 8, dirs=[str(folder)],
                                on_progress=lambda done, total: seen.append((done, total)))
    assert out.size == (160, 96)
    assert upscale.planned_passes(20, 12, (160, 96), 4, 8) == 2
    assert upscale.planned_passes(20, 12, (24, 16), 4, 1.3) == 1
    assert upscale.planned_passes(64, 64, (64, 64), 1, 1) == 1  # a 1x model, factor 1
    assert upscale.planned_passes(64, 64, (48, 48), 4, 0.75) == 0  # a hires target smaller
    assert seen[-1] == (2, 2)  # one tile per pass


def test_two_times_with_a_four_times_model_scales_down_to_the_size(folder: Path) -> None:
    assert upscale.upscale_image(_noise(40, 24), "esrgan-x4", 2,
                                 dirs=[str(folder)]).size == (80, 48)


def test_the_model_stays_loaded_and_is_replaced_by_another(folder: Path) -> None:
    dirs = [str(folder)]
    upscale.upscale_image(_noise(16, 16), "esrgan-x4", 4, dirs=dirs)
    first = upscale.loaded_upscaler()
    upscale.upscale_image(_noise(16, 16), "esrgan-x4", 4, dirs=dirs)
    assert upscale.loaded_upscaler() is first
    upscale.upscale_image(_noise(16, 16), "compact-x2", 2, dirs=dirs)
    second = upscale.loaded_upscaler()
    assert second is not first and second is not None and second.architecture == "Compact"
    upscale.unload_upscaler()
    assert upscale.loaded_upscaler() is None


class _Evil:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[object, tuple[str, str]]:
        return (open, (str(self.marker), "w"))


def test_a_hostile_pth_is_refused_as_a_checkpoint_is(tmp_path: Path) -> None:
    marker = tmp_path / "PWNED"
    torch.save({"model.0.weight": torch.zeros(2), "evil": _Evil(marker)}, tmp_path / "evil.pth")
    with pytest.raises(ModelError) as err:
        upscale.upscale_image(_noise(16, 16), "evil", 4, dirs=[str(tmp_path)])
    assert "pickle data that can run code" in str(err.value) and "evil.pth" in str(err.value)
    assert not marker.exists()


def test_a_safetensors_that_is_no_upscaler_is_refused_in_one_line(tmp_path: Path) -> None:
    save_file({"lora_unet_down.weight": torch.zeros(4, 4)}, str(tmp_path / "lora.safetensors"))
    with pytest.raises(ModelError) as err:
        upscale.upscale_image(_noise(16, 16), "lora", 4, dirs=[str(tmp_path)])
    message = str(err.value)
    assert "lora.safetensors is not an upscaler model" in message and "\n" not in message


def test_truncated_and_renamed_files_are_refused(tmp_path: Path) -> None:
    good = build_upscaler(tmp_path / "good.safetensors", "compact")
    (tmp_path / "cut.safetensors").write_bytes(good.read_bytes()[:200])
    (tmp_path / "text.pth").write_text("not a model")
    for name in ("cut", "text"):
        with pytest.raises(ModelError):
            upscale.upscale_image(_noise(16, 16), name, 4, dirs=[str(tmp_path)])


def test_unknown_names_and_paths_are_refused(folder: Path, tmp_path: Path) -> None:
    with pytest.raises(ModelError) as err:
        upscale.upscale_image(_noise(16, 16), "R-ESRGAN 4x+", 4, dirs=[str(folder)])
    assert "unknown upscaler 'R-ESRGAN 4x+'" in str(err.value)
    outside = build_upscaler(tmp_path / "outside.pth", "compact")
    for name in (str(outside), "../outside", "~/outside"):
        with pytest.raises(ModelError):
            upscale.resolve_upscaler(name, [str(folder)])
    # the person's own command line may give a path
    assert upscale.resolve_upscaler(str(outside), [str(folder)], allow_path=True) == outside


def test_a_symlink_out_of_the_folder_is_not_followed(folder: Path, tmp_path: Path) -> None:
    outside = build_upscaler(tmp_path / "elsewhere" / "x.pth", "compact")
    links = tmp_path / "links"
    links.mkdir()
    (links / "sneaky.pth").symlink_to(outside)
    with pytest.raises(ModelError):
        upscale.resolve_upscaler("sneaky", [str(links)])


# --------------------------------------------------------------------------------- tiling
def test_tile_starts_cover_the_side_with_the_overlap() -> None:
    assert upscale.tile_starts(100, 128, 16) == [0]
    assert upscale.tile_starts(120, 48, 12) == [0, 36, 72]
    for length, tile, overlap in ((257, 64, 8), (1000, 192, 24), (65, 64, 8)):
        starts = upscale.tile_starts(length, tile, overlap)
        assert starts[0] == 0 and starts[-1] + tile == length
        assert all(b - a <= tile - overlap for a, b in itertools.pairwise(starts))


def _exact_mask(length: int, tile: int, overlap: int, scale: int, margin: int) -> np.ndarray:
    """Output positions where every tile that covers them is at least ``margin`` input
    pixels from its inner borders (there a tile sees what the whole image sees)."""
    starts = upscale.tile_starts(length, tile, overlap)
    ok = np.ones(length * scale, dtype=bool)
    pos = (np.arange(length * scale) + 0.5) / scale
    for i, s in enumerate(starts):
        inside = (pos >= s) & (pos < s + tile)
        lo = s + margin if i > 0 else -np.inf
        hi = s + tile - margin if i + 1 < len(starts) else np.inf
        ok &= ~inside | ((pos >= lo) & (pos < hi))
    return ok


def _tilings(folder: Path, size: tuple[int, int], seed: int,
             *tilings: tuple[int, int]) -> list[torch.Tensor]:
    """The tiny ESRGAN's output for a noise image, untiled then with each (tile, overlap)."""
    loaded = upscale.load_upscaler(folder / "esrgan-x4.pth")
    image = upscale._to_tensor(_noise(*size, seed=seed))

    def run(part: torch.Tensor) -> torch.Tensor:
        return loaded.descriptor(part)

    return [upscale.upscale_tensor_tiled(run, image, 4, tile, overlap)
            for tile, overlap in ((512, 0), *tilings)]


def test_tiled_and_untiled_agree_away_from_seams_and_closely_everywhere(folder: Path) -> None:
    whole, tiled = _tilings(folder, (120, 104), 5, (48, 12))
    assert tiled.shape == whole.shape == (1, 3, 416, 480)
    diff = (tiled - whole).abs()[0].max(dim=0).values.numpy()
    # tiny ESRGAN: 18 stacked 3x3 convolutions at the input size -> a 18 px receptive radius
    mask = _exact_mask(104, 48, 12, 4, 18)[:, None] & _exact_mask(120, 48, 12, 4, 18)[None, :]
    assert mask.mean() > 0.2
    assert diff[mask].max() < 1e-5
    # near the seams the feathered blend stays close to the untiled result
    assert diff.mean() < 0.01 and diff.max() < 0.25


def test_blending_hides_seams_compared_with_butting_tiles(folder: Path) -> None:
    whole, butted, blended = _tilings(folder, (96, 96), 2, (32, 0), (40, 8))
    assert (blended - whole).abs().mean() < (butted - whole).abs().mean()


def test_progress_per_tile_and_cancel_between_tiles(folder: Path) -> None:
    seen: list[tuple[int, int]] = []
    upscale.upscale_image(_noise(100, 70), "compact-x2", 2, dirs=[str(folder)], tile=32,
                          on_progress=lambda d, t: seen.append((d, t)))
    total = upscale.tile_count(100, 70, 32, memory.upscale_tile_overlap(32))
    assert total > 4 and seen[0] == (0, total) and seen[-1] == (total, total)
    assert [d for d, _ in seen] == list(range(total + 1))
    token = CancelToken()
    done: list[int] = []

    def stop_after_two(d: int, t: int) -> None:
        done.append(d)
        if d == 2:
            token.cancel()

    with pytest.raises(CancelledError):
        upscale.upscale_image(_noise(100, 70), "compact-x2", 2, dirs=[str(folder)], tile=32,
                              on_progress=stop_after_two, cancel=token)
    assert max(done) == 2


# ------------------------------------------------------------------ torchvision stand-in
@pytest.mark.skipif(torchvision_works(), reason="a working torchvision is installed here")
def test_spandrel_imports_without_torchvision_and_refuses_its_models() -> None:
    spandrel = import_spandrel()
    assert using_standin()
    assert "torchvision" not in sys.modules  # taken out again after spandrel's import
    assert importlib.util.find_spec("torchvision") is None  # transformers still hears "no"
    lama = sys.modules["spandrel.architectures.LaMa.__arch.LaMa"]
    with pytest.raises(ModelError) as err:
        lama.rotate(torch.zeros(1, 1, 2, 2), 0.0)
    assert "needs torchvision" in str(err.value)
    assert spandrel.MAIN_REGISTRY.get("LaMa") is not None


# ------------------------------------------------------------------------ memory policy
@pytest.mark.parametrize("kind,free_gib,scale,heavy,side,expected", [
    ("cuda", 24, 4, False, 4096, 1024),
    ("cuda", 4, 4, False, 4096, 512),
    ("cuda", 4, 4, True, 4096, 256),  # transformer models need more per pixel
    ("cuda", 1, 4, False, 4096, 256),
    ("cuda", 0.2, 4, False, 4096, 96),
    ("cuda", 0.05, 4, False, 4096, 64),  # never below the smallest tile
    ("cpu", 64, 4, False, 4096, 512),  # the CPU caps the tile
    ("cuda", 24, 4, False, 300, 300),  # a small image is one tile
    ("cuda", 24, 2, False, 4096, 1024),
])
def test_tile_size_policy(kind: str, free_gib: float, scale: int, heavy: bool, side: int,
                          expected: int) -> None:
    tile = memory.choose_upscale_tile(kind, int(free_gib * memory.GIB), scale=scale,
                                      model_bytes=64 << 20, bytes_per_value=2 if kind == "cuda"
                                      else 4, image_side=side, heavy=heavy)
    assert tile == expected
    if expected < side and expected > memory.UPSCALE_TILE_SIDES[-1]:
        budget = int(free_gib * memory.GIB * 0.85) - (64 << 20)
        assert memory.estimate_upscale_tile_bytes(expected, scale, 2, heavy) <= budget


def test_overlap_grows_with_the_tile() -> None:
    assert memory.upscale_tile_overlap(64) == 8
    assert memory.upscale_tile_overlap(192) == 24
    assert memory.upscale_tile_overlap(1024) == 32


# ----------------------------------------------------------------- dtype, the engine's call
class _Descriptor:
    def __init__(self, half: bool, bf16: bool) -> None:
        self.supports_half, self.supports_bfloat16 = half, bf16


@pytest.mark.parametrize("device,half,bf16,wanted,expected", [
    ("cpu", True, True, None, torch.float32),  # fp32 on the CPU, always
    ("cpu", True, True, torch.float16, torch.float32),
    ("cuda", True, True, None, torch.float16),  # fp16 on CUDA where the architecture can
    ("cuda", False, True, None, torch.bfloat16),
    ("cuda", False, False, None, torch.float32),
    ("cuda", True, True, torch.float32, torch.float32),  # precision fp32 asked for
    ("cuda", True, True, torch.bfloat16, torch.bfloat16),
    ("cuda", False, False, torch.float16, torch.float32),  # asked, not supported
])
def test_dtype_follows_the_device_and_what_the_architecture_supports(
        device: str, half: bool, bf16: bool, wanted: torch.dtype | None,
        expected: torch.dtype) -> None:
    assert upscale._pick_dtype(_Descriptor(half, bf16), torch.device(device),
                               wanted) == expected


def test_the_engine_upscales_a_file_with_its_settings_folders(folder: Path,
                                                              tmp_path: Path) -> None:
    from sdstudio.core.settings import EngineSettings
    from sdstudio.engine import Engine
    from sdstudio.storage.png import read_texts

    source = tmp_path / "in.png"
    _noise(40, 32).save(source)
    engine = Engine(EngineSettings(device="cpu", upscaler_dirs=(str(folder),)))
    seen: list[tuple[int, int]] = []
    saved = engine.upscale_file(source, upscaler="compact-x2", scale=2,
                                out_dir=tmp_path / "out",
                                on_progress=lambda d, t: seen.append((d, t)))
    assert saved == tmp_path / "out" / "in-2x.png" and seen[-1] == (1, 1)
    with Image.open(saved) as im:
        assert im.size == (80, 64)
    assert read_texts(saved)[0] == {
        "extras": "Postprocess upscale by: 2, Postprocess upscaler: compact-x2"}


@pytest.mark.parametrize("wrap", [
    lambda s: {"params_ema": s, "params": s},  # Real-ESRGAN's own files
    lambda s: {"params": s},
    lambda s: {"model": {f"module.{k}": v for k, v in s.items()}},  # DataParallel training
    lambda s: {"state_dict": s, "epoch": 12, "optimizer": {"lr": 1e-4}},
])
def test_weights_nested_as_training_code_saves_them_load(tmp_path: Path, wrap: Any) -> None:
    plain = build_upscaler(tmp_path / "plain.pth", "esrgan-new", seed=4)
    state = torch.load(plain, weights_only=True)
    torch.save(wrap(state), tmp_path / "nested.pth")
    image = _noise(24, 16)
    a = upscale.upscale_image(image, "plain", 4, dirs=[str(tmp_path)])
    b = upscale.upscale_image(image, "nested", 4, dirs=[str(tmp_path)])
    assert np.array_equal(np.asarray(a), np.asarray(b))


def test_a_pth_without_a_dictionary_of_tensors_is_refused(tmp_path: Path) -> None:
    torch.save([torch.zeros(3)], tmp_path / "list.pth")
    torch.save({"params": {"lr": 0.1}}, tmp_path / "empty.pth")
    for name, words in (("list", "holds a list"), ("empty", "contains no tensors")):
        with pytest.raises(ModelError) as err:
            upscale.upscale_image(_noise(16, 16), name, 4, dirs=[str(tmp_path)])
        assert words in str(err.value)
