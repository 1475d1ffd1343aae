"""The error types every layer uses. Each carries a one-line message fit to show a person."""

from __future__ import annotations


class SDStudioError(Exception):
    """Base class: ``str(err)`` is one clear line for the user; ``details`` is optional context."""

    def __init__(self, message: str, details: str = "") -> None:
        super().__init__(message)
        self.message = message
        self.details = details

    def __str__(self) -> str:  # one line, always
        return self.message.splitlines()[0] if self.message else type(self).__name__


class RequestError(SDStudioError, ValueError):
    """A generation request has a bad value. ``field`` names the offending field."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field


class ImageInputError(SDStudioError):
    """An init image or mask cannot be used (missing, not an image, truncated, too large...)."""


class ModelError(SDStudioError):
    """A model cannot be found, recognised or loaded safely."""


class OutOfMemoryError(SDStudioError):
    """The device ran out of memory; the message suggests what to change."""


class MetadataError(SDStudioError):
    """Image metadata (infotext / sdstudio chunk) cannot be parsed."""


class PromptListError(SDStudioError):
    """A prompt list cannot be read at all (encoding, format)."""


class CancelledError(SDStudioError):
    """A job was cancelled by the user. Raised from inside the denoising loop to stop at once."""

    def __init__(self, message: str = "Cancelled") -> None:
        super().__init__(message)
