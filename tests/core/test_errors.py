"""describe_error: every exception -> the one line a person reads (CLI, worker, batch)."""

from __future__ import annotations

import pytest

from sdstudio.core.errors import (
    OUT_OF_MEMORY_MESSAGE,
    CancelledError,
    ImageInputError,
    OutOfMemoryError,
    RequestError,
    SDStudioError,
    describe_error,
    is_out_of_memory,
    terminal_json,
    terminal_text,
)

# torch.OutOfMemoryError's stand-in (a RuntimeError of that name), without importing torch
TorchOOM = type("OutOfMemoryError", (RuntimeError,), {})


@pytest.mark.parametrize(("exc", "line"), [
    # SD Studio's errors: their message, first line only
    (RequestError("width", "width must be a multiple of 8, not 100"),
     "width must be a multiple of 8, not 100"),
    (ImageInputError("init image x.png is truncated\nPIL says: ..."),
     "init image x.png is truncated"),
    (OutOfMemoryError("out of memory on cuda at 2048x2048: lower the size"),
     "out of memory on cuda at 2048x2048: lower the size"),
    (CancelledError(), "Cancelled"),
    (SDStudioError(""), "SDStudioError"),
    # OSError: the system's reason and the file(s), no errno, no quotes, no class name
    (PermissionError(13, "Permission denied", "/out/a.png"), "Permission denied: /out/a.png"),
    (FileNotFoundError(2, "No such file or directory", "/a", None, "/b"),
     "No such file or directory: /a -> /b"),
    (OSError(28, "No space left on device"), "No space left on device"),
    (OSError("cannot identify image file 'x.png'"), "cannot identify image file 'x.png'"),
    (OSError(), "OSError"),
    # out of memory, however it is spelled
    (MemoryError(), OUT_OF_MEMORY_MESSAGE),
    (TorchOOM("CUDA out of memory. Tried to allocate 2.00 GiB"), OUT_OF_MEMORY_MESSAGE),
    (RuntimeError("MPS backend out of memory (MPS allocated: 9 GB)"), OUT_OF_MEMORY_MESSAGE),
    # anything else: TypeName: first line
    (RuntimeError("boom"), "RuntimeError: boom"),
    (RuntimeError("something broke\nsecond line"), "RuntimeError: something broke"),
    (ValueError("\n  leading blank lines\n"), "ValueError: leading blank lines"),
    (KeyError(), "KeyError"),
    (KeyboardInterrupt(), "KeyboardInterrupt"),
])
def test_describe_error(exc: BaseException, line: str) -> None:
    assert describe_error(exc) == line


def test_describe_error_is_one_printable_line() -> None:
    nasty = RuntimeError("red \x1b[31mtext\x07\tand a tab\r\nsecond line")
    line = describe_error(nasty)
    assert line == "RuntimeError: red \\x1b[31mtext\\x07 and a tab"
    assert line.isprintable()
    weird_name = PermissionError(13, "Permission denied", "/out/a\nb\x1b.png")
    assert describe_error(weird_name) == "Permission denied: /out/a\\nb\\x1b.png"


def test_a_subclass_keeps_its_kind() -> None:
    class StorageError(SDStudioError, OSError):  # an SDStudioError that is also an OSError
        pass

    assert describe_error(StorageError("Could not save the image: the disk is full")) == (
        "Could not save the image: the disk is full")


def test_is_out_of_memory() -> None:
    assert is_out_of_memory(MemoryError())
    assert is_out_of_memory(OutOfMemoryError("x"))
    assert is_out_of_memory(TorchOOM("x"))
    assert is_out_of_memory(RuntimeError("CUDA out of memory"))
    assert not is_out_of_memory(RuntimeError("boom"))
    assert not is_out_of_memory(ValueError("out of memory"))  # only RuntimeError's wording


UNSAFE = ("\x00\x07\x08\x1b\r\x7f\x85\x9b\u2028\u2029\udc80\u061c\u200e\u200f"
          "\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069")


def test_terminal_text_escapes_controls_and_bidi_overrides() -> None:
    text = "red \x1b[31mtext\x1b[2J\x00 \u202eevil\u202c\nline two\tend"
    out = terminal_text(text, keep="\n\t")
    assert out == "red \\x1b[31mtext\\x1b[2J\\x00 \\u202eevil\\u202c\nline two\tend"
    assert terminal_text("a\nb\tc") == "a\\nb\\tc"  # nothing kept unless asked
    for c in UNSAFE:
        assert c not in terminal_text(f"x{c}y"), repr(c)
    # ordinary text of any script, emoji sequences and spaces stay as they are
    plain = ("chat noir, \u732b, \u0642\u0637\u0629, \U0001f469\u200d\U0001f4bb, "
             "\u00e9t\u00e9 \u00a0")
    assert terminal_text(plain) == plain


def test_terminal_json_is_the_same_json_without_raw_controls() -> None:
    import json

    value = {"prompt": "a\x1b[2J\x00\u202e\x7f\x85\udc80 \u732b", "k\u2066": 1}
    out = terminal_json(json.dumps(value, ensure_ascii=False))
    assert json.loads(out) == value
    assert not set(out) & set(UNSAFE)
    assert "\u732b" in out  # printable text stays readable
