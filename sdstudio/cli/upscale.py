"""``sdstudio upscale IMAGE... --upscaler NAME --scale 4 --out DIR``: AUTOMATIC1111's Extras
upscale from the command line.

Every input, the factor, the result's size and the upscaler are checked before torch is
imported: bad input is one line on stderr (exit 2) and nothing is written. Then each image is
upscaled (a progress bar over its tiles) and saved as ``<name>-<scale>x.png`` in the output
folder (default: the configured output folder's ``extras``), never over a file, with the
source's metadata kept and the upscale noted as A1111 notes it (see
:mod:`sdstudio.engine.extras`). Ctrl+C stops between tiles; images already saved stay.
"""

from __future__ import annotations

import argparse
import contextlib
import time
from pathlib import Path
from typing import Any

from sdstudio.cli.checks import check_image_file, check_out_dir
from sdstudio.cli.common import EXIT_CANCELLED, EXIT_OK, PROG
from sdstudio.cli.terminal import ProgressBar, install_cancel_handler, quiet_libraries
from sdstudio.core import upscalers as names
from sdstudio.core.cancel import CancelToken
from sdstudio.core.errors import CancelledError, ModelError, RequestError, terminal_text
from sdstudio.core.events import Progress


def register(subparsers: Any) -> None:
    p: argparse.ArgumentParser = subparsers.add_parser(
        "upscale", help="upscale images with Lanczos, Nearest or an upscaler model (ESRGAN...)",
        description="Upscale images (AUTOMATIC1111's Extras) and save them as PNG files with "
                    "their metadata kept and the upscale noted; prints each saved path. "
                    "Upscaler models (ESRGAN, Real-ESRGAN, SwinIR, DAT, ...) are found in SD "
                    "Studio's upscaler folder and the configured ones (--upscaler-dir adds "
                    "more); a path to a model file works too.")
    p.add_argument("images", nargs="+", metavar="IMAGE")
    p.add_argument("--upscaler", "-u", default=names.LANCZOS, metavar="NAME",
                   help="None, Lanczos, Nearest, or an upscaler model's name or file "
                        "(default: Lanczos)")
    p.add_argument("--scale", "-s", type=float, default=4.0, metavar="FACTOR",
                   help=f"upscale by this factor, {names.MIN_SCALE:g} to {names.MAX_SCALE:g} "
                        "(default: 4); sides are rounded down to a multiple of 8 as in A1111")
    p.add_argument("--out", "-o", default=None, metavar="DIR",
                   help="output folder (default: 'extras' in the configured output folder)")
    p.add_argument("--upscaler-dir", action="append", default=[], metavar="DIR",
                   help="also look for upscaler models here (repeatable)")
    p.add_argument("--tile", type=int, default=None, metavar="PX",
                   help="tile size in input pixels (default: chosen from free memory)")
    p.add_argument("--device", default=None, metavar="NAME", help="auto, cuda, cuda:1, mps or cpu")
    p.add_argument("--quiet", "-q", action="store_true", help="no progress bar")
    p.set_defaults(handler=cmd_upscale)


def _check(args: argparse.Namespace, dirs: tuple[str, ...]) -> list[Path]:
    """Every cheap check, before torch is imported."""
    name = names.normalise(args.upscaler)
    if names.kind_of(name) == "latent":
        raise RequestError("upscaler", f"{name} upscales latents, in the hires fix only; "
                           "pick a pixel upscaler")
    names.check_scale(args.scale)
    if args.tile is not None and not 16 <= args.tile <= 4096:
        raise RequestError("tile", f"--tile {args.tile}: a tile is 16 to 4096 pixels")
    sources = [Path(item) for item in args.images]
    for source in sources:
        width, height = check_image_file(str(source), "image")
        names.target_size(width, height, args.scale)  # the result's pixel limit
    if names.kind_of(name) == "model":
        from sdstudio.engine.upscale import resolve_upscaler  # no torch at import

        resolve_upscaler(name, dirs, allow_path=True)
    return sources


def cmd_upscale(args: argparse.Namespace) -> int:
    from sdstudio.core.settings import load_settings

    settings = load_settings()
    extra = tuple(str(Path(d).expanduser()) for d in args.upscaler_dir)
    engine_settings = settings.engine.replace(
        upscaler_dirs=(*settings.engine.upscaler_dirs, *extra),
        **({"device": args.device} if args.device else {}))
    dirs = names.upscaler_dirs(engine_settings)
    sources = _check(args, dirs)
    out_dir = Path(args.out).expanduser() if args.out else settings.output_path / "extras"
    check_out_dir(out_dir)

    bar = ProgressBar(enabled=not args.quiet)
    quiet_libraries()
    # torch is imported here, after every cheap check (not diffusers: no Engine is needed)
    from sdstudio.engine.device import choose_device
    from sdstudio.engine.extras import upscale_file
    from sdstudio.engine.upscale import unload_upscaler

    choice = choose_device(engine_settings)
    cancel = CancelToken()
    saved: list[Path] = []
    try:
        with install_cancel_handler(cancel, bar):
            for run, source in enumerate(sources, start=1):
                started = time.monotonic()

                def progress(done: int, total: int, run: int = run,
                             started: float = started) -> None:
                    elapsed = time.monotonic() - started
                    bar.update(Progress(step=done, total=max(total, 1), run=run,
                                        runs=len(sources), elapsed_s=elapsed,
                                        s_per_it=elapsed / done if done else 0.0))

                path = upscale_file(source, upscaler=args.upscaler, scale=args.scale,
                                    out_dir=out_dir, dirs=dirs, device=choice.device,
                                    dtype=choice.dtype, tile=args.tile, on_progress=progress,
                                    cancel=cancel, allow_path=True)
                saved.append(path)
                bar.clear()
                print(terminal_text(str(path)), flush=True)
    except CancelledError:
        bar.message(f"{PROG}: cancelled; {len(saved)} image(s) saved")
        return EXIT_CANCELLED
    except ModelError as exc:
        if saved:
            bar.message(f"{PROG}: {len(saved)} image(s) saved before the error")
        raise exc from None
    finally:
        bar.clear()
        with contextlib.suppress(Exception):
            unload_upscaler()
    return EXIT_OK
