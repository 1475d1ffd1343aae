"""GPU check (NVIDIA, < 5 minutes): fp16 txt2img, img2img and inpaint at 512x512 on the
SD 1.5 architecture with random weights, in each memory mode, next to a bare diffusers
baseline measured in the same run.

    python bench/gpu_check.py                  # everything, prints a table
    python bench/gpu_check.py --json out.json  # also write the figures as JSON

For every (memory mode, task) it prints it/s (denoising steps per second, measured between
step callbacks), wall time per image and peak VRAM (torch.cuda.max_memory_allocated), and the
ratio against bare diffusers (same weights, same scheduler, same seed, no memory savers).
Without an NVIDIA GPU it refuses with exit status 2.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from _common import build_sd15_random, median

TASKS = ("txt2img", "img2img", "inpaint")
MEMORY_MODES = ("off", "auto", "low")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--runs", type=int, default=3, help="timed runs per cell (median)")
    parser.add_argument("--tasks", default=",".join(TASKS))
    parser.add_argument("--memory-modes", default=",".join(MEMORY_MODES))
    parser.add_argument("--model", help="a diffusers folder instead of SD 1.5 random weights")
    parser.add_argument("--work-dir", help="where to build the random model (default: temp)")
    parser.add_argument("--json", help="write the results as JSON to this file")
    parser.add_argument("--cpu-smoke", action="store_true",
                        help="(for the test suite) run the whole script on the CPU with the "
                             "tiny model, to check the script itself; figures mean nothing")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    import torch

    smoke = args.cpu_smoke
    if smoke:
        torch.set_num_threads(1)
    if not smoke and not torch.cuda.is_available():
        print("gpu_check: no NVIDIA GPU (CUDA) found; this check needs one. Nothing was run.",
              file=sys.stderr)
        return 2
    import numpy as np
    from PIL import Image

    from sdstudio.core.events import Progress
    from sdstudio.core.request import GenerationRequest
    from sdstudio.core.settings import EngineSettings
    from sdstudio.engine import Engine
    from sdstudio.engine.samplers import build_scheduler

    started = time.perf_counter()
    work = Path(args.work_dir or tempfile.mkdtemp(prefix="sdstudio-gpu-"))
    work.mkdir(parents=True, exist_ok=True)
    if args.model:
        folder = Path(args.model)
    elif smoke:
        from sdstudio.engine.tiny import build_tiny_model

        folder = build_tiny_model(work / "tiny-sd1", "sd1")
    else:
        folder = build_sd15_random(work / "sd15-random", dtype=torch.float16, device="cuda")
    print(f"model ready in {time.perf_counter() - started:.1f} s: {folder}")
    size, steps = args.size, args.steps
    rng = np.random.RandomState(0)
    init_path, mask_path = work / "init.png", work / "mask.png"
    Image.fromarray((rng.rand(size, size, 3) * 255).astype(np.uint8)).save(init_path)
    mask = Image.new("L", (size, size), 0)
    mask.paste(255, (size // 4, size // 4, 3 * size // 4, 3 * size // 4))
    mask.save(mask_path)
    tasks = [t for t in args.tasks.split(",") if t]
    modes = [m for m in args.memory_modes.split(",") if m]
    gpu = "CPU smoke test" if smoke else torch.cuda.get_device_name(0)
    device = "cpu" if smoke else "cuda"
    dtype = torch.float32 if smoke else torch.float16

    def sync() -> None:
        if not smoke:
            torch.cuda.synchronize()
    results: list[dict[str, Any]] = []

    def request(task: str) -> GenerationRequest:
        kw: dict[str, Any] = {}
        if task != "txt2img":
            kw["init_image"] = str(init_path)
            kw["strength"] = 1.0  # the full number of steps in every task
        if task == "inpaint":
            kw["mask"] = str(mask_path)
        return GenerationRequest("a photo of a cat", width=size, height=size, steps=steps,
                                 seed=1, sampler="Euler a", model=str(folder), **kw)

    def measure(fn: Any) -> tuple[float, float, float]:
        """(median wall s, median it/s, peak VRAM GiB) over args.runs runs after a warm-up."""
        fn([])
        walls, rates = [], []
        sync()
        if not smoke:
            torch.cuda.reset_peak_memory_stats()
        for _ in range(args.runs):
            stamps: list[float] = []
            sync()
            t0 = time.perf_counter()
            fn(stamps)
            sync()
            walls.append(time.perf_counter() - t0)
            if len(stamps) > 2:
                rates.append((len(stamps) - 1) / (stamps[-1] - stamps[0]))
        peak = 0.0 if smoke else torch.cuda.max_memory_allocated() / 2**30
        return median(walls), median(rates), peak

    # ---- bare diffusers baseline (no savers), loaded the usual way
    from diffusers import (
        StableDiffusionImg2ImgPipeline,
        StableDiffusionInpaintPipeline,
        StableDiffusionPipeline,
    )

    base = StableDiffusionPipeline.from_pretrained(
        str(folder), dtype=dtype, use_safetensors=True, local_files_only=True,
        safety_checker=None, requires_safety_checker=False).to(device)
    base.set_progress_bar_config(disable=True)
    bare_pipes = {"txt2img": base,
                  "img2img": StableDiffusionImg2ImgPipeline.from_pipe(base, dtype=dtype),
                  "inpaint": StableDiffusionInpaintPipeline.from_pipe(base, dtype=dtype)}
    init_img = Image.open(init_path).convert("RGB")
    sched_config = dict(base.scheduler.config)
    bare: dict[str, tuple[float, float, float]] = {}
    for task in tasks:
        pipe = bare_pipes[task]
        pipe.set_progress_bar_config(disable=True)

        def run_bare(stamps: list[float], pipe: Any = pipe, task: str = task) -> None:
            pipe.scheduler = build_scheduler("Euler a", sched_config)

            def cb(p: Any, i: int, t: Any, kw: dict[str, Any]) -> dict[str, Any]:
                stamps.append(time.perf_counter())
                return kw

            kw: dict[str, Any] = {}
            if task != "txt2img":
                kw.update(image=init_img, strength=1.0)
            if task == "inpaint":
                kw["mask_image"] = mask
            pipe("a photo of a cat", height=size, width=size, num_inference_steps=steps,
                 guidance_scale=7.0, generator=torch.Generator("cpu").manual_seed(1),
                 callback_on_step_end=cb, **kw)

        bare[task] = measure(run_bare)
        results.append({"side": "diffusers", "memory_mode": "-", "task": task,
                        "wall_s": bare[task][0], "it_s": bare[task][1],
                        "peak_gib": bare[task][2]})
    del base, bare_pipes, pipe
    if not smoke:
        torch.cuda.empty_cache()

    # ---- the engine in each memory mode
    for mode in modes:
        engine = Engine(EngineSettings(memory_mode=mode, device=device))
        ready = engine.load(str(folder))
        for task in tasks:
            notes: list[str] = []
            plan: dict[str, Any] = {}

            def run_engine(stamps: list[float], task: str = task, engine: Any = engine,
                           notes: list[str] = notes, plan: dict[str, Any] = plan) -> None:
                def on_event(event: Any) -> None:
                    if isinstance(event, Progress):
                        stamps.append(time.perf_counter())

                out = engine.generate(request(task), on_event)
                notes[:] = list(out[0].info.notes)
                plan.update(out[0].info.memory)

            wall, rate, peak = measure(run_engine)
            savers = [k for k in ("attention_slicing", "vae_slicing", "vae_tiling",
                                  "cpu_offload") if plan.get(k)]
            results.append({"side": "sdstudio", "memory_mode": mode, "task": task,
                            "wall_s": wall, "it_s": rate, "peak_gib": peak,
                            "savers": savers, "notes": notes, "dtype": ready.dtype,
                            "ratio_wall": wall / bare[task][0]})
        engine.unload()
        if not smoke:
            torch.cuda.empty_cache()

    print(f"\nGPU: {gpu}; torch {torch.__version__}; SD 1.5 architecture, random fp16 weights;"
          f" {size}x{size}, {steps} steps, Euler a, CFG 7, median of {args.runs}")
    header = f"{'side':10} {'memory':7} {'task':8} {'it/s':>7} {'s/image':>8} {'peak GiB':>9} " \
             f"{'vs bare':>8}  savers / notes"
    print(header)
    print("-" * len(header))
    for r in results:
        ratio = f"{r['ratio_wall']:.3f}" if "ratio_wall" in r else ""
        extra = ", ".join(r.get("savers", [])) or ("-" if r["side"] == "sdstudio" else "")
        if r.get("notes"):
            extra += " | " + "; ".join(r["notes"])
        print(f"{r['side']:10} {r['memory_mode']:7} {r['task']:8} {r['it_s']:7.2f} "
              f"{r['wall_s']:8.3f} {r['peak_gib']:9.2f} {ratio:>8}  {extra}")
    print(f"\ntotal time {time.perf_counter() - started:.0f} s")
    if args.json:
        Path(args.json).write_text(json.dumps({"gpu": gpu, "results": results}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
