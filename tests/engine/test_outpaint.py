"""Outpainting and A1111's masked content modes on the tiny models: the extended size, every
original pixel kept outside the blurred mask, only-masked with an outpaint, and each masked
content mode's init latents (the preparation functions against expected tensors, and what
the sampler is really given, end to end)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image, ImageFilter

from sdstudio.core.outpaint import MASKED_CONTENT
from sdstudio.engine import images as img
from sdstudio.engine.ksampling import A1111Scheduler
from sdstudio.engine.masked_content import init_latents, masked_init
from sdstudio.engine.outpaint import fill_masked
from sdstudio.engine.runner import latent_mask

SIDES = dict(outpaint_left=16, outpaint_top=24, outpaint_right=8, outpaint_bottom=0)


def _outside(size: tuple[int, int], place: tuple[int, int, int, int], blur: int,
             painted: Image.Image | None = None) -> np.ndarray:
    """Where the blurred outpaint mask is 0 (the new area, and the painted mask, masked)."""
    mask = Image.new("L", size, 255)
    inner = painted if painted is not None else Image.new("L", (place[2] - place[0],
                                                                place[3] - place[1]), 0)
    mask.paste(inner, place[:2])
    if blur:
        mask = mask.filter(ImageFilter.GaussianBlur(blur))
    return np.asarray(mask) == 0


@pytest.mark.parametrize("kind", ["sd1", "sd1-inpaint"])
@pytest.mark.parametrize("content", ["fill", "original"])
def test_outpaint_keeps_every_original_pixel(kind: str, content: str,
                                             engines: Callable[[str], Any],
                                             make_request: Callable[..., Any],
                                             input_images: dict[str, Path]) -> None:
    out = engines(kind).generate(make_request(
        kind, init_image=str(input_images["init"]), mask_blur=4, strength=1.0,
        masked_content=content, **SIDES))[0]
    assert out.image.size == (64 + 16 + 8, 64 + 24)
    assert out.request.outpaint_left == 16 and out.request.width == 64  # as asked
    res = np.asarray(out.image)
    canvas = np.zeros_like(res)
    canvas[24:88, 16:80] = np.asarray(Image.open(input_images["init"]).convert("RGB"))
    keep = _outside(out.image.size, (16, 24, 80, 88), 4)
    assert keep.sum() > 2000 and not keep[:, :16].any()  # the seam blurred into the source
    assert (res[keep] == canvas[keep]).all()
    assert (res[:, :12] != canvas[:, :12]).any()  # the new area generated


def test_outpaint_unites_the_painted_mask(engines: Callable[[str], Any],
                                          make_request: Callable[..., Any],
                                          input_images: dict[str, Path]) -> None:
    out = engines("sd1").generate(make_request(
        init_image=str(input_images["init"]), mask=str(input_images["mask"]), mask_blur=2,
        strength=1.0, outpaint_right=16))[0]
    assert out.image.size == (80, 64)
    painted = Image.open(input_images["mask"]).convert("L")
    keep = _outside((80, 64), (0, 0, 64, 64), 2, painted)
    src = np.asarray(Image.open(input_images["init"]).convert("RGB"))
    res = np.asarray(out.image)
    assert (res[:, :64][keep[:, :64]] == src[keep[:, :64]]).all()
    assert (res[28:36, 28:36] != src[28:36, 28:36]).any()  # the painted square repainted


def test_only_masked_with_an_outpaint(engines: Callable[[str], Any],
                                      make_request: Callable[..., Any],
                                      input_images: dict[str, Path]) -> None:
    """The outpainted band's box (with padding, grown to 64:64) is cut from the extended
    canvas, generated at 64x64 and pasted back; the rest stays the source's."""
    request = make_request(init_image=str(input_images["init"]), mask_blur=2, strength=1.0,
                           inpaint_only_masked=True, inpaint_padding=8, outpaint_right=64)
    _, job = img.request_inputs(request)
    # the band, its blurred seam (blur 2 reaches 5 px) and the padding: x from 64 - 5 - 8
    assert job is not None and job.image.size == (64, 64) and job.box == (51, 0, 128, 64)
    out = engines("sd1").generate(request)[0]
    assert out.image.size == (128, 64)
    keep = _outside((128, 64), (0, 0, 64, 64), 2)
    src = np.asarray(Image.open(input_images["init"]).convert("RGB"))
    res = np.asarray(out.image)
    assert keep[:, :50].all()
    assert (res[:, :64][keep[:, :64]] == src[keep[:, :64]]).all()


# ------------------------------------------------------------------ masked content: pieces
def test_fill_takes_the_surrounding_colours_and_keeps_the_rest() -> None:
    rng = np.random.RandomState(3)
    pixels = np.zeros((64, 64, 3), np.uint8)
    pixels[:, :] = (200, 40, 30)
    pixels[16:48, 16:48] = (rng.rand(32, 32, 3) * 255).astype(np.uint8)  # to be filled
    mask = Image.new("L", (64, 64), 0)
    mask.paste(255, (16, 16, 48, 48))
    filled = np.asarray(fill_masked(Image.fromarray(pixels), mask)).astype(int)
    assert np.abs(filled[16:48, 16:48] - (200, 40, 30)).max() <= 6  # only red reaches it
    assert (filled[:16] == pixels[:16]).all()
    blurred = mask.filter(ImageFilter.GaussianBlur(2))  # as the engine gives it
    filled = np.asarray(fill_masked(Image.fromarray(pixels), blurred)).astype(int)
    outside = np.asarray(blurred) == 0
    assert (filled[outside] == pixels[outside]).all()  # exactly as it was
    # the soft edge lets a little of the masked pixels in, as in A1111
    assert np.abs(filled[24:40, 24:40] - (200, 40, 30)).max() < 40


