"""``sdstudio download <catalogue id | org/repo [file] | URL>``: get a model file into SD
Studio's folder for its kind (checkpoints, LoRAs, VAE, embeddings, upscalers, ControlNet).

A tqdm bar shows the bytes, the speed and the time left. Ctrl+C stops the download and keeps
the partial file: the same command later resumes it. The file is checked (sha256 when known,
always computed; the safe loader reads it) before it is moved into place and its path is
printed. ``--list`` prints the catalogue of starter models (no network). Nothing is fetched
with ``HF_HUB_OFFLINE=1`` or ``SDSTUDIO_OFFLINE=1``.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from pathlib import Path
from typing import Any

from sdstudio.cli.common import EXIT_CANCELLED, EXIT_OK, PROG
from sdstudio.cli.terminal import install_cancel_handler, quiet_libraries
from sdstudio.core import paths
from sdstudio.core.cancel import CancelToken
from sdstudio.core.catalogue import Catalogue, load_catalogue
from sdstudio.core.errors import CancelledError, RequestError, terminal_text
from sdstudio.downloads import DownloadError, DownloadProgress, DownloadSource, resolve
from sdstudio.downloads.types import OFFLINE_MESSAGE, is_offline


def register(subparsers: Any) -> None:
    p: argparse.ArgumentParser = subparsers.add_parser(
        "download", help="download a model (catalogue id, Hugging Face repo and file, or URL)",
        description="Download a model file into SD Studio's folder for its kind and print "
                    "its path. WHAT is a catalogue id (see --list), a Hugging Face repository "
                    "with its file (org/repo file.safetensors, org/repo/path/file.ckpt, or a "
                    "huggingface.co/.../blob/main/... link), a Civitai download link "
                    "(https://civitai.com/api/download/models/ID) or any https URL. An "
                    "interrupted download resumes when run again.")
    p.add_argument("what", nargs="?", metavar="WHAT")
    p.add_argument("file", nargs="?", metavar="FILE",
                   help="the file in the repository, when WHAT is org/repo")
    p.add_argument("--list", action="store_true", help="list the catalogue of starter models")
    p.add_argument("--kind", choices=sorted(paths.MODEL_KINDS), default=None,
                   help="what the file is, which picks its folder (default: the catalogue's, "
                        "else guessed from the name, else checkpoint)")
    p.add_argument("--sha256", default=None, metavar="HEX",
                   help="refuse the file unless its sha256 is this")
    p.add_argument("--accept-licence", "--accept-license", dest="accept_licence",
                   action="store_true",
                   help="accept the licence of a model that asks for it (read it first: "
                        "its name and link are printed)")
    p.add_argument("--quiet", "-q", action="store_true", help="no progress bar")
    p.set_defaults(handler=cmd_download)


def _size(n: int | None) -> str:
    if n is None:
        return "?"
    return f"{n / 2**30:.1f} GiB" if n >= 2**30 else f"{n / 2**20:.0f} MiB"


def print_catalogue(catalogue: Catalogue) -> None:
    rows = [(e.id, e.kind, e.architecture, _size(e.size),
             e.licence.name + (" (accept)" if e.licence.needs_acceptance else ""), e.name)
            for e in catalogue]
    head = ("ID", "KIND", "ARCH", "SIZE", "LICENCE", "NAME")
    widths = [max(len(r[i]) for r in [head, *rows]) for i in range(5)]
    for row in [head, *rows]:
        print("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=False)) + "  " + row[5])


def _source(args: argparse.Namespace) -> DownloadSource:
    if not args.what:
        raise RequestError("what", "name what to download (a catalogue id, org/repo FILE or "
                                   "a URL), or --list")
    text = f"{args.what} {args.file}" if args.file else args.what
    from sdstudio.core.settings import load_settings

    try:
        source = resolve(text, kind=args.kind, settings=load_settings().downloads)
        if args.sha256:
            source = dataclasses.replace(source, sha256=args.sha256.strip())
    except DownloadError as exc:
        if is_offline():
            raise
        raise RequestError("what", str(exc)) from None
    return source


class _Bar:
    """tqdm on stderr: bytes, speed, time left."""

    def __init__(self, title: str, enabled: bool) -> None:
        self.title = title
        self.enabled = enabled
        self.bar: Any = None

    def __call__(self, p: DownloadProgress) -> None:
        if not self.enabled:
            return
        if self.bar is None:
            from tqdm import tqdm

            self.bar = tqdm(total=p.total, initial=0, unit="B", unit_scale=True,
                            unit_divisor=1024, desc=self.title[:40], file=sys.stderr,
                            dynamic_ncols=True, mininterval=0.5, leave=False)
            self.shown = 0
        if p.total is not None and self.bar.total != p.total:
            self.bar.total = p.total
        self.bar.update(p.done - self.shown)
        self.shown = p.done

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None


def cmd_download(args: argparse.Namespace) -> int:
    if args.list:
        print_catalogue(load_catalogue())
        return EXIT_OK
    if is_offline():
        raise DownloadError(OFFLINE_MESSAGE)
    source = _source(args)
    licence = source.licence
    if licence is not None and licence.needs_acceptance and not args.accept_licence:
        raise RequestError("licence", f"{source.title} is under the {licence.name} licence: "
                                      f"read it at {licence.url}, then run again with "
                                      "--accept-licence")
    quiet_libraries()
    described: list[str] = []

    def verify(path: Path) -> None:
        from sdstudio.engine.verify import verify_model_file  # torch only now

        described.append(verify_model_file(path, source.kind))

    from sdstudio.downloads import download

    cancel = CancelToken()
    bar = _Bar(source.filename, enabled=not args.quiet)
    note = f"{PROG}: stopping the download (the part already fetched is kept)"
    try:
        with install_cancel_handler(cancel, note=note):
            final = download(source, on_progress=bar, cancel=cancel, verify=verify,
                             accept_licence=args.accept_licence)
    except CancelledError:
        bar.close()
        sys.stderr.write(f"{PROG}: download cancelled; run the same command again to "
                         "resume it\n")
        return EXIT_CANCELLED
    finally:
        bar.close()
    if described and not args.quiet:
        sys.stderr.write(f"{PROG}: {terminal_text(final.name)}: {described[0]}\n")
    print(terminal_text(str(final)), flush=True)
    return EXIT_OK
