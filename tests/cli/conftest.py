"""Helpers for running the CLI in a subprocess, as a person would."""

from __future__ import annotations

import os
import struct
import subprocess
import sys
import zlib
from collections.abc import Callable
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


def cli_env(home: Path) -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        SDSTUDIO_HOME=str(home),
        HF_HUB_OFFLINE="1",
        TRANSFORMERS_OFFLINE="1",
        QT_QPA_PLATFORM="offscreen",
        PYTHONUNBUFFERED="1",
    )
    return env


RunCli = Callable[..., "subprocess.CompletedProcess[str]"]


def _run_cli(args: list[str], home: Path, cwd: Path | None = None,
             timeout: float = 240) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "sdstudio", *args],
        cwd=cwd or REPO, env=cli_env(home), capture_output=True, text=True, timeout=timeout,
    )


def _chunk(kind: bytes, data: bytes) -> bytes:
    return (struct.pack(">I", len(data)) + kind + data
            + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF))


def write_bomb_png(path: Path, side: int = 20000) -> Path:
    """A small file whose header claims side x side pixels (a decompression bomb)."""
    ihdr = struct.pack(">IIBBBBB", side, side, 8, 0, 0, 0, 0)
    idat = zlib.compress(b"\x00" * (side + 1) * 4, 9)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", ihdr) + _chunk(b"IDAT", idat)
                     + _chunk(b"IEND", b""))
    return path


@pytest.fixture(scope="session")
def run_cli(cli_home: Path) -> RunCli:
    """``run_cli(args, home=cli_home, cwd=REPO, timeout=240)``: ``python -m sdstudio ARGS``."""

    def run(args: list[str], home: Path | None = None, cwd: Path | None = None,
            timeout: float = 240) -> subprocess.CompletedProcess[str]:
        return _run_cli(args, home or cli_home, cwd, timeout)

    return run


@pytest.fixture(scope="session")
def cli_environment(cli_home: Path) -> dict[str, str]:
    return cli_env(cli_home)


@pytest.fixture(scope="session")
def cli_home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One SDSTUDIO_HOME for the CLI subprocesses (the demo model is built there once)."""
    return tmp_path_factory.mktemp("cli-home")


@pytest.fixture(scope="session")
def bad_files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    from PIL import Image

    root = tmp_path_factory.mktemp("bad-inputs")
    Image.new("RGB", (64, 64), "red").save(root / "init.png")
    Image.new("L", (64, 64), 255).save(root / "mask64.png")
    Image.new("L", (32, 48), 255).save(root / "mask32.png")
    (root / "notimage.png").write_text("this is not an image\n")
    data = (root / "init.png").read_bytes()
    (root / "truncated.png").write_bytes(data[: len(data) // 2])
    write_bomb_png(root / "bomb.png")
    (root / "notamodel").mkdir()
    (root / "notamodel" / "readme.txt").write_text("hello\n")
    return {p.stem if p.is_file() else p.name: p for p in root.iterdir()}
