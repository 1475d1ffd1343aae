"""Single-file checkpoints in the original LDM layout: architecture detection from tensor names
and shapes, offline loading, and pixel-identical images to the same weights as a folder."""

from __future__ import annotations

import json
import struct
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from sdstudio.core.errors import ModelError
from sdstudio.core.request import GenerationRequest
from sdstudio.core.settings import EngineSettings
from sdstudio.engine import Engine
from sdstudio.engine.convert import CONFIG_METADATA_KEY
from sdstudio.engine.single_file import (
    ArchInfo,
    configs_root,
    describe,
    detect_arch,
    load_single_file,
)
from tests.engine._ldm_fixtures import meta_ldm_shapes, write_single_file

KINDS = ("sd1", "sd1-inpaint", "sd2-v", "sdxl")
EXPECTED = {"sd1": ("sd1", "StableDiffusionPipeline"),
            "sd1-inpaint": ("sd1-inpaint", "StableDiffusionInpaintPipeline"),
            "sd2-v": ("sd2-v", "StableDiffusionPipeline"),
            "sdxl": ("sdxl", "StableDiffusionXLPipeline")}


@pytest.fixture(scope="module")
def single_files(tiny_models: dict[str, Path], tmp_path_factory: pytest.TempPathFactory
                 ) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("single-files")

    class _Lazy(dict):  # type: ignore[type-arg]
        def __missing__(self, kind: str) -> Path:
            self[kind] = write_single_file(tiny_models[kind], root / f"tiny-{kind}.safetensors")
            return self[kind]

    return _Lazy()


def _strip_config(src: Path, dest: Path) -> Path:
    """The same file without the embedded diffusers config (as a model site's file is)."""
    raw = src.read_bytes()
    (n,) = struct.unpack("<Q", raw[:8])
    header = json.loads(raw[8:8 + n])
    header["__metadata__"] = {"format": "pt"}
    new = json.dumps(header).encode()
    new += b" " * (-(8 + len(new)) % 8)
    dest.write_bytes(struct.pack("<Q", len(new)) + new + raw[8 + n:])
    return dest


def _image(pipe: object, kind: str) -> np.ndarray:
    kw: dict[str, object] = dict(prompt="a photo of a cat", num_inference_steps=1, height=64,
                                 width=64, output_type="np",
                                 generator=torch.Generator().manual_seed(3))
    if kind == "sd1-inpaint":
        kw.update(image=torch.zeros(1, 3, 64, 64), mask_image=torch.ones(1, 1, 64, 64))
    return pipe(**kw).images  # type: ignore[operator]


@pytest.mark.parametrize("kind", KINDS)
def test_single_file_loads_offline_and_matches_the_folder(
    kind: str, tiny_models: dict[str, Path], single_files: dict[str, Path]
) -> None:
    from diffusers import DiffusionPipeline

    ref = DiffusionPipeline.from_pretrained(tiny_models[kind], local_files_only=True)
    pipe = load_single_file(single_files[kind], device="cpu", dtype=torch.float32)
    label, cls = EXPECTED[kind]
    assert type(pipe).__name__ == cls
    assert pipe.sdstudio_arch.label == label
    for name, comp in ref.components.items():
        if isinstance(comp, torch.nn.Module):
            a, b = comp.state_dict(), pipe.components[name].state_dict()
            assert a.keys() == b.keys(), name
            assert all(torch.equal(a[k], b[k]) for k in a), name
    assert pipe.scheduler.config.prediction_type == ref.scheduler.config.prediction_type
    for p in (ref, pipe):
        p.set_progress_bar_config(disable=True)
    # Same weights, same computation; diffusers' folder loading memory-maps the weights, and a
    # misaligned mmap'd tensor can take another SIMD path (differences ~1e-7, see the Engine
    # test below for identical 8-bit pixels).
    np.testing.assert_allclose(_image(ref, kind), _image(pipe, kind), rtol=0, atol=1e-5)


@pytest.mark.parametrize("kind", ["sd1"])
def test_engine_gives_identical_pixels_for_file_and_folder(
    kind: str, tiny_models: dict[str, Path], single_files: dict[str, Path]
) -> None:
    engine = Engine(EngineSettings())
    images = []
    for model in (tiny_models[kind], single_files[kind]):
        req = GenerationRequest(prompt="a lighthouse", width=64, height=64, steps=2, seed=5,
                                model=str(model))
        out = engine.generate(req)
        images.append(np.asarray(out[0].image))
        assert out[0].info.model_arch == EXPECTED[kind][0]
    engine.unload()
    assert np.array_equal(images[0], images[1])


