"""The hires fix's fields and arithmetic (pure Python): A1111's target resolution and hires
steps, validation in one line, infotext written and read as A1111 writes and reads it."""

from __future__ import annotations

import pytest

from sdstudio.core.errors import RequestError
from sdstudio.core.hires import (
    HiresTarget,
    describe,
    hires_target,
    largest_size,
    request_target,
    runs_hires,
    second_pass_steps,
)
from sdstudio.core.metadata import parse_infotext, to_infotext
from sdstudio.core.prompts import parse_prompt_list
from sdstudio.core.request import GenerationInfo, GenerationRequest


@pytest.mark.parametrize(
    ("size", "scale", "resize", "upscale_to", "truncate", "result"),
    [
        ((512, 512), 2.0, (0, 0), (1024, 1024), (0, 0), (1024, 1024)),
        ((512, 680), 2.0, (0, 0), (1024, 1360), (0, 0), (1024, 1360)),
        ((512, 512), 1.3, (0, 0), (665, 665), (0, 0), (664, 664)),  # A1111: latent 83
        ((704, 448), 2.0, (960, 576), (960, 610), (0, 4), (960, 576)),
        ((512, 768), 2.0, (1024, 0), (1024, 1536), (0, 0), (1024, 1536)),
        ((512, 768), 2.0, (0, 1024), (682, 1024), (0, 0), (680, 1024)),
        ((768, 768), 2.0, (760, 968), (968, 968), (26, 0), (760, 968)),
    ],
)
def test_target_resolution_is_a1111s(size: tuple[int, int], scale: float,
                                     resize: tuple[int, int], upscale_to: tuple[int, int],
                                     truncate: tuple[int, int], result: tuple[int, int]) -> None:
    target = hires_target(*size, scale, *resize)
    assert (target.upscale_w, target.upscale_h) == upscale_to
    assert (target.truncate_x, target.truncate_y) == truncate
    assert (target.width, target.height) == result


def test_the_crop_is_centred_as_a1111_slices() -> None:
    target = HiresTarget(968, 968, 26, 0)  # samples[:, :, 0:121, 13:108]
    assert target.crop_box() == (13, 0, 108, 121)
    odd = HiresTarget(160, 96, 3, 1)
    assert odd.crop_box() == (1, 0, 18, 11)
    assert (odd.latent_w, odd.latent_h) == (17, 11)


@pytest.mark.parametrize(
    ("steps", "hires_steps", "strength", "expected"),
    [
        (20, 0, 0.7, (28, 19)),  # int(20 / 0.7) = 28, the last 20 run
        (20, 10, 0.5, (20, 9)),
        (30, 20, 1.0, (20, 19)),  # min(strength, 0.999): int(20 / 0.999) = 20
        (4, 2, 0.7, (2, 1)),
    ],
)
def test_hires_steps_are_a1111s_setup_img2img_steps(steps: int, hires_steps: int,
                                                    strength: float,
                                                    expected: tuple[int, int]) -> None:
    assert second_pass_steps(steps, hires_steps, strength) == expected


def test_hires_runs_in_text_to_image_only() -> None:
    on = GenerationRequest(prompt="p", hires=True)
    assert runs_hires(on) and largest_size(on) == (1024, 1024)
    img2img = on.replace(init_image="/inputs/a.png")
    assert not runs_hires(img2img) and largest_size(img2img) == (512, 512)
    assert not runs_hires(GenerationRequest(prompt="p"))
    # what would be too large for the hires fix is not checked where it does not run
    img2img.replace(hires_scale=8.0).validated()
    assert "Hires" not in to_infotext(img2img.replace(hires_denoising=0.3))
    assert "Denoising strength: 0.75" in to_infotext(img2img)  # the image strength


@pytest.mark.parametrize(
    ("changes", "field", "message"),
    [
        (dict(hires_scale=0), "hires_scale", "hires upscale must be between 1 and 8, not 0"),
        (dict(hires_scale=100), "hires_scale",
         "hires upscale must be between 1 and 8, not 100"),
        (dict(width=1024, hires_scale=8.0), "hires_scale",
         "the hires target 8192x4096 is too large (at most 16 megapixels, 8192 pixels a "
         "side)"),
        (dict(hires_resize_x=8192, hires_resize_y=4096), "hires_resize_x",
         "the hires target 8192x4096 is too large"),
        (dict(hires_resize_x=16), "hires_resize_x", "the hires target 16x16 is too small"),
        (dict(hires_denoising=0.0), "hires_denoising",
         "hires denoising strength must be between 0.01 and 1, not 0"),
        (dict(hires_steps=-1), "hires_steps", "hires steps must be between 0 and 1000"),
        (dict(hires_sampler="DPM fast"), "hires_sampler", "unknown hires sampler 'DPM fast'"),
        (dict(hires_sampler="DPM++ 2M Karras", hires_schedule_type="Exponential"),
         "hires_sampler", "unknown hires sampler 'DPM++ 2M Karras'"),  # Karras or Exponential?
    ],
)
def test_bad_hires_values_are_one_clear_line(changes: dict[str, object], field: str,
                                             message: str) -> None:
    request = GenerationRequest(prompt="p", hires=True, **changes)  # type: ignore[arg-type]
    with pytest.raises(RequestError) as info:
        request.validated()
    assert info.value.field == field
    assert message in str(info.value) and "\n" not in str(info.value)


