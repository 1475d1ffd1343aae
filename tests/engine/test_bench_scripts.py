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
    """The GPU check's own code on the CPU (tiny models): bare diffusers and the engine in
    its arms, txt2img at two sizes, inpaint and the hires fix, the goals marked."""
    out = subprocess.run(
        [sys.executable, str(BENCH / "gpu_check.py"), "--cpu-smoke", "--archs", "sd15",
         "--arms", "bare,default,compile,low", "--tasks", "txt2img,inpaint,hires",
         "--steps", "3", "--runs", "1", "--work-dir", str(tmp_path), "--json",
         str(tmp_path / "r.json")],
        capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    import json

    data = json.loads((tmp_path / "r.json").read_text())
    rows = data["results"]
    # bare / default / low: 3 tasks + txt2img at the other size; compile: txt2img
    assert len(rows) == 4 + 4 + 1 + 4
    assert {(r["arm"], r["task"], r["size"]) for r in rows if r["arm"] == "compile"} == {
        ("compile", "txt2img", 64)}
    low = [r for r in rows if r["arm"] == "low"]
    assert all("vae_tiling" in r["savers"] for r in low)
    assert all(r["it_s"] > 0 for r in rows)
    hires = [r for r in rows if r["task"] == "hires" and r["arm"] == "default"]
    assert any("hires fix" in n for n in hires[0]["notes"])
    compiled = next(r for r in rows if r["arm"] == "compile")
    assert any("CUDA only" in n for n in compiled["notes"])  # not compiled on the CPU
    marked = {g["goal"]: g for g in data["goals"]}
    assert marked["sd15 low-VRAM peak <= 2.5 GiB"]["value"] is None  # no VRAM on the CPU
    assert "Goals:" in out.stdout


def test_gpu_check_plan_and_goals() -> None:
    sys.path.insert(0, str(BENCH))
    try:
        import gpu_check
    finally:
        sys.path.remove(str(BENCH))
    cells = gpu_check.plan_cells(list(gpu_check.ARCHS), list(gpu_check.ARMS),
                                 list(gpu_check.TASKS))
    by = {(c.arch, c.arm, c.task, c.size) for c in cells}
    assert ("sd15", "bare", "txt2img", 512) in by and ("sd15", "low", "txt2img", 1024) in by
    assert ("sdxl", "default", "inpaint", 1024) in by and ("sdxl", "bare", "txt2img", 512) in by
    assert ("sdxl", "low", "hires", 512) in by  # the hires fix: 512 -> 1024
    assert [c for c in cells if c.arm == "compile"] == [
        gpu_check.Cell("sd15", "compile", "txt2img", 512),
        gpu_check.Cell("sdxl", "compile", "txt2img", 1024)]  # one compilation per model
    assert len(cells) == 2 * (3 * 5 + 1)

    def row(arch: str, arm: str, it_s: float, peak: float = 1.0) -> dict[str, object]:
        return {"arch": arch, "arm": arm, "task": "txt2img", "size": 512, "it_s": it_s,
                "peak_gib": peak}

    marked = {g["goal"]: g["met"] for g in gpu_check.goals([
        row("sd15", "bare", 10.0), row("sd15", "default", 9.6), row("sd15", "compile", 12.0),
        row("sd15", "low", 5.0, peak=2.4), row("sdxl", "low", 2.0, peak=4.5)])}
    assert marked == {
        "SD Studio default >= 0.95x bare it/s (sd15 txt2img 512)": True,
        "Speed: compile >= 1.3x bare it/s (sd15 txt2img 512)": False,  # 1.2x
        "sd15 low-VRAM peak <= 2.5 GiB": True,
        "sdxl low-VRAM peak <= 4.0 GiB": False,
    }


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


def test_window_bench_runs_in_smoke_mode(tmp_path: Path) -> None:
    """bench/window.py: the CLI and the real window (offscreen), the ratio and the previews."""
    import os

    env = {k: v for k, v in os.environ.items() if k not in ("OMP_NUM_THREADS", "DISPLAY")}
    out = subprocess.run(
        [sys.executable, str(BENCH / "window.py"), "--smoke", "--work-dir", str(tmp_path)],
        capture_output=True, text=True, timeout=600, env=env)
    assert out.returncode == 0, out.stderr[-2000:]
    assert "goal window <= 1.05x the CLI:" in out.stdout
    assert "previews (last window run): dropped" in out.stdout and "skipped" in out.stdout


def test_precision_bench_times_the_unet_variants(tmp_path: Path,
                                                 tiny_models: dict[str, Path]) -> None:
    """bench/precision.py --unet on the tiny model: fp32 first, then the variants asked for,
    the blocked bf16 attention among them; an unknown variant is refused."""
    cmd = [sys.executable, str(BENCH / "precision.py"), "--unet", "--model",
           str(tiny_models["sd1"]), "--size", "64", "--repeats", "1"]
    out = subprocess.run([*cmd, "--variants", "bf16-channels_last-blocked",
                          "--json", str(tmp_path / "r.json")],
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    import json

    steps = json.loads((tmp_path / "r.json").read_text())["unet_step_s"]
    assert list(steps) == ["fp32", "bf16-channels_last-blocked"]
    assert all(v > 0 for v in steps.values())
    bad = subprocess.run([*cmd, "--variants", "fp64"], capture_output=True, text=True,
                         timeout=300)
    assert bad.returncode != 0 and "unknown variant" in bad.stderr
