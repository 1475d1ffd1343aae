"""Errors -> one line on stderr and an exit status: 2 bad input, 1 failure, 130 cancelled.
Unexpected errors also leave their traceback in the CLI log; none is printed."""

from __future__ import annotations

import argparse
import datetime
import os
import sys
import traceback
from collections.abc import Callable, Sequence
from pathlib import Path

from sdstudio.cli.common import EXIT_BAD_INPUT, EXIT_CANCELLED, EXIT_FAILURE, PROG
from sdstudio.core import paths
from sdstudio.core.errors import (
    CancelledError,
    ImageInputError,
    MetadataError,
    ModelError,
    PromptListError,
    RequestError,
    SDStudioError,
    describe_error,
    is_out_of_memory,
)

BAD_INPUT_ERRORS: tuple[type[SDStudioError], ...] = (
    RequestError,
    ImageInputError,
    ModelError,
    MetadataError,
    PromptListError,
)


one_line = describe_error  # its name in the CLI before it moved to sdstudio.core.errors


def is_bad_input(exc: BaseException) -> bool:
    """Bad input (exit 2): the listed errors, a missing file, and any SDStudioError that is
    also a ValueError (a bad file name pattern, say)."""
    return isinstance(exc, (*BAD_INPUT_ERRORS, FileNotFoundError)) or (
        isinstance(exc, SDStudioError) and isinstance(exc, ValueError)
    )


def log_unexpected(exc: BaseException, argv: Sequence[str]) -> Path | None:
    """Append the traceback to the CLI log in the platform's log folder."""
    try:
        folder = paths.log_dir()
        folder.mkdir(parents=True, exist_ok=True)
        log = folder / "cli.log"
        with open(log, "a", encoding="utf-8") as fh:
            fh.write(f"--- {datetime.datetime.now().isoformat(timespec='seconds')} "
                     f"{PROG} {' '.join(argv)}\n")
            fh.write("".join(traceback.format_exception(type(exc), exc, exc.__traceback__)))
        return log
    except OSError:
        return None


EXIT_CLOSED_PIPE = 141  # 128 + SIGPIPE, what a Unix tool killed by a closed pipe reports


def _closed_pipe() -> int:
    """The reader of our output went away (``sdstudio info ... | head``): stop quietly. The
    rest of the output goes nowhere, so the interpreter's final flush cannot fail again."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError, AttributeError):
        pass
    return EXIT_CLOSED_PIPE


def run_handler(handler: Callable[[argparse.Namespace], int | None], args: argparse.Namespace,
                argv: Sequence[str]) -> int:
    """Run a subcommand: every error becomes one line on stderr and an exit status."""
    try:
        code = int(handler(args) or 0)
        sys.stdout.flush()  # a closed pipe shows here, inside the try
        return code
    except BrokenPipeError:
        return _closed_pipe()
    except (CancelledError, KeyboardInterrupt):
        print(f"{PROG}: cancelled", file=sys.stderr)
        return EXIT_CANCELLED
    except Exception as exc:
        if isinstance(exc, (SDStudioError, OSError)) or is_out_of_memory(exc):
            print(f"{PROG}: error: {describe_error(exc)}", file=sys.stderr)
            return EXIT_BAD_INPUT if is_bad_input(exc) else EXIT_FAILURE
        log = log_unexpected(exc, argv)
        where = f" (details in {log})" if log else ""
        print(f"{PROG}: error: unexpected {describe_error(exc)}{where}", file=sys.stderr)
        return EXIT_FAILURE
