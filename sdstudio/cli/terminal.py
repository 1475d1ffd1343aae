"""What the CLI does on the terminal while it works: the progress bar, Ctrl+C, and keeping the
libraries' chatter out of the output."""

from __future__ import annotations

import contextlib
import math
import os
import signal
import sys
import time
import warnings
from collections.abc import Iterator
from typing import IO, TYPE_CHECKING

from sdstudio.cli.common import PROG
from sdstudio.core.cancel import CancelToken

if TYPE_CHECKING:
    from sdstudio.core.events import Progress


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
    if p.phase:  # the hires fix: which pass, and its own steps
        line += f" ({p.phase_text})"
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
def install_cancel_handler(cancel: CancelToken, bar: ProgressBar | None = None,
                           note: str = "") -> Iterator[None]:
    """Ctrl+C (and SIGTERM) cancel the token: the engine stops within one step; images
    already saved stay. A second Ctrl+C interrupts at once. ``note`` replaces the line
    printed on the first Ctrl+C."""
    if sys.platform != "win32" and hasattr(signal, "SIGTERM"):
        signals = [signal.SIGINT, signal.SIGTERM]
    else:
        signals = [signal.SIGINT]

    def handler(signum: int, frame: object) -> None:
        if cancel.cancelled:
            raise KeyboardInterrupt
        cancel.cancel()
        line = note or f"{PROG}: cancelling after the current step (press Ctrl+C again to stop now)"
        if bar is not None:
            bar.message(line)
        else:
            sys.stderr.write(line + "\n")

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
