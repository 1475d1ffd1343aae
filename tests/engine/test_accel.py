"""The speed paths (engine/accel.py): the decisions as a table, and each path run for real on
the tiny models on the CPU (fused QKV projections with LoRAs, FP8 weight storage,
channels_last) or through stand-ins where it needs CUDA (the engine's choice for a CUDA
device of a given compute capability, torch.compile's arguments and cache folder)."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from sdstudio.core import paths
from sdstudio.core.request import GenerationRequest
from sdstudio.core.settings import EngineSettings
from sdstudio.engine import Engine, accel
from sdstudio.engine import device as devices
from tests.engine._ldm_fixtures import kohya_lora


def _plan(kind: str = "cuda", capability: tuple[int, int] | None = (8, 6), arch: str = "sd1",
          mode: str = "auto", compile_: bool = False, available: bool = True
          ) -> accel.AccelPlan:
    return accel.decide_accel(kind, capability=capability, arch=arch, memory_mode=mode,
                              compile_setting=compile_, compile_available=available)


def test_decisions_per_device_and_setting() -> None:
    cuda = _plan()
    assert cuda.active == ("channels_last", "fuse_qkv")
    assert _plan("cpu").active == ("channels_last",) and _plan("mps", None).active == ()
    assert _plan(compile_=True).active == ("channels_last", "fuse_qkv", "compile")
    missing = _plan(compile_=True, available=False)
    assert "compile" not in missing.active and any("not available" in r
                                                   for r in missing.notes)
    cpu = _plan("cpu", None, compile_=True)
    assert cpu.active == ("channels_last",) and any("CUDA only" in r for r in cpu.notes)
    assert _plan(compile_=True).notes == () and cuda.notes == ()
    low = _plan(mode="low")
    assert low.active == ("channels_last",)  # the fused copy would cost VRAM
    # FP8 storage: low-memory SDXL on compute capability 8.9 and newer only
    assert _plan(capability=(8, 9), arch="sdxl", mode="low").fp8_storage
    assert _plan(capability=(9, 0), arch="sdxl-inpaint", mode="low").fp8_storage
    old = _plan(capability=(8, 6), arch="sdxl", mode="low")
    assert not old.fp8_storage and any("8.9" in r for r in old.reasons)
    assert not _plan(capability=(8, 9), arch="sdxl", mode="auto").fp8_storage
    assert not _plan(capability=(8, 9), arch="sd1", mode="low").fp8_storage
    assert not _plan("cpu", None, arch="sdxl", mode="low").fp8_storage


def _unet_out(unet: Any, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    gen = torch.Generator().manual_seed(0)
    cfg = unet.config
    x = torch.randn(2, cfg.in_channels, 8, 8, generator=gen).to(dtype)
    ctx = torch.randn(2, 77, cfg.cross_attention_dim, generator=gen).to(dtype)
    with torch.no_grad():
        return unet(x, torch.tensor([500]), ctx).sample.float()


def _fresh_unet(tiny_models: dict[str, Path], kind: str = "sd1") -> Any:
    from diffusers import UNet2DConditionModel

    return UNet2DConditionModel.from_pretrained(tiny_models[kind] / "unet").eval()


def test_fused_projections_compute_the_same(tiny_models: dict[str, Path]) -> None:
    unet = _fresh_unet(tiny_models)
    before = _unet_out(unet)
    assert accel.fuse_qkv(unet) and accel.is_fused(unet)
    fused = _unet_out(unet)
    assert torch.allclose(fused, before, atol=1e-5)
    with accel.unfused(unet):
        assert not accel.is_fused(unet)
        assert torch.allclose(_unet_out(unet), before, atol=1e-5)
    assert accel.is_fused(unet)
    # processors replaced by an add-on (IP-Adapter's): no longer fused, left alone
    from diffusers.models.attention_processor import AttnProcessor2_0

    unet.set_attn_processor(AttnProcessor2_0())
    assert not accel.is_fused(unet)
    with accel.unfused(unet):
        assert isinstance(next(iter(unet.attn_processors.values())), AttnProcessor2_0)


def test_loras_apply_through_fused_projections(
        tiny_models: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        make_request: Callable[..., GenerationRequest]) -> None:
    """With fused QKV projections (as on CUDA), a LoRA changes the image as it does
    unfused, and dropping it gives the fused model's image back."""
    from diffusers import DiffusionPipeline

    pipe = DiffusionPipeline.from_pretrained(tiny_models["sd1"], local_files_only=True)
    save_file(kohya_lora(pipe, seed=1), str(tmp_path / "tiny.safetensors"))
    del pipe
    settings = EngineSettings(lora_dirs=(str(tmp_path),))

    def pixels(engine: Engine, prompt: str) -> np.ndarray:
        out = engine.generate(make_request(prompt=prompt, steps=2))[0]
        return np.asarray(out.image).astype(np.int16)

    plain = Engine(settings)
    try:
        ref_base, ref_lora = pixels(plain, "a cat"), pixels(plain, "a cat <lora:tiny:0.8>")
    finally:
        plain.unload()
    real = accel.decide_accel
    monkeypatch.setattr(accel, "decide_accel", lambda *a, **k: accel.AccelPlan(
        fuse_qkv=True, reasons=real(*a, **k).reasons))
    fused = Engine(settings)
    try:
        base = pixels(fused, "a cat")
        unet = fused._model.pipes.base.unet  # type: ignore[union-attr]
        assert accel.is_fused(unet) and fused._model.accel.fuse_qkv  # type: ignore[union-attr]
        with_lora = pixels(fused, "a cat <lora:tiny:0.8>")
        assert accel.is_fused(unet)  # fused again, from the LoRA's weights
        again = pixels(fused, "a cat")
    finally:
        fused.unload()
    assert np.abs(base - ref_base).max() <= 1
    assert np.abs(with_lora - base).max() > 10  # the LoRA acts through the fused matrices
    assert np.abs(with_lora - ref_lora).max() <= 1
    assert np.abs(again - base).max() <= 1


