"""The ``generate`` and ``info`` commands."""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sdstudio.cli.checks import check_out_dir, check_request_inputs
from sdstudio.cli.common import EXIT_BAD_INPUT, EXIT_CANCELLED, EXIT_FAILURE, EXIT_OK, PROG
from sdstudio.cli.errors import is_bad_input
from sdstudio.cli.request_args import engine_settings_from_args, request_from_args
from sdstudio.cli.terminal import ProgressBar, install_cancel_handler, quiet_libraries
from sdstudio.core.cancel import CancelToken
from sdstudio.core.errors import (
    CancelledError,
    ImageInputError,
    SDStudioError,
    describe_error,
    terminal_json,
    terminal_text,
)

if TYPE_CHECKING:
    from sdstudio.core.events import EngineEvent


def cmd_generate(args: argparse.Namespace) -> int:
    from sdstudio.core.settings import load_settings

    request = request_from_args(args).validated()
    check_request_inputs(request)
    settings = load_settings()
    out_dir = Path(args.out).expanduser() if args.out else settings.output_path
    check_out_dir(out_dir)
    pattern = args.pattern or settings.filename_pattern
    from sdstudio.storage.naming import check_pattern

    check_pattern(pattern)  # a bad pattern fails now, not after the model has loaded
    engine_settings = engine_settings_from_args(args, settings).replace(preview_every=0)

    bar = ProgressBar(enabled=not args.quiet)
    quiet_libraries()
    from sdstudio.engine import Engine  # torch is imported here, after every cheap check
    from sdstudio.storage.png import save_image

    saved: list[Path] = []
    save_error: list[BaseException] = []
    cancel = CancelToken()

    def on_event(event: EngineEvent) -> None:
        from sdstudio.core import events as ev

        if isinstance(event, ev.Progress):
            bar.update(event)
        elif isinstance(event, ev.ImageReady):
            if save_error:
                return
            try:
                path = save_image(event.image, event.request, event.info, out_dir,
                                  pattern=pattern)
            except BaseException as exc:  # stop the run; re-raised below
                save_error.append(exc)
                cancel.cancel()
                return
            saved.append(path)
            bar.clear()
            print(path, flush=True)
        elif isinstance(event, ev.ModelReady):
            name = terminal_text(event.name)  # a model's name comes from its file or metadata
            if event.untrained and not args.quiet:
                bar.message(f"{PROG}: note: {name} is SD Studio's built-in demo model: "
                            "it is untrained, so its images are noise; use --model PATH for a "
                            "real model")
            elif not args.quiet and not event.untrained:
                bar.message(f"{PROG}: model {name} ({terminal_text(event.arch)}) on "
                            f"{event.device}, {event.dtype}")
        elif isinstance(event, ev.LoadProgress):
            if not args.quiet and bar.tty:
                bar.message(f"{PROG}: {terminal_text(event.message)}")
        elif isinstance(event, ev.Notice):
            bar.message(f"{PROG}: note: {terminal_text(event.message)}")

    engine = Engine(engine_settings)
    try:
        with install_cancel_handler(cancel, bar):
            try:
                engine.generate(request, on_event, cancel)
            except CancelledError:
                if not save_error:
                    raise
            if save_error:
                raise save_error[0]
            if cancel.cancelled:
                raise CancelledError()
    except CancelledError:
        bar.message(f"{PROG}: cancelled; {len(saved)} image(s) saved")
        return EXIT_CANCELLED
    finally:
        bar.clear()
        with contextlib.suppress(Exception):
            engine.unload()
    return EXIT_OK


def _describe(path: Path, md: Any) -> str:
    """The image's infotext, indented under its file name; control and bidi characters from
    the file are shown escaped (``\\x1b``, ``\\u202e``), never sent to the terminal."""
    from sdstudio.core.metadata import to_infotext

    request = getattr(md, "request", None)
    info = getattr(md, "info", None)
    text = getattr(md, "infotext", "") or ""
    if not text and request is not None:
        text = to_infotext(request, info)
    lines = [f"{terminal_text(str(path))}:"] + [
        "  " + line for line in terminal_text(text, keep="\n\t").splitlines()]
    if info is not None and getattr(info, "model_untrained", False):
        lines.append("  (made with the untrained demo model)")
    return "\n".join(lines)


def _json_record(path: Path, md: Any) -> dict[str, Any]:
    request = getattr(md, "request", None)
    info = getattr(md, "info", None)
    return {
        "file": str(path),
        "request": request.to_dict() if request is not None else None,
        "info": info.to_dict() if info is not None else None,
        "infotext": getattr(md, "infotext", ""),
        "extras": getattr(md, "extras", {}),
    }


def cmd_info(args: argparse.Namespace) -> int:
    from sdstudio.storage.png import read_image_metadata

    status = EXIT_OK
    for name in args.images:
        path = Path(name)
        try:
            if not path.is_file():
                raise ImageInputError(f"not a file: {name}")
            md = read_image_metadata(path)
        except (SDStudioError, OSError) as exc:
            print(f"{PROG}: error: {describe_error(exc)}", file=sys.stderr)
            status = EXIT_BAD_INPUT if is_bad_input(exc) else EXIT_FAILURE
            continue
        if args.json:
            # the same JSON, with control and bidi characters as \uXXXX escapes
            print(terminal_json(json.dumps(_json_record(path, md), ensure_ascii=False,
                                           default=str)))
        else:
            print(_describe(path, md))
    return status
