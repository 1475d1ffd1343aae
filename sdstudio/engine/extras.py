"""Upscale an image file and save the result with its metadata kept (A1111's "Extras").

:func:`upscale_file` opens the image with the one safe loader (truncated files and
decompression bombs refused in one line), refuses a result above the pixel limit before any
work, upscales with :func:`sdstudio.engine.upscale.upscale_image` and writes a new PNG
atomically (never over a file) next to the others in ``out_dir``, named
``<source stem>-<scale>x.png``. Every text chunk of the source stays (its ``parameters``
infotext and ``sdstudio`` chunk: the image still says how it was made); the upscale is noted
in an ``extras`` chunk as AUTOMATIC1111's Extras tab writes it:
``Postprocess upscale by: 4, Postprocess upscaler: R-ESRGAN 4x+``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from PIL import Image

from sdstudio.core import upscalers as names
from sdstudio.core.cancel import CancelToken
from sdstudio.core.images import open_image
from sdstudio.core.metadata import format_number, quote
from sdstudio.storage.png import EXTRAS_KEY, read_texts, save_with_texts

if TYPE_CHECKING:
    import torch

UPSCALE_BY_KEY = "Postprocess upscale by"
UPSCALER_KEY = "Postprocess upscaler"


def extras_infotext(scale: float, upscaler: str) -> str:
    """A1111's Extras infotext for an upscale: ``Postprocess upscale by: 4, Postprocess
    upscaler: Lanczos``."""
    return f"{UPSCALE_BY_KEY}: {format_number(scale)}, {UPSCALER_KEY}: {quote(upscaler)}"


def upscaler_label(upscaler: str) -> str:
    """The name written for an upscaler: a built-in's name, a model file's stem."""
    name = names.normalise(upscaler)
    if names.kind_of(name) == "model":
        return Path(name.replace("\\", "/")).stem or name
    return name


def output_stem(source: Path, scale: float) -> str:
    return f"{source.stem}-{format_number(scale)}x"


def upscale_file(
    source: str | Path,
    *,
    upscaler: str,
    scale: float,
    out_dir: str | Path,
    dirs: Sequence[str] = (),
    device: torch.device | str | None = None,
    dtype: torch.dtype | None = None,
    tile: int | None = None,
    on_progress: Callable[[int, int], None] | None = None,
    cancel: CancelToken | None = None,
    allow_path: bool = False,
    upscale: Callable[..., Image.Image] | None = None,
) -> Path:
    """Upscale the image file ``source`` by ``scale`` with ``upscaler``; the saved PNG's path.
    Raises ImageInputError (the source), RequestError (factor, size), ModelError (upscaler),
    CancelledError, StorageError (the write). ``upscale`` replaces
    :func:`sdstudio.engine.upscale.upscale_image` (the fake engine's torch-free stand-in)."""
    if upscale is None:
        from sdstudio.engine.upscale import upscale_image

        upscale = upscale_image

    source = Path(source)
    with open_image(source, "image") as opened:
        image = opened.copy()
    names.target_size(image.width, image.height, scale)  # refuse before loading anything
    texts, _ = read_texts(source)
    texts = {k: v for k, v in texts.items() if k != EXTRAS_KEY}
    result = upscale(image, upscaler, scale, dirs=dirs, device=device, dtype=dtype,
                           tile=tile,
                           on_progress=on_progress, cancel=cancel, allow_path=allow_path)
    if cancel is not None:
        cancel.raise_if_cancelled()
    texts[EXTRAS_KEY] = extras_infotext(scale, upscaler_label(upscaler))
    return save_with_texts(result, texts, out_dir, output_stem(source, scale))