def test_fp8_storage_halves_the_unet_and_still_runs(tiny_models: dict[str, Path]) -> None:
    unet = _fresh_unet(tiny_models, "sdxl")
    ref = _unet_out_sdxl(unet)
    weights = sum(p.numel() * p.element_size() for p in unet.parameters())
    accel.apply_accel(unet, None, accel.AccelPlan(fp8_storage=True),
                      compute_dtype=torch.float32)
    stored = sum(p.numel() * p.element_size() for p in unet.parameters())
    assert any(p.dtype == torch.float8_e4m3fn for p in unet.parameters())
    assert stored < 0.4 * weights
    out = _unet_out_sdxl(unet)
    assert torch.isfinite(out).all()
    rel = ((out - ref).norm() / ref.norm()).item()
    assert rel < 0.1, rel  # e4m3 keeps 3 mantissa bits


def _unet_out_sdxl(unet: Any) -> torch.Tensor:
    gen = torch.Generator().manual_seed(0)
    cfg = unet.config
    x = torch.randn(1, cfg.in_channels, 8, 8, generator=gen)
    ctx = torch.randn(1, 77, cfg.cross_attention_dim, generator=gen)
    pooled = cfg.projection_class_embeddings_input_dim - 6 * cfg.addition_time_embed_dim
    added = {"text_embeds": torch.randn(1, pooled, generator=gen),
             "time_ids": torch.tensor([[64.0, 64.0, 0.0, 0.0, 64.0, 64.0]])}
    with torch.no_grad():
        return unet(x, torch.tensor([500]), ctx, added_cond_kwargs=added).sample.float()


def test_channels_last_keeps_the_result(tiny_models: dict[str, Path]) -> None:
    unet = _fresh_unet(tiny_models)
    before = _unet_out(unet)
    accel.apply_accel(unet, None, accel.AccelPlan(channels_last=True),
                      compute_dtype=torch.float32)
    conv = unet.conv_in.weight
    assert conv.is_contiguous(memory_format=torch.channels_last)
    assert torch.allclose(_unet_out(unet), before, atol=1e-5)


