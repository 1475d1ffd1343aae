"""The hires fix's arithmetic, as AUTOMATIC1111 does it. Pure Python (no torch, no Qt).

A hires request makes its image at ``width`` x ``height`` (the first pass), upscales it (the
latent, or the decoded pixels) and runs an image-to-image pass at the target size on the same
model. This module says what that target is and how many steps the second pass runs:

* :func:`hires_target` is A1111's ``StableDiffusionProcessingTxt2Img.
  calculate_target_resolution``: with no resize the sides times the factor (``int``); with one
  resize side the other follows the aspect; with both, the image is upscaled to cover the box
  and the latent is cropped to it (``truncate_x`` / ``truncate_y`` latent columns and rows,
  half on each side).
* :func:`second_pass_steps` is A1111's ``setup_img2img_steps`` with the steps given, as the
  hires pass calls it: ``int(steps / min(strength, 0.999))`` steps in the schedule of which
  the last ``steps`` run (``t_enc = steps - 1``), whatever A1111's "img2img_fix_steps".
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

USE_SAME_SAMPLER = "Use same sampler"
USE_SAME_SCHEDULER = "Use same scheduler"
LATENT_FACTOR = 8  # A1111's opt_f: pixels per latent cell


@dataclass(frozen=True)
class HiresTarget:
    """Where the second pass runs: the image is upscaled to ``upscale_w`` x ``upscale_h``
    (A1111's hr_upscale_to_x/y), then cropped by ``truncate_x`` / ``truncate_y`` latent cells
    to ``width`` x ``height``, the size of the result (whole latent cells)."""

    upscale_w: int
    upscale_h: int
    truncate_x: int = 0
    truncate_y: int = 0

    @property
    def latent_w(self) -> int:
        return self.upscale_w // LATENT_FACTOR - self.truncate_x

    @property
    def latent_h(self) -> int:
        return self.upscale_h // LATENT_FACTOR - self.truncate_y

    @property
    def width(self) -> int:
        return self.latent_w * LATENT_FACTOR

    @property
    def height(self) -> int:
        return self.latent_h * LATENT_FACTOR

    def crop_box(self) -> tuple[int, int, int, int]:
        """(left, top, right, bottom) in latent cells of the upscaled latent: A1111's
        ``samples[:, :, ty // 2 : h - (ty + 1) // 2, tx // 2 : w - (tx + 1) // 2]``."""
        w, h = self.upscale_w // LATENT_FACTOR, self.upscale_h // LATENT_FACTOR
        return (self.truncate_x // 2, self.truncate_y // 2,
                w - (self.truncate_x + 1) // 2, h - (self.truncate_y + 1) // 2)


def hires_target(width: int, height: int, scale: float, resize_x: int = 0,
                 resize_y: int = 0) -> HiresTarget:
    """A1111's target resolution for a first pass of ``width`` x ``height``."""
    if resize_x == 0 and resize_y == 0:
        return HiresTarget(int(width * scale), int(height * scale))
    if resize_y == 0:
        return HiresTarget(resize_x, resize_x * height // width)
    if resize_x == 0:
        return HiresTarget(resize_y * width // height, resize_y)
    if width / height < resize_x / resize_y:
        up_w, up_h = resize_x, resize_x * height // width
    else:
        up_w, up_h = resize_y * width // height, resize_y
    return HiresTarget(up_w, up_h, (up_w - resize_x) // LATENT_FACTOR,
                       (up_h - resize_y) // LATENT_FACTOR)


def request_target(request: Any) -> HiresTarget:
    """The target of a request's hires fields (whether or not hires is on)."""
    return hires_target(request.width, request.height, request.hires_scale,
                        request.hires_resize_x, request.hires_resize_y)


def runs_hires(request: Any) -> bool:
    """Whether the request runs a hires pass: asked for, and text to image (A1111 has the
    hires fix in txt2img only; an image-to-image or inpaint request ignores it)."""
    return bool(request.hires) and not request.init_image


def largest_size(request: Any) -> tuple[int, int]:
    """The largest image a request makes: the hires target when it runs one (for the
    memory policy), else its size."""
    if runs_hires(request):
        target = request_target(request)
        return max(target.width, request.width), max(target.height, request.height)
    return request.width, request.height


def second_pass_steps(steps: int, hires_steps: int, strength: float) -> tuple[int, int]:
    """(steps of the schedule, t_enc) of A1111's hires pass: ``hires_steps`` (0 = the first
    pass's ``steps``) run at the end of a schedule of ``int(n / min(strength, 0.999))``."""
    n = hires_steps or steps
    if strength <= 0:
        return 0, n - 1
    return int(n / min(strength, 0.999)), n - 1


def hires_sampler(request: Any) -> tuple[str, str]:
    """(sampler, schedule type) of the second pass: the overrides, or the first pass's."""
    sampler = request.sampler if request.hires_sampler == USE_SAME_SAMPLER \
        else request.hires_sampler
    schedule = request.schedule_type if request.hires_schedule_type == USE_SAME_SCHEDULER \
        else request.hires_schedule_type
    return sampler, schedule


def hires_prompts(request: Any) -> tuple[str, str]:
    """(prompt, negative prompt) of the second pass: "" = the first pass's, as in A1111."""
    return (request.hires_prompt or request.prompt,
            request.hires_negative_prompt or request.negative_prompt)


def describe(request: Any) -> str:
    """One line for the image's notes: what the hires pass did."""
    target = request_target(request)
    sampler, schedule = hires_sampler(request)
    total, t_enc = second_pass_steps(request.steps, request.hires_steps,
                                     request.hires_denoising)
    return (f"hires fix: {request.width}x{request.height} -> {target.width}x{target.height} "
            f"with {request.hires_upscaler}, then {sampler} ({schedule}) at denoising "
            f"{request.hires_denoising:g}: the last {t_enc + 1} of {total} steps")
