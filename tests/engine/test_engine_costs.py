"""The engine's per-image shortcuts give the same answers as the slow paths they replace."""

from __future__ import annotations

import copy
import types
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
import torch

from sdstudio.core.events import Preview
from sdstudio.engine.pipelines import module_dtype
from sdstudio.engine.runner import decode_latents


def test_module_dtype_matches_diffusers(engines: Callable[[str], Any]) -> None:
    pipe = engines("sd1")._model.pipes.base
    for module in (pipe.unet, pipe.vae, pipe.text_encoder):
        assert module_dtype(module) == module.dtype
    vae = copy.deepcopy(pipe.vae).to(dtype=torch.float16)
    assert module_dtype(vae) == vae.dtype == torch.float16


@pytest.mark.parametrize(("half", "name", "bad"), [(torch.float16, "fp16", float("nan")),
                                                    (torch.bfloat16, "bf16", float("inf"))])
def test_half_decode_to_nan_is_redone_in_fp32(engines: Callable[[str], Any], half: torch.dtype,
                                              name: str, bad: float) -> None:
    """An fp16 (CUDA) or bf16 (CPU with native bf16) decode that gives NaN or inf."""
    base = engines("sd1")._model.pipes.base
    vae = copy.deepcopy(base.vae).to(dtype=half)
    real_decode = vae.decode
    dtypes: list[torch.dtype] = []

    def decode(z: torch.Tensor, **kw: Any) -> Any:
        dtypes.append(z.dtype)
        out = real_decode(z, **kw)
        if z.dtype == half:  # what an fp16 SD VAE does on some latents
            out[0][0, 0, 0, 0] = bad
        return out

    vae.decode = decode  # type: ignore[method-assign]
    pipe = types.SimpleNamespace(vae=vae, image_processor=base.image_processor)
    latents = torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(0))
    images, notes = decode_latents(pipe, latents)
    assert dtypes == [half, torch.float32]
    assert notes == [f"the {name} VAE decoded to NaN; decoded again in fp32"]
    assert vae.dtype == half  # put back after the fp32 retry
    # the retry's pixels are those of an fp32 decode (of the same half-rounded weights)
    ref_vae = copy.deepcopy(base.vae).to(dtype=half).to(dtype=torch.float32)
    ref_pipe = types.SimpleNamespace(vae=ref_vae, image_processor=base.image_processor)
    ref, ref_notes = decode_latents(ref_pipe, latents)
    assert ref_notes == []
    assert np.array_equal(np.asarray(images[0]), np.asarray(ref[0]))


def test_finite_fp16_decode_is_not_redone(engines: Callable[[str], Any]) -> None:
    base = engines("sd1")._model.pipes.base
    vae = copy.deepcopy(base.vae).to(dtype=torch.float16)
    real_decode = vae.decode
    calls: list[torch.dtype] = []

    def decode(z: torch.Tensor, **kw: Any) -> Any:
        calls.append(z.dtype)
        return real_decode(z, **kw)

    vae.decode = decode  # type: ignore[method-assign]
    pipe = types.SimpleNamespace(vae=vae, image_processor=base.image_processor)
    images, notes = decode_latents(pipe, torch.randn(1, 4, 8, 8))
    assert calls == [torch.float16] and notes == [] and images[0].size == (64, 64)


def test_no_previews_are_built_when_they_are_off(engines: Callable[[str], Any],
                                                 make_request: Callable[..., Any],
                                                 monkeypatch: Any) -> None:
    """preview_every=0 (the CLI and the batch runner) never runs the latent -> RGB map."""
    import sdstudio.engine.latents as runner  # where the step callback builds previews

    eng = engines("sd1")
    old = eng.settings
    built = 0
    real = runner.latents_to_rgb

    def counting(*args: Any, **kw: Any) -> Any:
        nonlocal built
        built += 1
        return real(*args, **kw)

    monkeypatch.setattr(runner, "latents_to_rgb", counting)
    eng.configure(old.replace(preview_every=0))
    try:
        events: list[object] = []
        eng.generate(make_request(steps=3), events.append)
    finally:
        eng.configure(old)
    assert built == 0 and not [e for e in events if isinstance(e, Preview)]


def test_scheduler_is_kept_between_runs(engines: Callable[[str], Any],
                                        make_request: Callable[..., Any]) -> None:
    """The per-sampler scheduler is set on the pipeline once, and runs stay reproducible."""
    eng = engines("sd1")
    first = eng.generate(make_request(sampler="Euler a"))[0].image
    pipe = eng._model.pipes.base
    scheduler = pipe.scheduler
    second = eng.generate(make_request(sampler="Euler a"))[0].image
    assert pipe.scheduler is scheduler
    assert np.array_equal(np.asarray(first), np.asarray(second))
    eng.generate(make_request(sampler="DDIM", steps=2))
    assert eng._model.pipes.base.scheduler is not scheduler
    third = eng.generate(make_request(sampler="Euler a"))[0].image
    assert np.array_equal(np.asarray(first), np.asarray(third))
