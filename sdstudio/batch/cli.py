"""``sdstudio batch LIST``: headless batch generation from a prompt list.

Registered by ``sdstudio.cli.parser.register_subcommands``. Exit status: 0 when every image was made
(or was already there); 1 when an image failed; 2 for bad lines (unless ``--skip-bad-lines``),
a changed list without ``--resume`` / ``--restart``, an output folder another batch is running
into (one line naming it: pid, host, start, command line or window), or bad arguments; 130 when
interrupted.

Many GPUs: ``accelerate launch --num_processes N -m sdstudio batch LIST ...`` splits the images
between N processes (see sdstudio/batch/distributed.py).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path
from typing import Any, TextIO

from sdstudio.batch.distributed import Processes, detect_processes
from sdstudio.batch.events import (
    BatchEvent,
    BatchPlanned,
    BatchSummary,
    UnitDone,
    UnitEngineEvent,
    UnitFailed,
    UnitStarted,
)
from sdstudio.batch.plan import (
    SEED_POLICIES,
    BatchOptions,
    count_units,
    fingerprint,
    plan_units,
)
from sdstudio.cli.request_args import (
    add_engine_arguments,
    add_request_arguments,
    request_from_args,
)
from sdstudio.core.errors import SDStudioError, describe_error, terminal_text
from sdstudio.core.events import LoadProgress, ModelReady, Notice, Progress
from sdstudio.core.request import GenerationRequest

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 130

def register(subparsers: Any) -> None:
    p: argparse.ArgumentParser = subparsers.add_parser(
        "batch",
        help="generate images from a prompt list (txt / csv / jsonl), resumable",
        description=(
            "Generate every prompt of a list into one folder. Killed or interrupted? Run the "
            "same command again: it resumes at the first missing image, without duplicates."
        ),
    )
    add_arguments(p)
    p.set_defaults(func=run, handler=run)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("list", metavar="LIST", help="prompt list: .txt (A1111 options), .csv, .jsonl")
    p.add_argument("--out", metavar="DIR", default=None,
                   help="output folder (default: <output folder>/batch-<list name>)")
    p.add_argument("--per-prompt", type=int, default=1, metavar="N", help="images per prompt")
    p.add_argument("--seed-policy", choices=SEED_POLICIES, default="increment",
                   help="fixed: same seed for every prompt; increment: +1 per image "
                        "(default); random: a random seed per image")
    p.add_argument("--pattern", default=None,
                   help="file name pattern: {index} {seed} {prompt} {model} {date} ... "
                        "(default: the settings' pattern)")
    group = p.add_mutually_exclusive_group()
    group.add_argument("--resume", action="store_true",
                       help="the list changed: keep images of unchanged lines, make the rest")
    group.add_argument("--restart", action="store_true",
                       help="start the batch over (existing images are kept, never overwritten)")
    p.add_argument("--skip-bad-lines", action="store_true",
                   help="run the good lines when some lines are bad")
    p.add_argument("--dry-run", action="store_true",
                   help="check the list and show the plan without generating")
    p.add_argument("--quiet", "-q", action="store_true", help="no progress bar")
    add_engine_arguments(p)
    add_request_arguments(p, prompt_required=False, line_defaults=True)


def defaults_from_args(args: argparse.Namespace) -> GenerationRequest:
    """The request options as the defaults of every line (not validated)."""
    return request_from_args(args, base=GenerationRequest(prompt=""))


def default_out_dir(list_path: Path) -> Path:
    from sdstudio.core.settings import load_settings

    return load_settings().output_path / f"batch-{list_path.stem}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="sdstudio batch")
    add_arguments(parser)
    return run(parser.parse_args(argv))


def run(args: argparse.Namespace) -> int:
    err = sys.stderr
    try:
        return _run(args, err)
    except KeyboardInterrupt:
        print("\nsdstudio: interrupted: run the same command again to resume", file=err)
        return EXIT_INTERRUPTED
    except SDStudioError as exc:
        print(_error_line(exc), file=err)
        return EXIT_USAGE


def _error_line(exc: BaseException, what: str = "") -> str:
    return f"sdstudio: error: {what}{describe_error(exc)}"


def _run(args: argparse.Namespace, err: TextIO) -> int:
    from sdstudio.batch.runner import BatchControl, BatchRunner, ListChangedError
    from sdstudio.core.prompts import parse_prompt_list
    from sdstudio.core.settings import load_settings

    list_path = Path(args.list)
    try:
        defaults = defaults_from_args(args).validated()
    except SDStudioError as exc:
        print(_error_line(exc, "bad default: "), file=err)
        return EXIT_USAGE
    prompts = parse_prompt_list(list_path, defaults)
    shown = terminal_text(str(list_path))  # the list's lines are shown escaped, like its name
    for warning in prompts.warnings:
        print(f"warning: {shown}: {terminal_text(str(warning))}", file=err)
    if prompts.errors:
        print(f"{shown}: {len(prompts.errors)} bad line(s):", file=err)
        print(_indent(terminal_text(prompts.error_report(), keep="\n")), file=err)
        if not args.skip_bad_lines:
            print("fix the file, or pass --skip-bad-lines to run the good lines", file=err)
            return EXIT_USAGE
    settings = load_settings()
    out_dir = Path(args.out) if args.out else default_out_dir(list_path)
    options = BatchOptions(
        out_dir=out_dir,
        per_prompt=args.per_prompt,
        seed_policy=args.seed_policy,
        pattern=args.pattern or settings.filename_pattern,
        skip_bad_lines=args.skip_bad_lines,
        on_change="resume" if args.resume else "restart" if args.restart else None,
        restart=bool(args.restart),
    )
    try:
        options.check()
        from sdstudio.storage.naming import check_pattern

        check_pattern(options.pattern)
    except SDStudioError as exc:
        print(_error_line(exc), file=err)
        return EXIT_USAGE
    except ValueError as exc:  # BatchOptions.check's, worded for the person: no class name
        print(_error_line(SDStudioError(str(exc))), file=err)
        return EXIT_USAGE
    if args.dry_run:
        return _dry_run(prompts, options, err)

    from sdstudio.cli import (
        check_model_arg,
        engine_settings_from_args,
        install_cancel_handler,
        quiet_libraries,
    )

    if args.model:
        check_model_arg(args.model)
    processes = detect_processes()
    quiet_libraries()
    from sdstudio.engine import Engine  # torch is imported here, after every cheap check

    engine_settings = engine_settings_from_args(args, settings).replace(preview_every=0)
    if processes.world > 1 and processes.device and not args.device:
        engine_settings = engine_settings.replace(device=processes.device)
    engine = Engine(engine_settings)
    show = (not args.quiet) and processes.is_main
    bar = ProgressBar(err, enabled=show, label=f"[rank 0/{processes.world}] "
                      if processes.world > 1 else "")
    control = BatchControl()
    runner = BatchRunner(engine, prompts, options, on_event=bar.on_event, processes=processes,
                         defaults=defaults, control=control)
    try:
        runner.prepare()
    except ListChangedError as exc:
        print(_error_line(exc), file=err)
        print("run again with --resume or --restart", file=err)
        return EXIT_USAGE
    with install_cancel_handler(control.cancel_token):
        summary = runner.run()
    bar.close()
    code = EXIT_OK if summary.ok else EXIT_FAILED
    if summary.cancelled:
        code = EXIT_INTERRUPTED
    if prompts.errors and not args.skip_bad_lines:
        code = EXIT_USAGE
    _report(summary, processes, out_dir, err)
    return code


def _report(summary: BatchSummary, processes: Processes, out_dir: Path, err: TextIO) -> None:
    if processes.world > 1:
        print(f"rank {processes.rank}: {summary.line()}", file=err)
        processes.wait_for_everyone()
        if processes.is_main:
            from sdstudio.batch.runner import merged_summary

            merged = merged_summary(out_dir)
            print(f"all {processes.world} processes: {merged['done']} of {merged['total']} "
                  f"images done, {merged['failed']} failed", file=err)
    else:
        print(summary.line(), file=err)
    for unit, reason in summary.failures:
        print(f"  failed: line {unit.line_no} image {unit.image + 1}: {terminal_text(reason)}",
              file=err)
    if processes.is_main:
        print(f"images in {terminal_text(str(out_dir))}", file=err)


def _dry_run(prompts: Any, options: BatchOptions, err: TextIO) -> int:
    from sdstudio.storage.manifest import read_manifest

    total = count_units(prompts, options.per_prompt)
    state = read_manifest(options.out_dir)
    print(f"{len(prompts.items)} prompts, {total} images into "
          f"{terminal_text(str(options.out_dir))}", file=sys.stdout)
    if state.header is None:
        print("nothing done yet: a new batch would start", file=sys.stdout)
    elif state.header.fingerprint == fingerprint(prompts, options.per_prompt,
                                                 options.seed_policy, state.header.version):
        done = len(state.done())
        print(f"{done} already done: a run would resume with {total - done} images",
              file=sys.stdout)
    elif options.on_change == "resume":
        keys = {(key, image) for key, image in state.done()}
        units = plan_units(prompts, options.per_prompt, [0] * total, state.header.version)
        kept = sum(1 for u in units if u.slot in keys)
        print(f"the list changed: --resume keeps {kept} images of unchanged lines and makes "
              f"{total - kept}", file=sys.stdout)
    elif options.restart:
        print(f"--restart starts the batch over: {total} images to make (the "
              f"{len(state.done())} already there stay on disk)", file=sys.stdout)
    else:
        print("the folder holds a batch of a different list or options: "
              "--resume or --restart needed", file=sys.stdout)
    for item in prompts.items[:20]:
        r = item.request
        prompt = terminal_text(repr(r.prompt[:60]))  # repr: quoted; control and bidi: escaped
        print(f"  line {item.line_no}: {prompt} {r.width}x{r.height} {r.steps} steps "
              f"{terminal_text(r.sampler)} cfg {r.cfg_scale}", file=sys.stdout)
    if len(prompts.items) > 20:
        print(f"  ... and {len(prompts.items) - 20} more", file=sys.stdout)
    return EXIT_OK if prompts.ok or options.skip_bad_lines else EXIT_USAGE


def _indent(text: str) -> str:
    return "\n".join("  " + line for line in text.splitlines())


class ProgressBar:
    """A one-line progress bar on stderr (a line per image when stderr is not a terminal)."""

    def __init__(self, stream: TextIO, enabled: bool = True, label: str = "") -> None:
        self.stream = stream
        self.enabled = enabled
        self.label = label
        self.tty = bool(getattr(stream, "isatty", lambda: False)())
        self.assigned = 0
        self.finished = 0
        self.failed = 0
        self.started = time.perf_counter()
        self.step = ""
        self.current = ""
        self._last_draw = 0.0
        self._width = 0

    def on_event(self, event: BatchEvent) -> None:
        if isinstance(event, BatchPlanned):
            self.assigned = event.assigned
            self.started = time.perf_counter()
            if self.enabled:
                notes = []
                if event.already_done:
                    notes.append(f"{event.already_done} already done")
                if event.adopted:
                    notes.append(f"{event.adopted} recovered after a crash")
                if event.removed_temp_files:
                    notes.append(f"{event.removed_temp_files} stale temp files removed")
                extra = f" ({', '.join(notes)})" if notes else ""
                self._print(f"{self.label}{event.total} images in the batch{extra}; "
                            f"{event.assigned} to make")
        elif isinstance(event, UnitStarted):
            self.current = f"line {event.unit.line_no}"
            self.step = ""
            self._draw()
        elif isinstance(event, UnitEngineEvent):
            inner = event.event
            if isinstance(inner, Progress):
                self.step = f"step {inner.step}/{inner.total}"
                self._draw(throttle=True)
            elif isinstance(inner, LoadProgress):
                self.step = f"loading model: {terminal_text(inner.message)}"
                self._draw(throttle=True)
            elif isinstance(inner, ModelReady):
                self.step = f"model {terminal_text(inner.name)} on {inner.device}"
                self._draw()
            elif isinstance(inner, Notice):
                self._print(f"{self.label}note: {terminal_text(inner.message)}")
        elif isinstance(event, UnitDone):  # may come while the next unit runs (saving
            self.finished += 1               # overlaps it): its step stays on the line
            self._draw(line_mode_print=True)
        elif isinstance(event, UnitFailed):
            self.finished += 1
            self.failed += 1
            self._print(f"{self.label}line {event.unit.line_no} image {event.unit.image + 1} "
                        f"failed: {terminal_text(event.reason)}")

    def _draw(self, throttle: bool = False, line_mode_print: bool = False) -> None:
        if not self.enabled:
            return
        now = time.perf_counter()
        if not self.tty:
            if line_mode_print:
                self.stream.write(self._text(now) + "\n")
                self.stream.flush()
            return
        if throttle and now - self._last_draw < 0.1:
            return
        self._last_draw = now
        text = self._text(now)
        pad = max(0, self._width - len(text))
        self._width = len(text)
        self.stream.write("\r" + text + " " * pad)
        self.stream.flush()

    def _text(self, now: float) -> str:
        n, total = self.finished, max(self.assigned, 1)
        width = 24
        filled = int(width * n / total)
        elapsed = now - self.started
        per = elapsed / n if n else 0.0
        eta = per * (self.assigned - n) if n else 0.0
        rate = f" {per:.2f} s/image ETA {_hms(eta)}" if n else ""
        tail = f" {self.current} {self.step}".rstrip()
        failed = f" ({self.failed} failed)" if self.failed else ""
        return (f"{self.label}[{'#' * filled}{'-' * (width - filled)}] {n}/{self.assigned}"
                f"{failed}{rate}{tail}")

    def _print(self, text: str) -> None:
        if not self.enabled:
            return
        if self.tty and self._width:
            self.stream.write("\r" + " " * self._width + "\r")
            self._width = 0
        self.stream.write(text + "\n")
        self.stream.flush()

    def close(self) -> None:
        if self.enabled and self.tty and self._width:
            self.stream.write("\n")
            self.stream.flush()
            self._width = 0


def _hms(seconds: float) -> str:
    s = int(seconds + 0.5)
    return f"{s // 3600}:{s % 3600 // 60:02d}:{s % 60:02d}"


if __name__ == "__main__":  # pragma: no cover
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    raise SystemExit(main())
