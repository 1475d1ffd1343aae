"""Outpainting's canvas and the "fill" masked content, with PIL only (no torch).

``extend`` puts the source image (fitted to the request's size, as every inpaint fits it) on
a larger canvas and masks the new area, united with the painted mask. ``fill_masked`` is
AUTOMATIC1111's "fill" (``modules/masking.py``): the masked area takes the colours around
it, by compositing ever less blurred copies of the unmasked image over each other. The
engine's inpaint geometry (``engine/images.py``) then blurs the mask across the seam and
composites the result so that every pixel outside the blurred mask is the source's own.
"""

from __future__ import annotations

from typing import Any

from PIL import Image, ImageFilter, ImageOps

from sdstudio.core.errors import ImageInputError
from sdstudio.core.outpaint import extended_size, sides_of

# (blur radius, times composited), widest first, as A1111's masking.fill; the last pass
# (radius 0) puts the unmasked pixels themselves on top
_FILL_PASSES: tuple[tuple[int, int], ...] = ((256, 1), (64, 1), (16, 2), (4, 4), (2, 2), (0, 1))


def fill_masked(image: Image.Image, mask: Image.Image) -> Image.Image:
    """``image`` with its masked area (``mask`` L, 255 = masked) filled from the surrounding
    colours. Pixels where the mask is 0 keep their values exactly."""
    # the unmasked pixels with alpha = 255 - mask, premultiplied so that blurring spreads
    # colour only from where there is some
    keep = ImageOps.invert(mask.convert("L"))
    visible = Image.new("RGBa", image.size)
    visible.paste(image.convert("RGBA").convert("RGBa"), mask=keep)
    out = Image.new("RGBA", image.size)
    for radius, times in _FILL_PASSES:
        layer = visible.filter(ImageFilter.GaussianBlur(radius)).convert("RGBA")
        for _ in range(times):
            out.alpha_composite(layer)
    return out.convert("RGB")


def extend(init: Image.Image, mask: Image.Image | None, request: Any,
           fit: Any) -> tuple[Image.Image, Image.Image]:
    """The outpaint canvas and its mask at the extended size: ``init`` fitted (``fit``, the
    engine's fit_image) to the request's width x height and placed after the left and top
    sides; the new area black (as A1111's outpainting scripts start it; the masked content
    mode then prepares it) and masked, the painted mask (if any) kept where it was."""
    if mask is not None and mask.size != init.size:
        raise ImageInputError(
            f"the mask is {mask.width}x{mask.height} but the init image is "
            f"{init.width}x{init.height}; they must be the same size")
    width, height = request.width, request.height
    sides = sides_of(request)
    size = extended_size(request)
    place = (sides["left"], sides["top"])
    canvas = Image.new("RGB", size)
    canvas.paste(fit(init, width, height, request.resize_mode), place)
    new_mask = Image.new("L", size, 255)
    inner = (fit(mask.convert("L"), width, height, request.resize_mode) if mask is not None
             else Image.new("L", (width, height), 0))
    new_mask.paste(inner, place)
    return canvas, new_mask