def test_an_old_combined_hires_sampler_is_split() -> None:
    r = GenerationRequest(prompt="p", hires=True, hires_sampler="DPM++ 2M Karras")
    assert (r.hires_sampler, r.hires_schedule_type) == ("DPM++ 2M", "Karras")
    r = GenerationRequest.from_dict({"prompt": "p", "hires_sampler": "",
                                     "hires_schedule_type": "none"})
    assert (r.hires_sampler, r.hires_schedule_type) == ("Use same sampler",
                                                         "Use same scheduler")


def test_infotext_is_written_as_a1111_writes_it() -> None:
    r = GenerationRequest(prompt="a cat", seed=1, steps=20, hires=True, hires_steps=10,
                          hires_denoising=0.45, hires_upscaler="R-ESRGAN 4x+", rng="device")
    text = to_infotext(r, GenerationInfo())
    line = text.splitlines()[-1]
    assert ("Size: 512x512, Denoising strength: 0.45, Hires upscaler: R-ESRGAN 4x+, "
            "Hires upscale: 2, Hires steps: 10, Version: ") in line
    for absent in ("Hires resize", "Hires sampler", "Hires schedule type", "Hires prompt",
                   "Hires negative prompt"):
        assert absent not in line
    resized = to_infotext(r.replace(hires_resize_x=1024, hires_resize_y=768,
                                    hires_sampler="DPM++ 2M", hires_schedule_type="Karras",
                                    hires_prompt="a cat, detailed", hires_negative_prompt="x"))
    assert "Hires resize: 1024x768" in resized and "Hires upscale:" not in resized
    assert ("Hires sampler: DPM++ 2M, Hires schedule type: Karras, "
            'Hires prompt: "a cat, detailed", Hires negative prompt: x') in resized
    # the same sampler and prompt as the first pass are not written (A1111's init)
    same = to_infotext(r.replace(hires_sampler="Euler a", hires_prompt="a cat"))
    assert "Hires sampler" not in same and "Hires prompt" not in same
    assert "Denoising strength" not in to_infotext(r.replace(hires=False))


def test_infotext_round_trip() -> None:
    r = GenerationRequest(prompt="a cat", negative_prompt="blurry", seed=3, hires=True,
                          hires_upscaler="Latent (bicubic antialiased)", hires_scale=1.5,
                          hires_steps=12, hires_denoising=0.55, hires_sampler="DPM++ SDE",
                          hires_schedule_type="Exponential", hires_prompt="a cat, sharp",
                          hires_negative_prompt="blurry, noisy").validated()
    parsed = parse_infotext(to_infotext(r, GenerationInfo()))
    assert parsed.request == r and parsed.extras == {"Version": parsed.params["Version"]}
    sized = r.replace(hires_scale=2.0, hires_resize_y=896)  # A1111 writes no factor then
    assert parse_infotext(to_infotext(sized)).request == sized


def test_real_a1111_hires_texts_parse_to_the_hires_fields() -> None:
    """Genuine texts of the corpus (data/infotexts, sources in SOURCES.json; every one is
    checked key by key in test_infotext_corpus): factor, resize, latent and model upscalers,
    an old "First pass size", a hires prompt."""
    from tests.core.test_infotext_corpus import DATA

    def read(name: str) -> GenerationRequest:
        return parse_infotext((DATA / name).read_text(encoding="utf-8")).request

    r = read("civitai-falkons.txt")  # v1.3.2, a model upscaler by a factor
    assert (r.hires, r.hires_scale, r.hires_steps, r.hires_upscaler, r.hires_denoising) == (
        True, 2.0, 20, "R-ESRGAN 4x+ Anime6B", 0.1)
    assert r.strength == 0.75  # the denoising strength is the second pass's
    r = read("civitai-ultra-cmodel-hires-resize.txt")  # a resize and a latent mode
    assert (r.hires_resize_x, r.hires_resize_y, r.hires_upscaler) == (
        760, 968, "Latent (antialiased)")
    assert request_target(r).upscale_w == 968 and (request_target(r).width, request_target(
        r).height) == (760, 968)
    r = read("civitai-wlop-first-pass.txt")  # 2022: First pass size
    assert r.hires and (r.hires_resize_x, r.hires_resize_y) == (776, 648)
    r = read("github-hires-prompt-list-v1.4.0.txt")  # 1.4.0's hires prompt (as A1111 reads it)
    assert r.hires and r.hires_prompt.startswith('["shoulder-level shot')
    assert (r.hires_steps, r.hires_denoising) == (15, 0.4)


def test_prompt_lists_take_a1111s_api_names() -> None:
    text = ('{"prompt": "a cat", "enable_hr": true, "hr_scale": 1.5, "hr_upscaler": '
            '"Latent (nearest)", "hr_second_pass_steps": 8, "hr_denoising_strength": 0.4, '
            '"hr_sampler_name": "Euler", "hr_scheduler": "Karras", "hr_prompt": "dog", '
            '"hr_resize_x": 0, "hr_resize_y": 0}')
    parsed = parse_prompt_list(text, format="jsonl")
    assert parsed.ok, parsed.error_report()
    r = parsed.items[0].request
    assert (r.hires, r.hires_scale, r.hires_upscaler, r.hires_steps) == (
        True, 1.5, "Latent (nearest)", 8)
    assert (r.hires_denoising, r.hires_sampler, r.hires_schedule_type, r.hires_prompt) == (
        0.4, "Euler", "Karras", "dog")
    assert request_target(r).width == 768
    assert describe(r).startswith("hires fix: 512x512 -> 768x768 with Latent (nearest)")
