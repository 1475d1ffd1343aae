"""The benchmark scripts parse their arguments, and the GPU check refuses without CUDA."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch

BENCH = Path(__file__).resolve().parents[2] / "bench"


@pytest.mark.parametrize("script", ["gpu_check.py", "overhead.py", "sampler_parity.py",
                                    "upscale.py", "busy.py"])
def test_help(script: str) -> None:
    out = subprocess.run([sys.executable, str(BENCH / script), "--help"], capture_output=True,
                         text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert "usage" in out.stdout


@pytest.mark.skipif(torch.cuda.is_available(), reason="a GPU is present")
def test_gpu_check_refuses_without_cuda() -> None:
    out = subprocess.run([sys.executable, str(BENCH / "gpu_check.py")], capture_output=True,
                         text=True, timeout=120)
    assert out.returncode == 2
    assert "no NVIDIA GPU" in out.stderr and "Traceback" not in out.stderr


def test_gpu_check_script_runs_end_to_end_on_cpu(tmp_path: Path) -> None:
    out = subprocess.run(
        [sys.executable, str(BENCH / "gpu_check.py"), "--cpu-smoke", "--size", "64",
         "--steps", "3", "--runs", "1", "--tasks", "txt2img,inpaint", "--memory-modes", "low",
         "--work-dir", str(tmp_path), "--json",
         str(tmp_path / "r.json")],
        capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    import json

    rows = json.loads((tmp_path / "r.json").read_text())["results"]
    assert len(rows) == 2 + 2  # bare per task + engine per (memory mode, task)
    low = [r for r in rows if r["memory_mode"] == "low"]
    assert all("vae_tiling" in r["savers"] for r in low)


def test_upscale_bench_runs_in_smoke_mode(tmp_path: Path) -> None:
    """bench/upscale.py end to end on a tiny ESRGAN: the three runs, their shapes, ratios."""
    import json

    out = subprocess.run(
        [sys.executable, str(BENCH / "upscale.py"), "--smoke", "--work-dir", str(tmp_path),
         "--json", str(tmp_path / "r.json")],
        capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    data = json.loads((tmp_path / "r.json").read_text())
    rows = {r["name"]: r for r in data["results"]}
    assert set(rows) == {"untiled", "tiled-same", "tiled"}
    assert rows["untiled"]["tiles"] == 1 and rows["tiled-same"]["tiles"] == 4
    assert rows["tiled"]["out"] == [1, 3, 256, 256]
    assert all(r["time_s"] > 0 and r["peak_bytes"] >= 0 for r in rows.values())
    assert set(data["ratios"]) >= {"tiled_same_vs_untiled_time", "tiled_same_vs_untiled_peak"}


def test_busy_bench_runs_in_smoke_mode(tmp_path: Path) -> None:
    """bench/busy.py's CLI and window arms (real processes, the real window offscreen)."""
    env = {k: v for k, v in __import__("os").environ.items() if k != "OMP_NUM_THREADS"}
    out = subprocess.run(
        [sys.executable, str(BENCH / "busy.py"), "--smoke", "--situations", "idle",
         "--arms", "cli,window", "--images", "2", "--work-dir", str(tmp_path)],
        capture_output=True, text=True, timeout=600, env=env)
    assert out.returncode == 0, out.stderr[-2000:]
    assert "idle   cli" in out.stdout and "idle   window" in out.stdout
    assert "ratios to the idle CLI" in out.stdout
