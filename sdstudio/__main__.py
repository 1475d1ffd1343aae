"""``python -m sdstudio`` / ``sdstudio``: without arguments, the desktop window; with a
subcommand (``generate``, ``info``, ``batch``...), the headless CLI (see sdstudio.cli)."""

from __future__ import annotations

import importlib.util
import sys
from collections.abc import Sequence


def _has_window() -> bool:
    try:
        return importlib.util.find_spec("sdstudio.app") is not None
    except (ImportError, ValueError):
        return False


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if not args:
        if _has_window():
            from sdstudio.app import run

            return int(run() or 0)
        # Until the window exists: one image on the configured (or demo) model.
        from sdstudio import cli

        print("SD Studio: the window is not available yet; generating one image from the "
              "command line instead (see: python -m sdstudio --help)", file=sys.stderr)
        return cli.main(["generate", "--prompt", cli.DEFAULT_PROMPT])
    from sdstudio import cli

    return cli.main(args)


if __name__ == "__main__":
    sys.exit(main())
