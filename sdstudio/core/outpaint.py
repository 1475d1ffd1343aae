"""Outpainting and A1111's "masked content" modes, the parts without torch.

An outpaint extends the source image (fitted to the request's width x height, as for any
inpaint) by ``outpaint_left`` / ``outpaint_top`` / ``outpaint_right`` / ``outpaint_bottom``
pixels; the generation runs at the extended size and the new area is masked (united with any
painted mask). AUTOMATIC1111 outpaints only through scripts and writes no standard infotext
key for it, so SD Studio writes its own: ``Outpaint: "left 128, right 64"``.

Masked content (A1111's ``inpainting_fill``, the "Masked content" infotext key): what the
masked area starts from. ``fill``: the area filled with the surrounding colours, blurred;
``original``: the source as it is; ``latent noise``: the area filled, then its latents
replaced by the seed's noise; ``latent nothing``: the area filled, then its latents zero.

Pure Python: no Qt, no torch.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from sdstudio.core.errors import RequestError
from sdstudio.core.fields import INPAINT_ONLY, FieldSpec, InfotextKey

#: A1111's order (``inpainting_fill`` 0..3); the default is 1, "original".
MASKED_CONTENT: tuple[str, ...] = ("fill", "original", "latent noise", "latent nothing")
SIDES: tuple[str, ...] = ("left", "top", "right", "bottom")
FIELDS: tuple[str, ...] = tuple(f"outpaint_{side}" for side in SIDES)
STEP = 8  # every side is a multiple of this (the latent's pixel size)


def normalize_masked_content(value: str) -> str:
    """A masked content mode from A1111's index ("0".."3") or a name in any case."""
    text = value.strip().lower().replace("_", " ")
    if text.isdigit() and int(text) < len(MASKED_CONTENT):
        return MASKED_CONTENT[int(text)]
    return text


def sides_of(request: Any) -> dict[str, int]:
    """{"left": px, ...} of a request, every side."""
    return {side: int(getattr(request, f"outpaint_{side}")) for side in SIDES}


def outpaints(request: Any) -> bool:
    return any(sides_of(request).values())


def extended_size(request: Any) -> tuple[int, int]:
    """The size of the outpainted canvas: the request's size plus every side."""
    s = sides_of(request)
    return request.width + s["left"] + s["right"], request.height + s["top"] + s["bottom"]


def describe(sides: Mapping[str, int]) -> str:
    """"left 128, right 64" (the sides that extend, in SIDES order)."""
    return ", ".join(f"{side} {sides[side]}" for side in SIDES if sides.get(side))


def parse_sides(text: str, what: str = "--outpaint") -> dict[str, int]:
    """``left=128,top=0,right=64`` (CLI) or ``left 128, right 64`` (infotext) -> every side
    in pixels (missing sides 0). Raises RequestError with one line on anything else."""
    out = dict.fromkeys(SIDES, 0)
    parts = [p.strip() for p in str(text).split(",") if p.strip()]
    if not parts:
        raise RequestError("outpaint_left", f"{what}: give the sides to extend, e.g. "
                           "left=128,right=64")
    for part in parts:
        name, sep, value = part.partition("=")
        if not sep:
            name, _, value = part.partition(" ")
        name, value = name.strip().lower(), value.strip()
        if name not in out:
            raise RequestError("outpaint_left", f"{what}: unknown side {name!r} (use left, "
                               "top, right, bottom)")
        field = f"outpaint_{name}"
        try:
            px = int(value)
        except ValueError:
            raise RequestError(field, f"{what}: {name} {value!r} is not a whole number of "
                               "pixels") from None
        out[name] = px
    return out


def outpaint_option(text: str) -> dict[str, int]:
    """The CLI's ``--outpaint left=128,...``: the four fields. Asking to outpaint by 0 px
    on every side is refused (a mistake, not "no outpaint")."""
    sides = parse_sides(text)
    if not any(sides.values()):
        raise RequestError("outpaint_left", "--outpaint: every side is 0 px; extend at least "
                           "one side (e.g. left=128)")
    return {f"outpaint_{side}": px for side, px in sides.items()}


def size_problem(request: Any, max_pixels: int, max_side: int) -> str | None:
    """Why the outpainted size is not allowed, or None."""
    if not outpaints(request):
        return None
    if not request.init_image:
        return "outpainting needs an init image (the picture to extend)"
    width, height = extended_size(request)
    if width > max_side or height > max_side:
        return (f"outpainted size {width}x{height} is too large (at most {max_side} px a "
                "side)")
    if width * height > max_pixels:
        return (f"outpainted size {width}x{height} is too large (at most "
                f"{max_pixels // 1_000_000} megapixels)")
    return None


class OutpaintKey(InfotextKey):
    """``Outpaint: "left 128, right 64"``: the four outpaint fields (SD Studio's key)."""

    def __init__(self) -> None:
        super().__init__("Outpaint", modes=INPAINT_ONLY)

    def write(self, request: Any, spec: FieldSpec) -> Any:
        if request.mode not in self.modes or not outpaints(request):
            return None
        return describe(sides_of(request))

    def read(self, params: Mapping[str, str], extras: dict[str, str], spec: FieldSpec,
             fields: dict[str, Any]) -> None:
        if self.key not in params:
            return
        try:
            sides = parse_sides(params[self.key], "Outpaint")
        except RequestError as exc:
            raise ValueError(str(exc)) from None
        fields.update({f"outpaint_{side}": px for side, px in sides.items()})
