"""The argument parser: ``generate``, ``info`` and the subcommands other modules register."""

from __future__ import annotations

import argparse
from typing import Any, NoReturn

from sdstudio.cli.commands import cmd_generate, cmd_info
from sdstudio.cli.common import EXIT_BAD_INPUT, PROG
from sdstudio.cli.request_args import add_engine_arguments, add_request_arguments


class CliParser(argparse.ArgumentParser):
    """argparse with one-line errors (``sdstudio: error: ...``) and exit status 2."""

    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_BAD_INPUT, f"{PROG}: error: {message} (see: {self.prog} --help)\n")


def add_output_arguments(parser: argparse.ArgumentParser) -> None:
    g = parser.add_argument_group("output")
    g.add_argument("--out", "-o", default=None, metavar="DIR",
                   help="output folder (default: the configured one)")
    g.add_argument("--pattern", default=None,
                   help="file name pattern, e.g. {index}-{seed} (default: the configured one)")
    g.add_argument("--quiet", "-q", action="store_true", help="no progress bar")


def build_parser() -> CliParser:
    parser = CliParser(
        prog=PROG,
        description="SD Studio: Stable Diffusion on your own computer. Without a command, "
                    "opens the window.",
    )
    parser.add_argument("--version", action="version", version=f"{PROG} {_version()}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=CliParser)

    gen = sub.add_parser("generate", help="make images from a prompt (txt2img, img2img, inpaint)",
                         description="Make images and save them as PNG files with their "
                                     "parameters; prints each saved path.")
    add_request_arguments(gen, prompt_required=True)
    add_engine_arguments(gen)
    add_output_arguments(gen)
    gen.set_defaults(handler=cmd_generate)

    info = sub.add_parser("info", help="print the parameters stored in images",
                          description="Print the parameters of images made by SD Studio, "
                                      "AUTOMATIC1111 and compatible tools.")
    info.add_argument("images", nargs="+", metavar="IMAGE")
    info.add_argument("--json", action="store_true",
                      help="one JSON object per image: the full request, info and infotext")
    info.set_defaults(handler=cmd_info)

    register_subcommands(sub)
    return parser


def register_subcommands(subparsers: Any) -> None:
    """The subcommands other modules add (each module has ``register(subparsers)``). Imported
    here, not with the CLI: ``sdstudio.engine.cli_models`` lives in the engine package, which
    nothing outside it imports at module level."""
    from sdstudio.api import cli as api_cli  # serve
    from sdstudio.batch import cli as batch_cli  # batch
    from sdstudio.cli import download as download_cli  # download
    from sdstudio.cli import upscale as upscale_cli  # upscale
    from sdstudio.engine import cli_models  # models, convert

    for module in (batch_cli, cli_models, api_cli, upscale_cli, download_cli):
        module.register(subparsers)


def _version() -> str:
    try:
        from importlib.metadata import version

        return version("sdstudio")
    except Exception:
        return "unknown"
