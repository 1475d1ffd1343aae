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

# How image files start: a file that starts so but that PIL cannot identify or decode is a
# damaged or truncated image of that format, not "not an image".
_SIGNATURES: tuple[tuple[bytes, str], ...] = (
    (b"\x89PNG\r\n\x1a\n", "PNG"),
    (b"\xff\xd8\xff", "JPEG"),
    (b"GIF87a", "GIF"),
    (b"GIF89a", "GIF"),
    (b"II*\x00", "TIFF"),
    (b"MM\x00*", "TIFF"),
)


def format_from_bytes(path: str | os.PathLike[str]) -> str | None:
    """The image format a file's first bytes announce, also when the file ends inside them
    (``"PNG"``, ``"JPEG"``, ``"GIF"``, ``"WEBP"``, ``"TIFF"``); None for anything else."""
    try:
        with open(path, "rb") as fh:
            head = fh.read(16)
    except OSError:
        return None
    if len(head) < 2:
        return None
    if head.startswith(b"RIFF") and (len(head) < 12 or head[8:12] == b"WEBP"):
        return "WEBP"
    for signature, fmt in _SIGNATURES:
        if head.startswith(signature) or signature.startswith(head):
            return fmt
    return None


def open_image(path: str | os.PathLike[str], what: str = "image") -> Image.Image:
    """Open, check and fully decode an image file, applying its EXIF orientation.
    ``what`` names the image in messages ("init image", "mask"...)."""
    p = Path(path)
    name = p.name or str(p)
    if not p.exists():
        raise ImageInputError(f"{what} {name}: file not found", str(p))
    if p.is_dir():
        raise ImageInputError(f"{what} {name} is a folder, not an image file", str(p))
    if not p.is_file():  # a FIFO, device or socket: opening it could block forever
        raise ImageInputError(f"{what} {name} is not a regular file", str(p))
    try:
        if p.stat().st_size == 0:
            raise ImageInputError(f"{what} {name} is empty (0 bytes)", str(p))
    except OSError:
        pass  # not readable: Image.open says why
    fmt = format_from_bytes(p) or "image"
    try:
        with warnings.catch_warnings():
            # PIL's own guard (Image.MAX_IMAGE_PIXELS) stays on; its warning becomes an error.
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(p) as im:
                width, height = im.size
                fmt = im.format or fmt
                if width <= 0 or height <= 0:
                    raise ImageInputError(f"{what} {name} has no pixels", str(p))
                if max(width, height) > MAX_INPUT_SIDE:
                    side = "wide" if width >= height else "tall"
                    raise ImageInputError(
                        f"{what} {name} is too large: {width}x{height} is "
                        f"{max(width, height)} pixels {side}, at most {MAX_INPUT_SIDE} per side",
                        "refused from its header as a possible decompression bomb",
                    )
                if width * height > MAX_INPUT_PIXELS:
                    raise ImageInputError(
                        f"{what} {name} is too large ({width}x{height} = "
                        f"{width * height:,} pixels; at most {MAX_INPUT_PIXELS:,})",
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
        if fmt != "image":  # it starts as an image file does: cut off in its header
            raise ImageInputError(f"{what} {name} is damaged or truncated ({fmt}: the file "
                                  "ends or breaks off in its header)", str(exc)) from None
        raise ImageInputError(f"{what} {name} is not an image file", str(exc)) from None
    except PermissionError as exc:
        raise ImageInputError(f"{what} {name}: permission denied", str(exc)) from None
    except (OSError, SyntaxError, ValueError, EOFError, MemoryError) as exc:
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise ImageInputError(f"{what} {name} is damaged or truncated ({fmt}: {reason})",
                              repr(exc)) from None
