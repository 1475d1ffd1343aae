"""CLI subcommands ``sdstudio models`` and ``sdstudio convert`` (listed in
``sdstudio.cli.parser.register_subcommands``; ``register(subparsers)`` adds them).

``models`` imports no torch (header-only architecture detection); ``convert`` imports it only
when the conversion needs it.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any


def register(subparsers: Any) -> None:
    models = subparsers.add_parser(
        "models", help="list the models in the model folders",
        description="List single-file checkpoints and diffusers folders found in the model "
                    "folders (default: the folders in the settings), with architecture, size "
                    "and AUTOMATIC1111's short hash (first 10 hex digits of the sha256).")
    models.add_argument("folders", nargs="*", metavar="FOLDER",
                        help="folders to scan (default: settings' model folders)")
    models.add_argument("--models-dir", action="append", default=None, metavar="DIR",
                        dest="models_dir", help="another folder to scan (repeatable)")
    models.add_argument("--hash", action="store_true",
                        help="compute missing hashes (reads every file once; cached after)")
    models.add_argument("--json", action="store_true", help="one JSON object per model")
    models.set_defaults(handler=cmd_models)

    convert = subparsers.add_parser(
        "convert", help="convert model files (.ckpt -> .safetensors, file <-> diffusers folder)",
        description="IN .ckpt/.pt + OUT *.safetensors: re-save through the safe loader. "
                    "IN single file + OUT folder: save as a diffusers folder. "
                    "IN diffusers folder + OUT *.safetensors: one single file (LDM layout).")
    convert.add_argument("input", metavar="IN")
    convert.add_argument("output", metavar="OUT")
    convert.set_defaults(handler=cmd_convert)


def _human(size: int) -> str:
    value = float(size)
    for unit in ("B", "KB", "MB", "GB"):
        if value < 1024 or unit == "GB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{size} B"


def _default_dirs() -> list[str]:
    """SD Studio's own checkpoint folder (where `sdstudio download` puts them), then the
    configured model folders."""
    from sdstudio.core.paths import search_dirs
    from sdstudio.core.settings import load_settings

    return list(search_dirs("checkpoint", load_settings().engine))


def cmd_models(args: argparse.Namespace) -> int:
    from sdstudio.core.errors import ModelError, terminal_text
    from sdstudio.engine import library

    dirs = [*args.folders, *(args.models_dir or [])] or _default_dirs()
    if not dirs:
        return _demo_only(args)
    missing = [d for d in dirs if not Path(d).expanduser().is_dir()]
    if missing:
        raise ModelError(f"not a folder: {missing[0]}")
    entries = library.scan(dirs)
    if args.hash:
        entries = library.hash_all(entries)
    if args.json:
        for e in entries:
            print(json.dumps({"name": e.name, "path": str(e.path), "kind": e.kind,
                              "arch": e.arch, "size_bytes": e.size_bytes,
                              "short_hash": e.short_hash, "problem": e.problem}))
        return 0
    if not entries:
        print(terminal_text(f"no models found in {', '.join(dirs)}"), file=sys.stderr)
        return 0
    # names come from file names and metadata: control and bidi characters are shown escaped
    names = [terminal_text(e.name) for e in entries]
    width = max(len(n) for n in names)
    for e, name in zip(entries, names, strict=True):
        sha = e.short_hash or ("-" * 10)
        line = (f"{name:<{width}}  {terminal_text(e.arch):<12} {e.kind:<11} "
                f"{_human(e.size_bytes):>9}  {sha}")
        if e.problem:
            line += f"  ({terminal_text(e.problem)})"
        print(line)
    return 0


def _demo_only(args: argparse.Namespace) -> int:
    """No model folder given or configured: the built-in demo model is what there is; say
    how to add real ones."""
    from sdstudio.core.paths import DEMO_NAME, demo_model_dir
    from sdstudio.core.settings import settings_path

    demo = demo_model_dir()
    if args.json:
        print(json.dumps({"name": DEMO_NAME, "path": str(demo), "kind": "built-in",
                          "arch": "sd1", "size_bytes": None, "short_hash": "",
                          "problem": "untrained: its images are noise"}))
    else:
        print(f"{DEMO_NAME}  sd1  built-in  (untrained: its images are noise)")
    print("sdstudio: no model folders configured. List one with `sdstudio models FOLDER`; "
          "to use it everywhere add it in the window (Settings… > Models) or to "
          f'"model_dirs" in {settings_path()}. A single file works too: '
          "`sdstudio generate --model FILE.safetensors ...`; to get one: "
          "`sdstudio download --list`", file=sys.stderr)
    return 0


def cmd_convert(args: argparse.Namespace) -> int:
    from sdstudio.core.errors import terminal_text
    from sdstudio.engine.convert import convert

    out = convert(Path(args.input), Path(args.output),
                  log=lambda m: print(terminal_text(m), file=sys.stderr))
    print(out)
    return 0
