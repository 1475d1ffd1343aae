"""Init images and masks: safe loading, fitting to the request's size, inpaint geometry.

Pure PIL and numpy (no torch), so everything here runs before anything is allocated on the
device. Loading refuses non-images, truncated files, decompression bombs and images larger
than ``MAX_INPUT_PIXELS`` from the header alone, before decoding any pixel data.
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass

from PIL import Image, ImageFilter

from sdstudio.core import images as core_images
from sdstudio.core.errors import ImageInputError
from sdstudio.core.outpaint import outpaints
from sdstudio.core.request import GenerationRequest, Mode
from sdstudio.engine import outpaint

MAX_INPUT_PIXELS = core_images.MAX_INPUT_PIXELS


def load_image(path: str | os.PathLike[str], what: str = "init image",
               mode: str = "RGB") -> Image.Image:
    """Open, check and fully decode an image file; raise ImageInputError on any problem."""
    return core_images.open_image(path, what).convert(mode)


def fit_image(image: Image.Image, width: int, height: int, mode: str,
              resample: Image.Resampling = Image.Resampling.LANCZOS) -> Image.Image:
    """Fit ``image`` to width x height: "resize" (stretch), "crop" (cover, centre crop) or
    "fill" (fit inside, the empty bands filled by stretching the edge pixels, as A1111)."""
    if image.size == (width, height):
        return image.copy()
    if mode == "resize":
        return image.resize((width, height), resample)
    ratio = width / height
    src_ratio = image.width / image.height
    if mode == "crop":
        if ratio > src_ratio:
            w, h = width, max(1, round(width * image.height / image.width))
        else:
            w, h = max(1, round(height * image.width / image.height)), height
        resized = image.resize((w, h), resample)
        left, top = (w - width) // 2, (h - height) // 2
        return resized.crop((left, top, left + width, top + height))
    if mode == "fill":
        if ratio < src_ratio:
            w, h = width, max(1, round(width * image.height / image.width))
        else:
            w, h = max(1, round(height * image.width / image.height)), height
        resized = image.resize((w, h), resample)
        canvas = Image.new(image.mode, (width, height))
        left, top = (width - w) // 2, (height - h) // 2
        canvas.paste(resized, (left, top))
        if h < height:
            if top > 0:
                canvas.paste(resized.crop((0, 0, w, 1)).resize((w, top)), (0, 0))
            bottom = height - top - h
            if bottom > 0:
                canvas.paste(resized.crop((0, h - 1, w, h)).resize((w, bottom)), (0, top + h))
        if w < width:
            if left > 0:
                canvas.paste(resized.crop((0, 0, 1, h)).resize((left, h)), (0, 0))
            right = width - left - w
            if right > 0:
                canvas.paste(resized.crop((w - 1, 0, w, h)).resize((right, h)), (left + w, 0))
        return canvas
    raise ValueError(f"unknown resize mode {mode!r}")


def blur_mask(mask: Image.Image, radius: int) -> Image.Image:
    mask = mask.convert("L")
    return mask.filter(ImageFilter.GaussianBlur(radius)) if radius > 0 else mask


def crop_region(mask: Image.Image, padding: int) -> tuple[int, int, int, int] | None:
    """Bounding box (l, t, r, b) of the mask's non-zero pixels grown by ``padding``."""
    box = mask.getbbox()
    if box is None:
        return None
    left, top, right, bottom = box
    return (max(left - padding, 0), max(top - padding, 0),
            min(right + padding, mask.width), min(bottom + padding, mask.height))


def expand_to_ratio(box: tuple[int, int, int, int], width: int, height: int,
                    image_w: int, image_h: int) -> tuple[int, int, int, int]:
    """Grow ``box`` to the aspect ratio width:height, staying inside the image (A1111)."""
    x1, y1, x2, y2 = box
    ratio_crop = (x2 - x1) / (y2 - y1)
    ratio_target = width / height
    if ratio_crop > ratio_target:  # too wide: grow height
        desired_h = (x2 - x1) / ratio_target
        diff = int(desired_h - (y2 - y1))
        y1 -= diff // 2
        y2 += diff - diff // 2
        if y2 >= image_h:
            y1 -= y2 - image_h
            y2 = image_h
        if y1 < 0:
            y2 -= y1
            y1 = 0
        y2 = min(y2, image_h)
    else:  # too tall: grow width
        desired_w = (y2 - y1) * ratio_target
        diff = int(desired_w - (x2 - x1))
        x1 -= diff // 2
        x2 += diff - diff // 2
        if x2 >= image_w:
            x1 -= x2 - image_w
            x2 = image_w
        if x1 < 0:
            x2 -= x1
            x1 = 0
        x2 = min(x2, image_w)
    return x1, y1, x2, y2


