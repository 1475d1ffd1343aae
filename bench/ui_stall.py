"""How long does the GUI event loop stall while the worker loads a model and generates?

A QTimer heartbeat fires every 5 ms in the real main window while the real worker (and
engine) first starts and loads the model, then generates. Every gap between two heartbeats
beyond the timer interval is time the window could not respond. Goal: the longest gap at most
50 ms, and the 99th percentile under 17 ms (one frame at 60 Hz).

    python bench/ui_stall.py                    # the tiny model, 64x64, 4 steps
    python bench/ui_stall.py --sd15-random      # real SD 1.5 architecture, random weights
    python bench/ui_stall.py --append docs/benchmarks.md

The baseline printed first is the same heartbeat with an idle window (the timer's own jitter).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("DIFFUSERS_VERBOSITY", "error")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")

INTERVAL_MS = 5


def build_sd15_random(folder: Path) -> Path:
    """Real SD 1.5 architecture (resources/model_configs/sd15) with random weights, saved once
    as a diffusers folder. Uses the engine's builder when it provides one."""
    try:
        from sdstudio.engine import tiny

        builder = getattr(tiny, "build_sd15_random", None)
        if builder is not None:
            return Path(builder(folder))
    except ImportError:
        pass
    if (folder / "model_index.json").is_file() and (folder / "unet").is_dir() and any(
            (folder / "unet").glob("*.safetensors")):
        return folder
    import shutil

    import torch
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    configs = ROOT / "resources" / "model_configs" / "sd15"
    tmp = folder.with_name(folder.name + ".partial")
    shutil.rmtree(tmp, ignore_errors=True)
    shutil.copytree(configs, tmp)
    torch.manual_seed(0)
    unet = UNet2DConditionModel.from_config(UNet2DConditionModel.load_config(configs / "unet"))
    unet.save_pretrained(tmp / "unet")
    del unet
    vae = AutoencoderKL.from_config(AutoencoderKL.load_config(configs / "vae"))
    vae.save_pretrained(tmp / "vae")
    del vae
    text = CLIPTextModel(CLIPTextConfig.from_pretrained(configs / "text_encoder"))
    text.save_pretrained(tmp / "text_encoder")
    del text
    shutil.rmtree(folder, ignore_errors=True)
    tmp.rename(folder)
    return folder


class Heartbeat:
    def __init__(self) -> None:
        from PySide6.QtCore import QTimer

        self.timer = QTimer()
        self.timer.setInterval(INTERVAL_MS)
        self.timer.timeout.connect(self._beat)
        self.last = 0.0
        self.gaps: list[float] = []

    def start(self) -> None:
        self.gaps = []
        self.last = time.perf_counter()
        self.timer.start()

    def stop(self) -> list[float]:
        self.timer.stop()
        return self.gaps

    def _beat(self) -> None:
        now = time.perf_counter()
        self.gaps.append((now - self.last) * 1000.0)
        self.last = now


def summary(gaps: list[float]) -> dict[str, float]:
    if not gaps:
        return {"n": 0, "max": 0.0, "p99": 0.0, "p50": 0.0}
    ordered = sorted(gaps)
    p99 = ordered[min(len(ordered) - 1, round(0.99 * (len(ordered) - 1)))]
    return {"n": len(gaps), "max": ordered[-1], "p99": p99, "p50": statistics.median(ordered)}


