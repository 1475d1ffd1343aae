"""Variation seeds and seed resize as AUTOMATIC1111 makes them (modules/rng.py ImageRNG):
the reference noise is built here from numpy, independently of engine/latents.py."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
import torch

from sdstudio.core.request import GenerationRequest
from sdstudio.engine.latents import Variation, image_noise

SHAPE = (4, 8, 8)


def _noise(seed: int, shape: tuple[int, ...]) -> np.ndarray:
    return torch.randn(shape, generator=torch.Generator().manual_seed(seed)).numpy()


def _reference_slerp(t: float, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Per (channel, column): the angle between the two noises' columns over the rows, then
    the sin-weighted blend (A1111 normalises along dim 1 of the (C, H, W) noise)."""
    out = np.empty_like(a, dtype=np.float64)
    for c in range(a.shape[0]):
        for x in range(a.shape[2]):
            u, v = a[c, :, x].astype(np.float64), b[c, :, x].astype(np.float64)
            cos = float(np.dot(u, v) / (np.linalg.norm(u) * np.linalg.norm(v)))
            omega = np.arccos(cos)
            out[c, :, x] = (np.sin((1 - t) * omega) * u + np.sin(t * omega) * v) / np.sin(omega)
    return out


def test_no_variation_is_the_seeds_noise() -> None:
    gen = torch.Generator().manual_seed(5)
    got = image_noise(gen, SHAPE, 0, Variation())
    assert np.array_equal(got.numpy(), _noise(5, SHAPE))


@pytest.mark.parametrize("strength", [0.1, 0.5, 0.9])
def test_variation_is_a1111s_slerp_of_the_two_noises(strength: float) -> None:
    gen = torch.Generator().manual_seed(5)
    got = image_noise(gen, SHAPE, 1, Variation((40, 41), strength)).numpy()
    want = _reference_slerp(strength, _noise(5, SHAPE), _noise(41, SHAPE))
    assert np.abs(got - want).max() < 1e-5
    # the seed's generator drew exactly one noise: step noise continues as without variation
    plain = torch.Generator().manual_seed(5)
    torch.randn(SHAPE, generator=plain)
    assert torch.equal(torch.randn(3, generator=gen), torch.randn(3, generator=plain))


def test_strength_one_is_the_variation_seeds_noise() -> None:
    got = image_noise(torch.Generator().manual_seed(5), SHAPE, 0, Variation((9,), 1.0))
    assert np.abs(got.numpy() - _noise(9, SHAPE)).max() < 1e-5


@pytest.mark.parametrize(("from_w", "from_h"), [(128, 96), (32, 48), (64, 40)])
def test_seed_resize_pastes_the_other_sizes_noise_centred(from_w: int, from_h: int) -> None:
    got = image_noise(torch.Generator().manual_seed(3), SHAPE, 0,
                      Variation((), 0.0, from_w, from_h)).numpy()
    small = _noise(3, (4, from_h // 8, from_w // 8))
    want = _noise(3, SHAPE)  # the seed's full-size noise under the pasted part
    h, w = small.shape[1:]
    for y in range(SHAPE[1]):
        for x in range(SHAPE[2]):
            sy = y - (SHAPE[1] - h) // 2
            sx = x - (SHAPE[2] - w) // 2
            if 0 <= sy < h and 0 <= sx < w:
                want[:, y, x] = small[:, sy, sx]
    assert np.array_equal(got, want)


def test_seed_resize_from_the_same_size_changes_nothing() -> None:
    got = image_noise(torch.Generator().manual_seed(3), SHAPE, 0, Variation((), 0.0, 64, 64))
    assert np.array_equal(got.numpy(), _noise(3, SHAPE))


def test_seeds_stay_and_variation_seeds_count_up_as_a1111() -> None:
    r = GenerationRequest(prompt="p", seed=10, batch_size=3, variation_seed=70,
                          variation_strength=0.3)
    assert r.seeds(10) == [10, 10, 10]
    assert r.variation_seeds() == [70, 71, 72]
    assert GenerationRequest(prompt="p", batch_size=2).seeds(10) == [10, 11]
    random_first = GenerationRequest(prompt="p", variation_strength=0.3).variation_seeds()
    assert 0 <= random_first[0] <= 2**32 - 1
    one = r.image_request(10, 71)
    assert (one.seed, one.variation_seed, one.batch_size) == (10, 71, 1)
    assert GenerationRequest(prompt="p").image_request(4, 99).variation_seed == -1


def _pixels(engine: Any, request: GenerationRequest) -> np.ndarray:
    images = engine.generate(request)
    return np.asarray(images[0].image, dtype=np.int16)


def test_engine_variation_strength_one_equals_the_variation_seed(
        engines: Callable[[str], Any], make_request: Callable[..., GenerationRequest]) -> None:
    engine = engines("sd1")
    base = make_request(sampler="Euler", seed=1)  # not ancestral: only the first noise counts
    plain_2 = _pixels(engine, base.replace(seed=2))
    varied = engine.generate(base.replace(variation_seed=2, variation_strength=1.0))
    assert np.abs(np.asarray(varied[0].image, dtype=np.int16) - plain_2).max() <= 1
    assert varied[0].request.variation_seed == 2
    half = _pixels(engine, base.replace(variation_seed=2, variation_strength=0.5))
    assert np.abs(half - plain_2).max() > 2
    assert np.abs(half - _pixels(engine, base)).max() > 2


@pytest.mark.parametrize("mode", ["img2img", "inpaint"])
@pytest.mark.parametrize("strength", [0.0, 0.4])
def test_img2img_and_inpaint_noise_honours_the_variation_seed(
        mode: str, strength: float, engines: Callable[[str], Any],
        make_request: Callable[..., GenerationRequest], input_images: dict[str, Any],
        monkeypatch: pytest.MonkeyPatch) -> None:
    """The noise added to the init latents is A1111's ImageRNG.first (built here from numpy):
    the seed's first draw without a variation, slerped to the variation seed's with one."""
    from sdstudio.engine.ksampling import A1111Scheduler

    seen: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = []
    real = A1111Scheduler.add_noise

    def add_noise(self: A1111Scheduler, original: torch.Tensor, noise: torch.Tensor,
                  timesteps: torch.Tensor) -> torch.Tensor:
        out = real(self, original, noise, timesteps)
        if not seen:
            seen.append((original.clone(), out.clone(), self._points[0].clone()))
        return out

    monkeypatch.setattr(A1111Scheduler, "add_noise", add_noise)
    extra = {"mask": str(input_images["mask"])} if mode == "inpaint" else {}
    request = make_request(sampler="Euler", steps=4, seed=5, strength=0.75,
                           init_image=str(input_images["init"]), variation_seed=9,
                           variation_strength=strength, **extra)
    engines("sd1").generate(request)
    original, noised, sigma = seen[0]
    shape = tuple(original.shape[1:])
    expected = _noise(5, shape)
    if strength:
        expected = _reference_slerp(strength, expected, _noise(9, shape))
    added = ((noised - original) / sigma)[0].numpy()
    np.testing.assert_allclose(added, expected, atol=2e-5)
