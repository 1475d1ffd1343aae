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
    """``text`` with every non-printable character escaped (a tab becomes a space), so a
    message stays on one line and never moves a terminal's cursor or changes its colours."""
    return terminal_text(text.replace("\t", " "), strict=True)


# Bidirectional controls: they reorder the text shown after them (U+202E makes "gpj.exe" read
# "exe.jpg"), so untrusted text never reaches a terminal or a file name with them in it.
BIDI_CONTROLS = frozenset(
    "\u061c\u200e\u200f" + "".join(map(chr, range(0x202A, 0x202F)))
    + "".join(map(chr, range(0x2066, 0x206A)))
)


def is_unsafe_char(c: str) -> bool:
    """Whether ``c`` must not be shown raw: a C0 or C1 control character (NUL, ESC, CR...),
    DEL, a bidirectional control (:data:`BIDI_CONTROLS`), U+2028/U+2029 (line and paragraph
    separators) or a lone surrogate (which cannot even be written as UTF-8)."""
    o = ord(c)
    return (o < 0x20 or 0x7F <= o <= 0x9F or c in BIDI_CONTROLS or o in (0x2028, 0x2029)
            or 0xD800 <= o <= 0xDFFF)


def terminal_text(text: str, keep: str = "", *, strict: bool = False) -> str:
    """``text`` (untrusted: from an image, a model file, a prompt list...) safe to print: every
    :func:`is_unsafe_char` is written as its Python escape (``\\x1b``, ``\\x00``,
    ``\\u202e``), so it can neither move the cursor, change colours, clear the screen nor
    reorder what is shown, and a person still sees it was there. Characters in ``keep`` stay
    as they are (``"\\n\\t"`` for a block meant to span lines). ``strict``: escape every
    character Python does not call printable (format characters and odd spaces too), as
    :func:`describe_error` does for its one line."""
    def unsafe(c: str) -> bool:
        return not c.isprintable() if strict else is_unsafe_char(c)

    return "".join(repr(c)[1:-1] if c not in keep and unsafe(c) else c for c in text)


def terminal_json(dumped: str) -> str:
    """JSON text (``json.dumps(..., ensure_ascii=False)``) with every :func:`is_unsafe_char`
    written as a ``\\uXXXX`` escape: still the same JSON value, safe to print."""
    return "".join(f"\\u{ord(c):04x}" if is_unsafe_char(c) else c for c in dumped)