def wait_until(app: Any, cond: Any, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            return False
        app.processEvents()
        time.sleep(0.001)
    return True


def run(model: Path, size: int, steps: int, label: str) -> list[tuple[str, dict[str, float]]]:
    from PySide6.QtWidgets import QApplication

    app = QApplication.instance() or QApplication([])
    from sdstudio.core.request import GenerationRequest
    from sdstudio.core.settings import EngineSettings, Settings
    from sdstudio.ui.main_window import MainWindow
    from sdstudio.ui.theme import apply_theme
    from sdstudio.worker import JobQueue

    apply_theme(app)  # type: ignore[arg-type]
    out = Path(tempfile.mkdtemp(prefix="sdstudio-stall-"))
    settings = Settings(output_dir=str(out), engine=EngineSettings(default_model=str(model)))
    queue = JobQueue(settings=settings.engine)
    window = MainWindow(settings, queue)
    window.show()
    beat = Heartbeat()
    results: list[tuple[str, dict[str, float]]] = []

    # baseline: idle window (after the first frames are out)
    t_end = time.monotonic() + 0.5
    while time.monotonic() < t_end:
        app.processEvents()
        time.sleep(0.001)
    beat.start()
    t_end = time.monotonic() + 1.0
    while time.monotonic() < t_end:
        app.processEvents()
        time.sleep(0.001)
    results.append(("idle window (baseline)", summary(beat.stop())))

    # load: worker start (torch import) + model load, while the window runs
    beat.start()
    window.start()
    ok = wait_until(app, lambda: queue.loaded is not None or queue.engine_ok is False,
                    timeout=1800)
    load_gaps = beat.stop()
    if not ok or queue.loaded is None:
        raise SystemExit(f"model did not load: {window.message_bar.message}")
    results.append((f"start worker + load model ({label})", summary(load_gaps)))

    # generation (preview every step, saving, gallery update)
    request = GenerationRequest(prompt="a lighthouse at dusk", width=size, height=size,
                                steps=steps, seed=1, sampler="Euler", model=str(model))
    for attempt in ("first", "second"):
        beat.start()
        job_id = queue.submit_request(request)
        wait_until(app, lambda j=job_id: queue.job(j).state.finished,  # type: ignore[union-attr]
                   timeout=3600)
        gen_gaps = beat.stop()
        job = queue.job(job_id)
        assert job is not None
        if job.state.value != "done":
            raise SystemExit(f"generation failed: {job.failure}")
        results.append((f"{attempt} generation {size}x{size}, {steps} steps ({label})",
                        summary(gen_gaps)))
    window.close()
    return results


def report(rows: list[tuple[str, dict[str, float]]]) -> str:
    lines = ["| phase | heartbeats | max gap (ms) | p99 (ms) | median (ms) | goal |",
             "|---|---:|---:|---:|---:|---|"]
    for name, s in rows:
        goal = "" if "baseline" in name else (
            "ok" if s["max"] <= 50 and s["p99"] < 17 else "MISSED")
        lines.append(f"| {name} | {s['n']} | {s['max']:.1f} | {s['p99']:.1f} | "
                     f"{s['p50']:.1f} | {goal} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sd15-random", action="store_true",
                        help="use the real SD 1.5 architecture with random weights")
    parser.add_argument("--size", type=int, default=0)
    parser.add_argument("--steps", type=int, default=0)
    parser.add_argument("--append", type=Path, help="append the results to this markdown file")
    parser.add_argument("--build-sd15-only", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.build_sd15_only:
        build_sd15_random(args.build_sd15_only)
        return 0
    from sdstudio.core.paths import cache_dir

    if args.sd15_random:
        import subprocess

        model = cache_dir() / "bench" / "sd15-random"
        subprocess.run([sys.executable, __file__, "--build-sd15-only", str(model)], check=True)
        label, size, steps = "SD 1.5 random weights", args.size or 256, args.steps or 3
    else:
        import subprocess

        # Built in a child process: torch must not be imported here before the window starts.
        model = cache_dir() / "bench" / "tiny-sd1"
        subprocess.run([sys.executable, "-c", "import sys; from sdstudio.engine.tiny import "
                        "build_tiny_model; build_tiny_model(sys.argv[1], kind='sd1')",
                        str(model)], check=True, cwd=ROOT)
        label, size, steps = "tiny model", args.size or 64, args.steps or 4
    rows = run(model, size, steps, label)
    text = report(rows)
    print(text)
    if args.append:
        import platform

        flag = " --sd15-random" if args.sd15_random else ""
        header = (f"\n### UI responsiveness (bench/ui_stall.py{flag})"
                  f"\n\n{time.strftime('%Y-%m-%d')}, {platform.processor() or platform.machine()}"
                  f", {os.cpu_count()} CPUs, offscreen Qt, heartbeat every {INTERVAL_MS} ms.\n\n")
        with open(args.append, "a", encoding="utf-8") as fh:
            fh.write(header + text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
