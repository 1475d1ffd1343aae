"""Safe opening of image files given by a person (init images, masks, dropped or pasted files).

One loader for the window, the CLI and the engine: it refuses missing files, folders,
non-images, truncated or corrupt files and decompression bombs with one clear line
(ImageInputError), checking the size from the header before any pixel is decoded.
Pure PIL: no Qt, no torch.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path

from PIL import Image, ImageOps

from sdstudio.core.errors import ImageInputError

MAX_INPUT_PIXELS = 8192 * 8192  # larger images are refused from the header alone
MAX_INPUT_SIDE = 16384


def open_image(path: str | os.PathLike[str], what: str = "image") -> Image.Image:
    """Open, check and fully decode an image file, applying its EXIF orientation.
    ``what`` names the image in messages ("init image", "mask"...)."""
    p = Path(path)
    name = p.name or str(p)
    if not p.exists():
        raise ImageInputError(f"{what} {name}: file not found", str(p))
    if p.is_dir():
        raise ImageInputError(f"{what} {name} is a folder, not an image file", str(p))
    fmt = "image"
    try:
        with warnings.catch_warnings():
            # PIL's own guard (Image.MAX_IMAGE_PIXELS) stays on; its warning becomes an error.
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(p) as im:
                width, height = im.size
                fmt = im.format or fmt
                if width <= 0 or height <= 0:
                    raise ImageInputError(f"{what} {name} has no pixels", str(p))
                if width * height > MAX_INPUT_PIXELS or max(width, height) > MAX_INPUT_SIDE:
                    raise ImageInputError(
                        f"{what} {name} is too large ({width}x{height}; at most "
                        f"{MAX_INPUT_PIXELS // 1_000_000} megapixels)",
                        "refused from its header as a possible decompression bomb",
                    )
                im.load()  # decodes everything: truncated data raises here
                out = ImageOps.exif_transpose(im) or im
                return out if out is not im else im.copy()
    except ImageInputError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise ImageInputError(f"{what} {name} is too large to open safely (decompression bomb?)",
                              str(exc)) from None
    except Image.UnidentifiedImageError as exc:
        raise ImageInputError(f"{what} {name} is not an image file", str(exc)) from None
    except PermissionError as exc:
        raise ImageInputError(f"{what} {name}: permission denied", str(exc)) from None
    except (OSError, SyntaxError, ValueError, EOFError, MemoryError) as exc:
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise ImageInputError(f"{what} {name} is damaged or truncated ({fmt}: {reason})",
                              repr(exc)) from None
