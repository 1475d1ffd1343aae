"""core.outpaint and the request fields: outpaint sides, masked content, validation messages,
the CLI's combined option, infotext written and read back."""

from __future__ import annotations

import pytest

from sdstudio.core.errors import RequestError
from sdstudio.core.metadata import parse_infotext, to_infotext
from sdstudio.core.outpaint import (
    MASKED_CONTENT,
    describe,
    extended_size,
    outpaint_option,
    parse_sides,
)
from sdstudio.core.request import MAX_PIXELS, GenerationRequest, Mode, request_spec

BASE = GenerationRequest(prompt="a cat", init_image="/tmp/init.png", width=512, height=512)


def test_outpaint_makes_an_inpaint_at_the_extended_size() -> None:
    request = BASE.replace(outpaint_left=128, outpaint_bottom=64)
    assert request.validated().mode is Mode.INPAINT  # no painted mask needed
    assert extended_size(request) == (640, 576)
    assert BASE.mode is Mode.IMG2IMG
    assert GenerationRequest(prompt="x").mode is Mode.TXT2IMG


@pytest.mark.parametrize(("changes", "field", "message"), [
    ({"outpaint_left": 12}, "outpaint_left", "outpaint left 12 is not a multiple of 8 "
     "(use 8 or 16)"),
    ({"outpaint_top": -8}, "outpaint_top", "outpaint top must be between 0 and 8192, not -8"),
    ({"outpaint_right": 4096, "width": 4096, "height": 4096}, "outpaint_left",
     "outpainted size 8192x4096 is too large (at most 16 megapixels)"),
    ({"outpaint_bottom": 8, "height": 8192, "width": 64}, "outpaint_left",
     "outpainted size 64x8200 is too large (at most 8192 px a side)"),
    ({"outpaint_left": 64, "init_image": None}, "outpaint_left",
     "outpainting needs an init image (the picture to extend)"),
    ({"masked_content": "blur"}, "masked_content",
     "masked content must be one of fill, original, latent noise, latent nothing, not 'blur'"),
])
def test_bad_outpaints_are_one_clear_line(changes: dict[str, object], field: str,
                                          message: str) -> None:
    with pytest.raises(RequestError) as info:
        BASE.replace(**changes).validated()
    assert info.value.field == field
    assert str(info.value) == message
    assert "\n" not in str(info.value)


def test_pixel_limit_counts_the_extension() -> None:
    edge = BASE.replace(width=4096, height=4096)
    assert edge.width * edge.height == MAX_PIXELS
    edge.validated()
    with pytest.raises(RequestError, match="too large"):
        edge.replace(outpaint_top=8).validated()


def test_cli_option_and_its_refusals() -> None:
    assert outpaint_option("left=128,top=0,right=64,bottom=0") == {
        "outpaint_left": 128, "outpaint_top": 0, "outpaint_right": 64, "outpaint_bottom": 0}
    assert outpaint_option(" right = 8 ") == {
        "outpaint_left": 0, "outpaint_top": 0, "outpaint_right": 8, "outpaint_bottom": 0}
    for text, message in [
        ("left=0,top=0,right=0,bottom=0", "--outpaint: every side is 0 px; extend at least "
         "one side (e.g. left=128)"),
        ("", "--outpaint: give the sides to extend, e.g. left=128,right=64"),
        ("up=64", "--outpaint: unknown side 'up' (use left, top, right, bottom)"),
        ("left=wide", "--outpaint: left 'wide' is not a whole number of pixels"),
    ]:
        with pytest.raises(RequestError) as info:
            outpaint_option(text)
        assert str(info.value) == message


def test_masked_content_names_and_a1111_indices() -> None:
    spec = request_spec("masked_content")
    assert spec.default == "original" and spec.choices == MASKED_CONTENT
    assert "inpainting_fill" in spec.aliases  # A1111's API name
    for index, name in enumerate(MASKED_CONTENT):  # A1111 sends inpainting_fill as 0..3
        assert GenerationRequest.from_dict({"prompt": "x", "masked_content": index}
                                           ).masked_content == name
        assert spec.coerce(str(index)) == name
    assert spec.coerce("Latent Noise") == "latent noise"
    assert spec.coerce("latent_nothing") == "latent nothing"


def test_infotext_round_trip() -> None:
    request = BASE.replace(outpaint_left=128, outpaint_right=64, masked_content="fill",
                           seed=7)
    text = to_infotext(request)
    assert 'Masked content: fill, Outpaint: "left 128, right 64"' in text
    back = parse_infotext(text).request
    assert (back.outpaint_left, back.outpaint_top, back.outpaint_right,
            back.outpaint_bottom) == (128, 0, 64, 0)
    assert back.masked_content == "fill"
    # original (the default) is not written, as A1111; no outpaint, no key
    plain = to_infotext(BASE.replace(mask="/tmp/mask.png", seed=7))
    assert "Masked content" not in plain and "Outpaint" not in plain


@pytest.mark.parametrize("name", ["fill", "latent noise", "latent nothing"])
def test_a1111_masked_content_infotext_parses(name: str) -> None:
    text = ("a cat\nSteps: 20, Sampler: Euler a, CFG scale: 7, Seed: 1, Size: 512x512, "
            f"Denoising strength: 0.75, Mask blur: 4, Masked content: {name}")
    parsed = parse_infotext(text)
    assert parsed.request.masked_content == name
    assert "Masked content" not in parsed.extras


def test_sides_text() -> None:
    assert describe({"left": 128, "top": 0, "right": 64, "bottom": 0}) == "left 128, right 64"
    assert parse_sides("left 128, right 64") == {"left": 128, "top": 0, "right": 64,
                                                 "bottom": 0}
