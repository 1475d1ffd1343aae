"""Storage: atomic PNG writes with generation metadata, file naming. No torch, no Qt."""

from sdstudio.storage.naming import FilenamePatternError, check_pattern, format_filename
from sdstudio.storage.png import ImageMetadata, StorageError, read_image_metadata, save_image

__all__ = [
    "FilenamePatternError",
    "ImageMetadata",
    "StorageError",
    "check_pattern",
    "format_filename",
    "read_image_metadata",
    "save_image",
]
