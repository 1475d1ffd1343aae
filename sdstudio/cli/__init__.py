"""Headless command line: ``sdstudio generate``, ``sdstudio info`` and the subcommands other
modules register (see :func:`sdstudio.cli.parser.register_subcommands`).

The CLI enters the app's one data flow at the request: arguments -> ``GenerationRequest``
(validated before torch is imported, so bad input fails fast) -> ``engine.Engine.generate``
-> ``storage.png.save_image`` per ``ImageReady``.

For subcommand modules (``sdstudio.batch.cli`` and others): expose ``register(subparsers)``,
add a parser with ``subparsers.add_parser(...)`` and ``set_defaults(handler=func)`` where
``func(args) -> int`` is the exit status. Reuse :func:`add_request_arguments`,
:func:`add_engine_arguments`, :func:`request_from_args`, :func:`engine_settings_from_args`,
:class:`ProgressBar` and :func:`install_cancel_handler`. Raise ``SDStudioError`` (or
``OSError``) for anything the person should read: :func:`main` turns it into one line on
stderr and the exit status (2 bad input, 1 failure, 130 cancelled); never print tracebacks.

The modules:

- ``common``: program name, exit statuses;
- ``parser``: the argument parser and the subcommand registry;
- ``request_args``: request and engine options <-> ``GenerationRequest`` / ``EngineSettings``;
- ``checks``: the cheap input checks done before torch is imported;
- ``terminal``: progress bar, Ctrl+C handling, quiet libraries;
- ``commands``: ``generate`` and ``info``;
- ``errors``: exceptions -> one line on stderr and an exit status.

This package must stay cheap to import: no torch, no Qt at module level.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

from sdstudio.cli.checks import (
    check_image_file,
    check_model_arg,
    check_out_dir,
    check_request_inputs,
)
from sdstudio.cli.commands import cmd_generate, cmd_info
from sdstudio.cli.common import (
    DEFAULT_PROMPT,
    EXIT_BAD_INPUT,
    EXIT_CANCELLED,
    EXIT_FAILURE,
    EXIT_OK,
    PROG,
)
from sdstudio.cli.errors import (
    BAD_INPUT_ERRORS,
    is_bad_input,
    log_unexpected,
    one_line,
    run_handler,
)
from sdstudio.cli.parser import (
    CliParser,
    add_output_arguments,
    build_parser,
    register_subcommands,
)
from sdstudio.cli.request_args import (
    MODEL_SUFFIXES,
    add_engine_arguments,
    add_request_arguments,
    engine_settings_from_args,
    looks_like_path,
    parse_lora,
    request_from_args,
)
from sdstudio.cli.terminal import (
    ProgressBar,
    format_progress,
    install_cancel_handler,
    quiet_libraries,
)
from sdstudio.core.sampler_names import normalize_sampler

__all__ = [
    "BAD_INPUT_ERRORS",
    "DEFAULT_PROMPT",
    "EXIT_BAD_INPUT",
    "EXIT_CANCELLED",
    "EXIT_FAILURE",
    "EXIT_OK",
    "MODEL_SUFFIXES",
    "PROG",
    "CliParser",
    "ProgressBar",
    "add_engine_arguments",
    "add_output_arguments",
    "add_request_arguments",
    "build_parser",
    "check_image_file",
    "check_model_arg",
    "check_out_dir",
    "check_request_inputs",
    "cmd_generate",
    "cmd_info",
    "engine_settings_from_args",
    "format_progress",
    "install_cancel_handler",
    "is_bad_input",
    "log_unexpected",
    "looks_like_path",
    "main",
    "normalize_sampler",
    "one_line",
    "parse_lora",
    "quiet_libraries",
    "register_subcommands",
    "request_from_args",
    "run_handler",
]


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # --help, --version and usage errors
        return exc.code if isinstance(exc.code, int) else EXIT_BAD_INPUT
    handler = getattr(args, "handler", None)
    if handler is None:
        parser.print_help()
        return EXIT_BAD_INPUT
    return run_handler(handler, args, argv)
