"""The start-up path imports no torch & co.: the real app in a fresh process (offscreen,
empty home) shows its window, adds the panels a start adds next, and has imported none of
torch, diffusers, transformers, accelerate or safetensors by then (bench/startup.py --check
measures the time as well)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def test_window_start_imports_no_torch(tmp_path: Path) -> None:
    env = dict(os.environ, QT_QPA_PLATFORM="offscreen", SDSTUDIO_STARTUP_PROBE="1",
               SDSTUDIO_HOME=str(tmp_path), PYTHONPATH=str(REPO), HF_HUB_OFFLINE="1")
    out = subprocess.run([sys.executable, "-c",
                          "import sys; from sdstudio import app; sys.exit(app.run())"],
                         env=env, cwd=REPO, capture_output=True, text=True, timeout=120)
    lines = [ln for ln in out.stdout.splitlines() if ln.startswith("SDSTUDIO_")]
    assert [ln.split()[0] for ln in lines] == ["SDSTUDIO_SHOWN", "SDSTUDIO_READY"], \
        out.stderr[-2000:]
    assert "torch=False" in lines[0] and "heavy=-" in lines[0], lines[0]
    assert "heavy=-" in lines[1], lines[1]