def test_latent_modes_against_expected_tensors() -> None:
    init = torch.arange(2 * 4 * 2 * 3, dtype=torch.float32).reshape(2, 4, 2, 3) + 1
    repaint = torch.tensor([[0.0, 1.0, 1.0], [0.0, 0.0, 1.0]]).expand(2, 4, 2, 3)
    noise = torch.full((2, 4, 2, 3), -5.0)
    nothing = masked_init(init, repaint, "latent nothing")
    expected = init.clone()
    expected[:, :, 0, 1:] = 0
    expected[:, :, 1, 2] = 0
    assert torch.equal(nothing, expected)
    noisy = masked_init(init, repaint, "latent noise", noise)
    expected[:, :, 0, 1:] = -5
    expected[:, :, 1, 2] = -5
    assert torch.equal(noisy, expected)
    for mode in ("fill", "original"):
        assert masked_init(init, repaint, mode, noise) is init
        assert init_latents(mode, repaint, noise) is None
    # the pipeline hands the classifier-free-guidance or repeated batch: mask follows it
    hook = init_latents("latent nothing", repaint[:1])
    assert hook is not None and torch.equal(hook(init), masked_init(init, repaint,
                                                                    "latent nothing"))


def test_the_latent_mask_is_a1111s_rounded_mask() -> None:
    mask = Image.new("L", (64, 64), 0)
    mask.paste(255, (0, 0, 32, 64))
    mask = mask.filter(ImageFilter.GaussianBlur(4))
    latent = latent_mask(mask, torch.zeros(1, 4, 8, 8))
    assert latent.shape == (1, 4, 8, 8)
    assert set(latent.unique().tolist()) <= {0.0, 1.0}
    assert latent[0, :, :, :3].eq(1).all() and latent[0, :, :, 5:].eq(0).all()


def test_request_inputs_fill_the_masked_area_for_every_mode_but_original(
        make_request: Callable[..., Any], input_images: dict[str, Path]) -> None:
    images = {}
    for content in MASKED_CONTENT:
        request = make_request(init_image=str(input_images["init"]),
                               mask=str(input_images["mask"]), masked_content=content)
        image, job = img.request_inputs(request)
        assert job is not None and image is job.image
        images[content] = np.asarray(image)
        assert np.array_equal(np.asarray(job.source),  # composited onto the real source
                              np.asarray(Image.open(input_images["init"]).convert("RGB")))
    source = np.asarray(Image.open(input_images["init"]).convert("RGB"))
    assert np.array_equal(images["original"], source)
    for content in ("fill", "latent noise", "latent nothing"):  # A1111: inpainting_fill != 1
        assert np.array_equal(images[content], images["fill"])
    assert not np.array_equal(images["fill"], source)


# --------------------------------------------------------------- masked content: end to end
@pytest.fixture
def noised_inits(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[torch.Tensor]]:
    """The init latents the sampler noises (after the masked content mode), per call."""
    seen: list[torch.Tensor] = []
    original = A1111Scheduler.add_noise

    def spy(self: A1111Scheduler, samples: torch.Tensor, noise: torch.Tensor,
            timesteps: torch.Tensor) -> torch.Tensor:
        if self._init_latents is not None:
            seen.append(self._init_latents(samples).detach().clone())
        else:
            seen.append(samples.detach().clone())
        return original(self, samples, noise, timesteps)

    monkeypatch.setattr(A1111Scheduler, "add_noise", spy)
    yield seen


@pytest.mark.parametrize("kind", ["sd1", "sd1-inpaint"])
def test_each_mode_end_to_end(kind: str, noised_inits: list[torch.Tensor],
                              engines: Callable[[str], Any], make_request: Callable[..., Any],
                              input_images: dict[str, Path]) -> None:
    inits: dict[str, torch.Tensor] = {}
    pictures: dict[str, np.ndarray] = {}
    for content in MASKED_CONTENT:
        noised_inits.clear()
        out = engines(kind).generate(make_request(
            kind, init_image=str(input_images["init"]), outpaint_left=32, mask_blur=0,
            strength=0.5, masked_content=content, seed=11))[0]
        inits[content] = noised_inits[0]
        pictures[content] = np.asarray(out.image)
    repaint = inits["original"].new_zeros(inits["original"].shape)
    repaint[..., :4] = 1  # the new 32 px on the left = 4 latent columns
    keep = repaint == 0
    assert inits["latent nothing"][repaint == 1].eq(0).all()
    seed_noise = torch.randn((1, 4, 8, 12), generator=torch.Generator("cpu").manual_seed(11))
    assert torch.allclose(inits["latent noise"][..., :4], seed_noise[..., :4])
    # both start from the filled image, so the kept latents agree with fill's
    for content in ("latent noise", "latent nothing"):
        assert torch.equal(inits[content][keep], inits["fill"][keep])
    assert not torch.equal(inits["fill"], inits["original"])
    assert inits["original"][..., :4].abs().sum() > 0  # black encoded: not zero latents
    # and each mode's picture differs in the new area, never outside it
    for content in ("fill", "latent noise", "latent nothing"):
        assert (pictures[content][:, :24] != pictures["original"][:, :24]).any(), content
        assert np.array_equal(pictures[content][:, 40:], pictures["original"][:, 40:])