def test_compile_is_static_with_the_cache_in_sdstudios_folder(
        tiny_models: dict[str, Path], monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[dict[str, Any]] = []

    def fake_compile(fn: Any, **kwargs: Any) -> Any:
        calls.append(kwargs)

        def compiled(*a: Any, **k: Any) -> Any:
            return fn(*a, **k)
        return compiled

    monkeypatch.setattr(torch, "compile", fake_compile)
    monkeypatch.delenv("TORCHINDUCTOR_CACHE_DIR", raising=False)
    unet = _fresh_unet(tiny_models)
    before = _unet_out(unet)
    accel.compile_unet(unet)
    accel.compile_unet(unet)  # once
    assert calls == [{"dynamic": False}]
    assert os.environ["TORCHINDUCTOR_CACHE_DIR"] == str(accel.inductor_cache_dir())
    assert accel.inductor_cache_dir().is_dir()
    assert accel.inductor_cache_dir().is_relative_to(paths.cache_dir())
    assert torch.allclose(_unet_out(unet), before)  # still the UNet's own forward


def test_the_engine_takes_the_cuda_paths_on_a_cuda_device(
        tiny_models: dict[str, Path], monkeypatch: pytest.MonkeyPatch) -> None:
    """Engine._accelerate for a CUDA device of compute capability 8.9 (stand-ins for the
    device queries; the modules stay on the CPU): channels_last and fused projections by
    default; compile with the setting (torch.compile stood in for); FP8 storage for SDXL in
    low-memory mode."""
    from diffusers import DiffusionPipeline

    from sdstudio.engine.runner import _Loaded

    monkeypatch.setattr(accel, "cuda_capability", lambda device: (8, 9))
    monkeypatch.setattr(accel, "compile_available", lambda kind: kind == "cuda")
    compiled: list[Any] = []
    monkeypatch.setattr(accel, "compile_unet", lambda unet: compiled.append(unet))
    choice = devices.DeviceChoice(torch.device("cuda", 0), torch.float16)

    def accelerate(kind: str, settings: EngineSettings) -> tuple[Any, Any]:
        pipe = DiffusionPipeline.from_pretrained(tiny_models[kind], local_files_only=True)
        loaded = _Loaded(source=None, arch=kind, pipes=None, choice=choice,  # type: ignore
                         scheduler_config={}, model_bytes=0, key="", original_vae=pipe.vae)
        Engine(settings)._accelerate(loaded, pipe)
        return loaded, pipe

    loaded, pipe = accelerate("sd1", EngineSettings())
    assert loaded.accel.active == ("channels_last", "fuse_qkv") and not compiled
    assert accel.is_fused(pipe.unet)
    assert pipe.unet.conv_in.weight.is_contiguous(memory_format=torch.channels_last)
    loaded, pipe = accelerate("sd1", EngineSettings(compile_unet=True))
    assert "compile" in loaded.accel.active and compiled == [pipe.unet]
    loaded, pipe = accelerate("sdxl", EngineSettings(memory_mode="low"))
    assert loaded.accel.active == ("channels_last", "fp8_storage")
    assert any(p.dtype == torch.float8_e4m3fn for p in pipe.unet.parameters())


def test_compile_setting_from_the_cli_and_settings_file(tmp_path: Path) -> None:
    import argparse

    from sdstudio.cli.request_args import add_engine_arguments, engine_settings_from_args
    from sdstudio.core.settings import Settings

    parser = argparse.ArgumentParser()
    add_engine_arguments(parser)
    base = Settings()
    assert not engine_settings_from_args(parser.parse_args([]), base).compile_unet
    assert engine_settings_from_args(parser.parse_args(["--compile"]), base).compile_unet
    saved = Settings(engine=EngineSettings(compile_unet=True))
    assert Settings.from_dict(saved.to_dict()).engine.compile_unet
    bad = saved.to_dict()
    bad["engine"]["compile_unet"] = 1  # not a bool: the default
    assert not Settings.from_dict(bad).engine.compile_unet


def test_a_compile_change_reloads_the_model(engines: Callable[[str], Any],
                                            tiny_models: dict[str, Path]) -> None:
    engine = Engine()
    engine.load(str(tiny_models["sd1"]))
    try:
        engine.configure(engine.settings.replace(compile_unet=True))
        assert engine._model is not None and engine._model.key == "<reload>"
    finally:
        engine.unload()
