"""``python -m sdstudio`` / ``sdstudio``: without arguments, the desktop window (on a machine
without a display, one image from the command line instead); with a subcommand
(``generate``, ``info``, ``batch``...), the headless CLI (see sdstudio.cli)."""

from __future__ import annotations

import importlib.util
import os
import sys
from collections.abc import Mapping, Sequence


def _has_window() -> bool:
    try:
        return importlib.util.find_spec("sdstudio.app") is not None
    except (ImportError, ValueError):
        return False


def has_display(platform: str = sys.platform, env: Mapping[str, str] = os.environ) -> bool:
    """Whether a window can be shown: always on Windows and macOS; on Linux and the BSDs when
    an X11 or Wayland session is there (or QT_QPA_PLATFORM names a platform explicitly)."""
    if platform.startswith(("win", "darwin", "cygwin")):
        return True
    return any(env.get(var) for var in ("DISPLAY", "WAYLAND_DISPLAY", "QT_QPA_PLATFORM"))


def first_start_args() -> list[str]:
    """The one image made without a window: on the demo model (no model configured) a small
    quick one — its images are noise anyway; on a configured model the usual defaults."""
    from sdstudio import cli
    from sdstudio.core.settings import load_settings

    args = ["generate", "--prompt", cli.DEFAULT_PROMPT]
    if not load_settings().engine.default_model:
        args += ["--width", "256", "--height", "256", "--steps", "10"]
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if not args:
        window = _has_window()
        if window and has_display():
            from sdstudio.app import run

            return int(run() or 0)
        # No window (not built, or no display to show it on): one image from the command
        # line on the configured model, else the demo model, so a first start shows it works.
        from sdstudio import cli

        why = ("no display was found (DISPLAY / WAYLAND_DISPLAY unset)" if window
               else "the window is not available yet")
        print(f"SD Studio: {why}; generating one image from the command line instead "
              "(see: python -m sdstudio --help)", file=sys.stderr)
        return cli.main(first_start_args())
    from sdstudio import cli

    return cli.main(args)


if __name__ == "__main__":
    sys.exit(main())
