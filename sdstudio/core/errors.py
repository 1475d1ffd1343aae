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


OUT_OF_MEMORY_MESSAGE = "out of memory; try a smaller size or fewer images per run"


def is_out_of_memory(exc: BaseException) -> bool:
    """Whether ``exc`` says the computer or the device ran out of memory: ``MemoryError``,
    SD Studio's ``OutOfMemoryError``, torch's ``OutOfMemoryError`` (recognised by its class
    name: ``core`` imports no torch) or a ``RuntimeError`` saying "out of memory" (older CUDA
    builds, MPS)."""
    if isinstance(exc, (MemoryError, OutOfMemoryError)):
        return True
    if any(cls.__name__ == "OutOfMemoryError" for cls in type(exc).__mro__):
        return True
    return isinstance(exc, RuntimeError) and "out of memory" in str(exc).lower()


def describe_error(exc: BaseException) -> str:
    """The one line a person reads about ``exc`` (no traceback, no control characters):

    - an ``SDStudioError``: its message (first line);
    - out of memory (see :func:`is_out_of_memory`): :data:`OUT_OF_MEMORY_MESSAGE`;
    - an ``OSError``: the system's reason and the file, ``Permission denied: /out/a.png``;
    - anything else: ``TypeName: first line of its message`` (``TypeName`` when it has none).
    """
    if isinstance(exc, SDStudioError):
        return _one_line(str(exc)) or type(exc).__name__
    if is_out_of_memory(exc):
        return OUT_OF_MEMORY_MESSAGE
    if isinstance(exc, OSError):
        reason = _one_line(exc.strerror or str(exc)) or type(exc).__name__
        where = "".join(f"{sep}{_printable(str(name))}"
                        for sep, name in ((": ", exc.filename), (" -> ", exc.filename2)) if name)
        return f"{reason}{where}"
    text = _one_line(str(exc))
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def _one_line(text: str) -> str:
    """The first non-blank line of ``text``, stripped and :func:`_printable`."""
    lines = text.strip().splitlines()
    return _printable(lines[0].strip()) if lines else ""


def _printable(text: str) -> str:
    """``text`` with control characters escaped (a tab becomes a space), so a message stays on
    one line and never moves a terminal's cursor or changes its colours."""
    return "".join(c if c.isprintable() else " " if c == "\t" else repr(c)[1:-1] for c in text)