@pytest.mark.parametrize("config", sorted(p.name for p in configs_root().iterdir()))
def test_real_architectures_are_detected_from_names_and_shapes(config: str) -> None:
    shapes = meta_ldm_shapes(configs_root() / config)
    arch = detect_arch(shapes)
    if config in ("sd2-512", "sd2-768-v"):
        # same tensors: the prediction type is decided later (yaml, metadata or A1111's test)
        assert arch.family == "sd2" and arch.prediction is None
        v = config == "sd2-768-v"
        with_meta = detect_arch(shapes, {"modelspec.prediction_type": "v" if v else "epsilon"})
        assert with_meta.config_name == config
    else:
        assert arch.config_name == config
    from sdstudio.engine.single_file import check_fits

    check_fits(shapes, arch, configs_root() / config, config)  # real sizes fit the configs


def test_yaml_sibling_decides_v_prediction(tmp_path: Path) -> None:
    shapes = meta_ldm_shapes(configs_root() / "sd2-512")
    path = tmp_path / "model.safetensors"
    (tmp_path / "model.yaml").write_text(
        "model:\n  params:\n    parameterization: \"v\"\n    linear_start: 0.00085\n")
    arch = detect_arch(shapes, path=path)
    assert (arch.prediction, arch.prediction_source, arch.config_name) == (
        "v_prediction", "yaml", "sd2-768-v")
    (tmp_path / "model.yaml").write_text("model:\n  params:\n    linear_start: 0.00085\n")
    assert detect_arch(shapes, path=path).config_name == "sd2-512"


def test_file_name_is_not_used(tmp_path: Path, single_files: dict[str, Path]) -> None:
    misleading = tmp_path / "sdxl_base_1.0_inpainting_768-v.safetensors"
    misleading.write_bytes(single_files["sd1"].read_bytes())
    assert describe(misleading).label == "sd1"


def test_standard_configs_refuse_a_file_of_other_sizes(
    tmp_path: Path, tiny_models: dict[str, Path], single_files: dict[str, Path]
) -> None:
    stripped = _strip_config(single_files["sd1"], tmp_path / "custom.safetensors")
    with pytest.raises(ModelError, match="do not match the standard sd1 architecture"):
        load_single_file(stripped)
    # with its diffusers config given explicitly, it loads
    pipe = load_single_file(stripped, config=tiny_models["sd1"])
    assert pipe.sdstudio_config_source == "explicit"


def test_pickle_checkpoint_loads_through_the_safe_path(
    tmp_path: Path, single_files: dict[str, Path]
) -> None:
    from safetensors.torch import load_file

    state = load_file(str(single_files["sd1"]))
    ckpt = tmp_path / "model.ckpt"
    torch.save({"state_dict": state, "global_step": 10}, ckpt)
    with pytest.raises(ModelError, match="do not match"):  # no embedded config in a .ckpt
        load_single_file(ckpt)


@pytest.mark.parametrize("keys,message", [
    ({"lora_unet_down_blocks_0_attentions_0_proj_in.lora_down.weight": (4, 32)}, "LoRA"),
    ({"encoder.conv_in.weight": (128, 3, 3, 3), "decoder.conv_in.weight": (512, 4, 3, 3)},
     "VAE"),
    ({"emb_params": (2, 768)}, "embedding"),
    ({"double_blocks.0.img_attn.norm.key_norm.scale": (128,)}, "Flux"),
])
def test_not_a_checkpoint_gets_a_clear_message(
    tmp_path: Path, keys: dict[str, tuple[int, ...]], message: str
) -> None:
    path = tmp_path / "thing.safetensors"
    save_file({k: torch.zeros(s) for k, s in keys.items()}, str(path))
    with pytest.raises(ModelError, match=message) as err:
        load_single_file(path)
    assert "thing.safetensors" in str(err.value)


def test_unsupported_unet_input_channels(tmp_path: Path) -> None:
    shapes = meta_ldm_shapes(configs_root() / "sd15")
    shapes["model.diffusion_model.input_blocks.0.0.weight"] = (320, 8, 3, 3)
    with pytest.raises(ModelError, match="8 input channels"):
        detect_arch(shapes)


def test_embedded_config_key_present(single_files: dict[str, Path]) -> None:
    from sdstudio.engine.checkpoint import read_safetensors_header

    meta = read_safetensors_header(single_files["sd2-v"]).metadata
    data = json.loads(meta[CONFIG_METADATA_KEY])
    assert data["scheduler"]["prediction_type"] == "v_prediction"
    # CLIP-L and OpenCLIP share the vocabulary; the padding token makes the difference
    assert data["tokenizer"]["vocab_ref"] in ("clip-l", "clip-g")
    assert data["tokenizer"]["special_tokens_map.json"]["pad_token"] == "!"
    assert isinstance(describe(single_files["sd2-v"]), ArchInfo)
    assert describe(single_files["sd2-v"]).label == "sd2-v"
