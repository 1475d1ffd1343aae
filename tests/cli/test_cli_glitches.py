"""Small CLI behaviours people hit first: --quiet is quiet, a closed pipe ends the command
without an error, and `sdstudio models` with no folder configured lists the demo model and
says how to add folders."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from sdstudio.core.paths import DEMO_NAME
from tests.cli.conftest import REPO, cli_env


def test_models_without_folders_lists_the_demo_and_explains(
        capsys: pytest.CaptureFixture[str]) -> None:
    from sdstudio.cli import main

    assert main(["models"]) == 0
    out, err = capsys.readouterr()
    assert out.startswith(DEMO_NAME) and "untrained" in out
    assert "no model folders configured" in err and "sdstudio models FOLDER" in err
    assert "Settings" in err and "settings.json" in err
    assert main(["models", "--json"]) == 0
    row = json.loads(capsys.readouterr().out)
    assert row["name"] == DEMO_NAME and row["kind"] == "built-in"


def test_a_closed_pipe_ends_quietly(tmp_path: Path) -> None:
    """`sdstudio models --json | head -c0`: the reader is gone before the first write."""
    proc = subprocess.Popen([sys.executable, "-m", "sdstudio", "models", "--json"], cwd=REPO,
                            env=cli_env(tmp_path), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    assert proc.stdout is not None and proc.stderr is not None
    proc.stdout.close()  # before Python has even started
    err = proc.stderr.read()
    assert proc.wait(timeout=120) == 141
    assert "Broken pipe" not in err and "Traceback" not in err and "error" not in err


def test_run_handler_maps_a_broken_pipe(capsys: pytest.CaptureFixture[str],
                                        monkeypatch: Any) -> None:
    import os

    from sdstudio.cli.errors import EXIT_CLOSED_PIPE, run_handler

    dup2: list[int] = []
    monkeypatch.setattr(os, "dup2", lambda a, b: dup2.append(b))
    monkeypatch.setattr(sys, "stdout", type("Pipe", (), {"fileno": lambda self: 7})())

    def handler(args: Any) -> int:
        raise BrokenPipeError(32, "Broken pipe")

    assert run_handler(handler, Any, []) == EXIT_CLOSED_PIPE
    assert capsys.readouterr().err == ""
    assert dup2 == [7]  # stdout now goes to os.devnull: the final flush cannot fail


def test_generate_quiet_prints_only_the_paths(run_cli: Any, tmp_path: Path) -> None:
    out_dir = tmp_path / "out"
    result = run_cli(["generate", "--prompt", "a cat", "--quiet", "-W", "64", "-H", "64",
                      "--steps", "1", "--out", str(out_dir)])
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""
    lines = result.stdout.splitlines()
    assert len(lines) == 1 and lines[0].endswith(".png") and Path(lines[0]).is_file()
    loud = run_cli(["generate", "--prompt", "a cat", "-W", "64", "-H", "64", "--steps", "1",
                    "--out", str(out_dir)])
    assert "built-in demo model" in loud.stderr  # the note is there without --quiet
