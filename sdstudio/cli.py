"""Headless command line: ``sdstudio generate``, ``sdstudio info`` and the subcommands other
modules register (``SUBCOMMAND_MODULES``).

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

This module must stay cheap to import: no torch, no Qt at module level.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import importlib
import json
import math
import os
import signal
import sys
import time
import traceback
import warnings
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, NoReturn

from sdstudio.core import paths
from sdstudio.core.cancel import CancelToken
from sdstudio.core.errors import (
    CancelledError,
    ImageInputError,
    MetadataError,
    ModelError,
    PromptListError,
    RequestError,
    SDStudioError,
)
from sdstudio.core.request import (
    FIELD_NAMES,
    RESIZE_MODES,
    SAMPLER_NAMES,
    GenerationRequest,
    LoraSpec,
)

if TYPE_CHECKING:
    from sdstudio.core.events import EngineEvent, Progress
    from sdstudio.core.settings import EngineSettings, Settings

PROG = "sdstudio"
# Modules exposing register(subparsers); imported when the parser is built, absent ones skipped.
SUBCOMMAND_MODULES: list[str] = [
    "sdstudio.batch.cli",
    "sdstudio.engine_cli",
    "sdstudio.engine.cli_models",  # models, convert
]
EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_BAD_INPUT = 2
EXIT_CANCELLED = 130
BAD_INPUT_ERRORS: tuple[type[SDStudioError], ...] = (
    RequestError,
    ImageInputError,
    ModelError,
    MetadataError,
    PromptListError,
)
MODEL_SUFFIXES = (".safetensors", ".ckpt", ".pt", ".pth", ".bin", ".sft")
DEFAULT_PROMPT = "a lighthouse on a rocky coast at dawn, watercolor"


# ---------------------------------------------------------------------------------- parser
class CliParser(argparse.ArgumentParser):
    """argparse with one-line errors (``sdstudio: error: ...``) and exit status 2."""

    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_BAD_INPUT, f"{PROG}: error: {message} (see: {self.prog} --help)\n")


def add_request_arguments(parser: argparse.ArgumentParser, *, prompt_required: bool) -> None:
    """Every GenerationRequest field as an option; unset options keep the request defaults."""
    g = parser.add_argument_group("image")
    g.add_argument("--prompt", "-p", required=prompt_required, default=None, metavar="TEXT",
                   help="what to draw (<lora:name:weight> tags allowed)")
    g.add_argument("--negative-prompt", "-n", default=None, metavar="TEXT", help="what to avoid")
    g.add_argument("--width", "-W", type=int, default=None, metavar="PX",
                   help="multiple of 8 (default 512)")
    g.add_argument("--height", "-H", type=int, default=None, metavar="PX",
                   help="multiple of 8 (default 512)")
    g.add_argument("--steps", "-s", type=int, default=None, metavar="N",
                   help="denoising steps (default 20)")
    g.add_argument("--cfg-scale", "-c", type=float, default=None, metavar="X",
                   help="guidance (default 7)")
    g.add_argument("--seed", type=int, default=None, metavar="N", help="-1 = random (default)")
    g.add_argument("--sampler", default=None, metavar="NAME",
                   help=f"one of: {', '.join(SAMPLER_NAMES)} (default Euler a)")
    g.add_argument("--batch-size", "-b", type=int, default=None, metavar="N", help="images per run")
    g.add_argument("--batch-count", type=int, default=None, metavar="N", help="number of runs")
    g.add_argument("--rng", choices=("cpu", "device"), default=None,
                   help="where initial noise is drawn (cpu: same image on every device)")
    g = parser.add_argument_group("img2img and inpaint")
    g.add_argument("--init-image", "-i", default=None, metavar="FILE", help="source image")
    g.add_argument("--strength", type=float, default=None, metavar="X",
                   help="denoising strength 0..1")
    g.add_argument("--mask", default=None, metavar="FILE", help="inpaint mask (white = repaint)")
    g.add_argument("--mask-blur", type=int, default=None, metavar="PX", help="pixels (default 4)")
    g.add_argument("--inpaint-only-masked", action="store_true", default=None,
                   help="work on the masked area at full resolution")
    g.add_argument("--inpaint-padding", type=int, default=None, metavar="PX",
                   help="pixels around the mask")
    g.add_argument("--resize-mode", default=None, choices=RESIZE_MODES,
                   help="how the source image fits the size (default resize)")
    g = parser.add_argument_group("model")
    g.add_argument("--model", "-m", default=None, metavar="PATH|NAME",
                   help="model folder or file, or a name in the model folders "
                        "(default: the configured model, else the untrained demo model)")
    g.add_argument("--vae", default=None, metavar="PATH|NAME", help="separate VAE")
    g.add_argument("--lora", action="append", default=None, metavar="NAME:WEIGHT",
                   help="apply a LoRA (repeatable)")
    g.add_argument("--clip-skip", type=int, default=None, metavar="N",
                   help="1 = last CLIP layer (default)")


def add_engine_arguments(parser: argparse.ArgumentParser) -> None:
    """Model folders, device, precision, memory mode."""
    g = parser.add_argument_group("engine")
    g.add_argument("--models-dir", action="append", default=None, metavar="DIR",
                   help="also look for models here (repeatable)")
    g.add_argument("--device", default=None, metavar="NAME", help="auto, cuda, cuda:1, mps or cpu")
    g.add_argument("--precision", default=None, choices=("auto", "fp16", "bf16", "fp32"))
    g.add_argument("--memory-mode", default=None, choices=("auto", "low", "off"),
                   help="memory savers: auto (from free memory), low (all), off")


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

    for name in SUBCOMMAND_MODULES:
        module = _import_optional(name)
        if module is not None:
            module.register(sub)
    return parser


def _import_optional(name: str) -> Any:
    """Import a subcommand module; None when it (or its package) does not exist yet."""
    try:
        return importlib.import_module(name)
    except ModuleNotFoundError as exc:
        missing = exc.name or ""
        if missing and (name == missing or name.startswith(missing + ".")):
            return None
        raise


def _version() -> str:
    try:
        from importlib.metadata import version

        return version("sdstudio")
    except Exception:
        return "unknown"


# ------------------------------------------------------------------------- args -> request
def normalize_sampler(name: str) -> str:
    """Accept "euler_a", "dpmpp_2m_karras", "DPM++ 2M Karras"...; unknown names pass through
    (validation then lists the choices)."""
    def key(text: str) -> str:
        return "".join(c for c in text.lower().replace("++", "pp") if c.isalnum())

    wanted = key(name)
    for known in SAMPLER_NAMES:
        if key(known) == wanted:
            return known
    return name


def parse_lora(text: str) -> LoraSpec:
    name, sep, weight = text.rpartition(":")
    if not sep or not name:
        return LoraSpec(text.strip(), 1.0)
    try:
        return LoraSpec(name.strip(), float(weight))
    except ValueError:
        raise RequestError("loras", f"--lora {text!r}: weight {weight!r} is not a number") from None


def _abs_path(value: str) -> str:
    return str(Path(value).expanduser().absolute())


def looks_like_path(model: str) -> bool:
    """A model given as a file system path rather than a name or a hub id."""
    p = Path(model).expanduser()
    return (
        p.is_absolute()
        or model.startswith((".", "~"))
        or p.suffix.lower() in MODEL_SUFFIXES
        or p.exists()
    )


def request_from_args(
    args: argparse.Namespace, base: GenerationRequest | None = None
) -> GenerationRequest:
    """The request the options describe: set options override ``base`` (or the defaults).
    Not validated: call ``.validated()``."""
    changes: dict[str, Any] = {}
    for name in FIELD_NAMES:
        value = getattr(args, name, None)
        if value is None:
            continue
        if name == "loras":
            continue
        changes[name] = value
    if getattr(args, "lora", None):
        changes["loras"] = tuple(parse_lora(t) for t in args.lora)
    if isinstance(changes.get("sampler"), str):
        changes["sampler"] = normalize_sampler(changes["sampler"])
    for name in ("init_image", "mask"):
        if changes.get(name):
            changes[name] = _abs_path(changes[name])
    for name in ("model", "vae"):
        value = changes.get(name)
        if value and looks_like_path(value):
            changes[name] = _abs_path(value)
    if base is not None:
        return base.replace(**changes)
    if "prompt" not in changes:
        raise RequestError("prompt", "a prompt is needed (--prompt)")
    return GenerationRequest(**changes)


def engine_settings_from_args(args: argparse.Namespace, settings: Settings) -> EngineSettings:
    eng = settings.engine
    changes: dict[str, Any] = {}
    if getattr(args, "models_dir", None):
        changes["model_dirs"] = (*eng.model_dirs, *(_abs_path(d) for d in args.models_dir))
    for name in ("device", "precision", "memory_mode"):
        value = getattr(args, name, None)
        if value:
            changes[name] = value
    return eng.replace(**changes)


# ------------------------------------------------------------------------ input checks
def check_model_arg(model: str, what: str = "model") -> None:
    """A model given as a path must exist (checked before torch is imported)."""
    if model and looks_like_path(model) and not Path(model).expanduser().exists():
        raise ModelError(f"{what} not found: {model}")


def check_image_file(path: str, label: str) -> tuple[int, int]:
    """Open and fully decode an input image without torch: refuses missing files, non-images,
    truncated files and decompression bombs. Returns (width, height)."""
    from sdstudio.core.images import open_image

    with open_image(path, label) as image:
        return image.size


def check_request_inputs(request: GenerationRequest) -> None:
    """Every cheap check before the engine (and torch) is loaded."""
    check_model_arg(request.model)
    check_model_arg(request.vae, "VAE")
    size = None
    if request.init_image:
        size = check_image_file(request.init_image, "init image")
    if request.mask:
        mask_size = check_image_file(request.mask, "mask")
        if size is not None and mask_size != size:
            raise ImageInputError(
                f"the mask is {mask_size[0]}x{mask_size[1]} but the init image is "
                f"{size[0]}x{size[1]}; they must be the same size"
            )


def check_out_dir(out: Path) -> None:
    if out.exists() and not out.is_dir():
        raise RequestError("out", f"output folder {out} exists and is not a folder")


# ------------------------------------------------------------------------------ progress
def _fmt_duration(seconds: float) -> str:
    if not math.isfinite(seconds) or seconds < 0:
        return "?"
    seconds = round(seconds)
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


def format_progress(p: Progress, width: int = 24) -> str:
    """``run 1/2 [#####-----] step 5/20  1.23 s/it  ETA 0:18``"""
    total = max(p.total, 1)
    step = min(max(p.step, 0), total)
    filled = int(width * step / total)
    bar = "#" * filled + "-" * (width - filled)
    s_it = p.s_per_it if p.s_per_it > 0 else (p.elapsed_s / step if step else 0.0)
    remaining = (total - step) + max(p.runs - p.run, 0) * total
    run = f"run {p.run}/{p.runs} " if p.runs > 1 else ""
    line = f"{run}[{bar}] step {step}/{total}"
    if s_it > 0:
        speed = f"{s_it:.2f} s/it" if s_it >= 0.1 else f"{1 / s_it:.1f} it/s"
        line += f"  {speed}  ETA {_fmt_duration(s_it * remaining)}"
    return line


class ProgressBar:
    """A one-line progress bar on stderr: redrawn in place on a terminal; otherwise (a log
    file, a pipe) a line every ``interval_s`` seconds and one at the very end."""

    def __init__(self, stream: IO[str] | None = None, enabled: bool = True,
                 interval_s: float = 5.0) -> None:
        self.stream = stream or sys.stderr
        self.enabled = enabled
        self.tty = bool(getattr(self.stream, "isatty", lambda: False)())
        self.interval_s = interval_s
        self._last_write = -math.inf
        self._shown = 0  # width of the line on screen (tty)

    def update(self, p: Progress) -> None:
        if not self.enabled:
            return
        line = format_progress(p)
        if self.tty:
            self.stream.write("\r" + line.ljust(self._shown) + "\r")
            self._shown = len(line)
            self.stream.flush()
            return
        now = time.monotonic()
        last = p.step >= p.total and p.run >= p.runs
        if last or now - self._last_write >= self.interval_s:
            self._last_write = now
            self.stream.write(line + "\n")
            self.stream.flush()

    def clear(self) -> None:
        if self.tty and self._shown:
            self.stream.write("\r" + " " * self._shown + "\r")
            self.stream.flush()
            self._shown = 0

    def message(self, text: str) -> None:
        """A line for the person (not subject to --quiet when it matters: callers decide)."""
        self.clear()
        self.stream.write(text + "\n")
        self.stream.flush()


@contextlib.contextmanager
def install_cancel_handler(cancel: CancelToken, bar: ProgressBar | None = None) -> Iterator[None]:
    """Ctrl+C (and SIGTERM) cancel the token: the engine stops within one step; images
    already saved stay. A second Ctrl+C interrupts at once."""
    if sys.platform != "win32" and hasattr(signal, "SIGTERM"):
        signals = [signal.SIGINT, signal.SIGTERM]
    else:
        signals = [signal.SIGINT]

    def handler(signum: int, frame: object) -> None:
        if cancel.cancelled:
            raise KeyboardInterrupt
        cancel.cancel()
        note = f"{PROG}: cancelling after the current step (press Ctrl+C again to stop now)"
        if bar is not None:
            bar.message(note)
        else:
            sys.stderr.write(note + "\n")

    try:
        previous = {s: signal.signal(s, handler) for s in signals}
    except ValueError:  # not in the main thread: leave signals alone
        yield
        return
    try:
        yield
    finally:
        for s, h in previous.items():
            signal.signal(s, h)


def quiet_libraries() -> None:
    """Keep diffusers / transformers chatter out of the CLI's output (set before import)."""
    for var, value in (
        ("DIFFUSERS_VERBOSITY", "error"),
        ("TRANSFORMERS_VERBOSITY", "error"),
        ("HF_HUB_DISABLE_PROGRESS_BARS", "1"),
        ("TRANSFORMERS_NO_ADVISORY_WARNINGS", "1"),
    ):
        os.environ.setdefault(var, value)
    warnings.filterwarnings("ignore", category=FutureWarning)
    warnings.filterwarnings("ignore", category=DeprecationWarning)
    warnings.filterwarnings("ignore", category=UserWarning,
                            module=r"(torch|diffusers|transformers)")


# ------------------------------------------------------------------------------ commands
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
            if event.untrained:
                bar.message(f"{PROG}: note: {event.name} is SD Studio's built-in demo model: "
                            "it is untrained, so its images are noise; use --model PATH for a "
                            "real model")
            elif not args.quiet:
                bar.message(f"{PROG}: model {event.name} ({event.arch}) on {event.device}, "
                            f"{event.dtype}")
        elif isinstance(event, ev.LoadProgress):
            if not args.quiet and bar.tty:
                bar.message(f"{PROG}: {event.message}")
        elif isinstance(event, ev.Notice):
            bar.message(f"{PROG}: note: {event.message}")

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
    from sdstudio.core.metadata import to_infotext

    request = getattr(md, "request", None)
    info = getattr(md, "info", None)
    text = getattr(md, "infotext", "") or ""
    if not text and request is not None:
        text = to_infotext(request, info)
    lines = [f"{path}:"] + ["  " + line for line in text.splitlines()]
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
            print(f"{PROG}: error: {one_line(exc)}", file=sys.stderr)
            status = EXIT_BAD_INPUT if _is_bad_input(exc) else EXIT_FAILURE
            continue
        if args.json:
            print(json.dumps(_json_record(path, md), ensure_ascii=False, default=str))
        else:
            print(_describe(path, md))
    return status


# ------------------------------------------------------------------------------- errors
def one_line(exc: BaseException) -> str:
    if isinstance(exc, SDStudioError):
        return str(exc)
    if isinstance(exc, OSError):
        reason = exc.strerror or str(exc) or type(exc).__name__
        where = f": {exc.filename}" if exc.filename else ""
        return f"{reason}{where}".splitlines()[0]
    text = str(exc).strip()
    return (f"{type(exc).__name__}: {text}" if text else type(exc).__name__).splitlines()[0]


def _is_bad_input(exc: BaseException) -> bool:
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


def run_handler(handler: Callable[[argparse.Namespace], int | None], args: argparse.Namespace,
                argv: Sequence[str]) -> int:
    """Run a subcommand: every error becomes one line on stderr and an exit status."""
    try:
        return int(handler(args) or 0)
    except (CancelledError, KeyboardInterrupt):
        print(f"{PROG}: cancelled", file=sys.stderr)
        return EXIT_CANCELLED
    except (SDStudioError, OSError) as exc:
        print(f"{PROG}: error: {one_line(exc)}", file=sys.stderr)
        return EXIT_BAD_INPUT if _is_bad_input(exc) else EXIT_FAILURE
    except MemoryError:
        print(f"{PROG}: error: out of memory; try a smaller size or fewer images per run",
              file=sys.stderr)
        return EXIT_FAILURE
    except Exception as exc:
        log = log_unexpected(exc, argv)
        where = f" (details in {log})" if log else ""
        print(f"{PROG}: error: unexpected {one_line(exc)}{where}", file=sys.stderr)
        return EXIT_FAILURE


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


if __name__ == "__main__":
    sys.exit(main())
