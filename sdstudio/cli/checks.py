"""Cheap checks of the input, done before the engine (and torch) is imported, so bad input
fails fast and nothing is written."""

from __future__ import annotations

from pathlib import Path

from sdstudio.cli.request_args import looks_like_path
from sdstudio.core.control import active_units
from sdstudio.core.errors import ImageInputError, ModelError, RequestError
from sdstudio.core.request import GenerationRequest


def check_model_arg(model: str, what: str = "model") -> None:
    """A model given as a path must exist (checked before torch is imported)."""
    if model and looks_like_path(model) and not Path(model).expanduser().exists():
        raise ModelError(f"{what} not found: {model}")


def check_image_file(path: str, label: str) -> tuple[int, int]:
    """Open and fully decode an input image without torch: refuses missing files, non-images,
    truncated files and decompression bombs. Returns (width, height)."""
    from sdstudio.core.images import open_image

    with open_image(path, label) as image:
        return image.size


def check_request_inputs(request: GenerationRequest) -> None:
    """Every cheap check before the engine (and torch) is loaded."""
    check_model_arg(request.model)
    check_model_arg(request.vae, "VAE")
    size = None
    if request.init_image:
        size = check_image_file(request.init_image, "init image")
    for i, unit in active_units(request.control_units):
        check_model_arg(unit.model, f"control unit {i + 1}'s model")
        if unit.image:
            check_image_file(unit.image, f"control unit {i + 1}'s image")
    if request.mask:
        mask_size = check_image_file(request.mask, "mask")
        if size is not None and mask_size != size:
            raise ImageInputError(
                f"the mask is {mask_size[0]}x{mask_size[1]} but the init image is "
                f"{size[0]}x{size[1]}; they must be the same size"
            )


def check_out_dir(out: Path) -> None:
    if out.exists() and not out.is_dir():
        raise RequestError("out", f"output folder {out} exists and is not a folder")