@dataclass(frozen=True)
class InpaintJob:
    """What the pipeline sees (image, mask at width x height) and how to put it back."""

    image: Image.Image  # width x height, RGB
    mask: Image.Image  # width x height, L (blurred)
    source: Image.Image  # the full source image the result is composited onto
    full_mask: Image.Image  # blurred mask at the source's size (composite alpha)
    box: tuple[int, int, int, int] | None  # crop box in source pixels (only-masked)


def prepare_inpaint(init: Image.Image, mask: Image.Image, *, width: int, height: int,
                    resize_mode: str, blur: int, only_masked: bool, padding: int) -> InpaintJob:
    if mask.size != init.size:
        raise ImageInputError(
            f"the mask is {mask.width}x{mask.height} but the init image is "
            f"{init.width}x{init.height}; they must be the same size"
        )
    if only_masked:
        full_mask = blur_mask(mask, blur)
        region = crop_region(full_mask, padding)
        if region is not None:
            box = expand_to_ratio(region, width, height, init.width, init.height)
            image = init.crop(box).resize((width, height), Image.Resampling.LANCZOS)
            crop_mask = full_mask.crop(box).resize((width, height), Image.Resampling.LANCZOS)
            return InpaintJob(image, crop_mask, init, full_mask, box)
    source = fit_image(init, width, height, resize_mode)
    fitted_mask = fit_image(mask.convert("L"), width, height, resize_mode)
    blurred = blur_mask(fitted_mask, blur)
    return InpaintJob(source, blurred, source, blurred, None)


def composite(generated: Image.Image, job: InpaintJob) -> Image.Image:
    """Put the generated image back: where the blurred mask is 0 the result is exactly the
    source's pixels (uint8 alpha composite)."""
    if job.box is not None:
        x1, y1, x2, y2 = job.box
        base = job.source.copy()
        base.paste(generated.resize((x2 - x1, y2 - y1), Image.Resampling.LANCZOS), (x1, y1))
        generated = base
    elif generated.size != job.source.size:
        generated = generated.resize(job.source.size, Image.Resampling.LANCZOS)
    return Image.composite(generated.convert("RGB"), job.source.convert("RGB"), job.full_mask)


def request_inputs(request: GenerationRequest) -> tuple[Image.Image | None, InpaintJob | None]:
    """The init image fitted to the request's size (img2img), or the inpaint job (inpaint),
    read with the safe loader; (None, None) for text to image. The engine and the test fake
    both use this, so they refuse the same inputs."""
    mode = request.mode
    if mode is Mode.TXT2IMG:
        return None, None
    assert request.init_image is not None
    init = load_image(request.init_image, "init image", "RGB")
    if mode is Mode.IMG2IMG:
        return fit_image(init, request.width, request.height, request.resize_mode), None
    mask = load_image(request.mask, "mask", "L") if request.mask else None
    width, height, resize_mode = request.width, request.height, request.resize_mode
    if outpaints(request):  # the canvas extended, its new area masked (engine/outpaint.py)
        init, mask = outpaint.extend(init, mask, request, fit_image)
        if not request.inpaint_only_masked:
            width, height = init.size
    assert mask is not None
    job = prepare_inpaint(
        init, mask, width=width, height=height, resize_mode=resize_mode,
        blur=request.mask_blur, only_masked=request.inpaint_only_masked,
        padding=request.inpaint_padding)
    if request.masked_content != "original":  # A1111 fills for every mode but original
        job = dataclasses.replace(job, image=outpaint.fill_masked(job.image, job.mask))
    return job.image, job

