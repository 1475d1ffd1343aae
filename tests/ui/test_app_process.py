"""The real app in a subprocess: start-up before torch, and closing during a generation."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

CLOSE_SCRIPT = r"""
import sys, time
from sdstudio import app

def started(window):
    p = window.prompt_panel
    p.prompt_edit.setPlainText("closing test")
    p.set_size(128, 128)
    p.widget("steps").setValue(150)
    p.widget("seed").setText("3")
    state = {"closed": False}

    def on_progress(job_id, event):
        if not state["closed"]:
            state["closed"] = True
            print(f"CLOSING {time.time():.6f}", flush=True)
            window.close()

    window.queue.jobProgress.connect(on_progress)
    window.generate()

sys.exit(app.run(on_started=started))
"""


def _env(tmp_path: Path) -> dict[str, str]:
    env = dict(os.environ)
    env.update(QT_QPA_PLATFORM="offscreen", SDSTUDIO_HOME=str(tmp_path / "home"),
               PYTHONPATH=str(ROOT) + os.pathsep + env.get("PYTHONPATH", ""))
    env.pop("SDSTUDIO_CONFIG_DIR", None)
    return env


def test_closing_during_a_generation_exits_0_quickly(tmp_path: Path, tiny_model: Path) -> None:
    env = _env(tmp_path)
    config = tmp_path / "home" / "config"
    config.mkdir(parents=True)
    (config / "settings.json").write_text(json.dumps(
        {"engine": {"default_model": str(tiny_model)}, "output_dir": str(tmp_path / "out")}))
    proc = subprocess.Popen([sys.executable, "-c", CLOSE_SCRIPT], env=env, cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    closing_at = None
    assert proc.stdout is not None
    for line in proc.stdout:
        if line.startswith("CLOSING"):
            closing_at = float(line.split()[1])
            break
    try:
        rc = proc.wait(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    ended = time.time()
    stderr = proc.stderr.read() if proc.stderr else ""
    assert closing_at is not None, f"no generation started; stderr:\n{stderr[-3000:]}"
    assert rc == 0, stderr[-3000:]
    assert "QThread: Destroyed" not in stderr
    assert "Fatal Python error" not in stderr
    assert ended - closing_at < 2.0, f"took {ended - closing_at:.2f} s to exit after close"


@pytest.mark.parametrize("run", [1])
def test_window_is_shown_before_torch_is_imported(tmp_path: Path, run: int) -> None:
    env = _env(tmp_path)
    env["SDSTUDIO_STARTUP_PROBE"] = "1"
    out = subprocess.run([sys.executable, "-c", "import sys; from sdstudio import app; "
                          "sys.exit(app.run())"], env=env, cwd=ROOT, capture_output=True,
                         text=True, timeout=60)
    assert out.returncode == 0, out.stderr[-2000:]
    line = next(ln for ln in out.stdout.splitlines() if ln.startswith("SDSTUDIO_SHOWN"))
    assert " torch=False " in f"{line} "
