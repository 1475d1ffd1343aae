"""The engine's txt2img against a bare diffusers pipeline call: the app's overhead.

Same model, settings and seed, in one process, alternating runs (the order flips every pair so
neither side profits from warm caches). The bare call shares the engine's loaded modules, so
both sides run the very same weights; it uses the same scheduler and a CPU generator with the
same seed. The engine adds: request validation, prompt encoding in 75-token chunks, CPU-drawn
initial noise, a fresh scheduler per run, the step callback (cancel check, Progress, Preview
every step), its own VAE decode with a NaN check, and the GenerationInfo.

    python bench/overhead.py                    # tiny model, 64x64, 20 steps
    python bench/overhead.py --sd15-random      # real SD 1.5 architecture, random weights
    python bench/overhead.py --model PATH --size 512

Prints the wall-time ratio (goal: at most 1.02) and the app's cost per step in ms.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from _common import build_sd15_random, median, timed


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    src = parser.add_mutually_exclusive_group()
    src.add_argument("--model", help="a diffusers model folder")
    src.add_argument("--sd15-random", action="store_true",
                     help="real SD 1.5 architecture with random weights, built locally")
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--size", type=int, default=None,
                        help="image side in pixels (default 64 tiny, 512 otherwise)")
    parser.add_argument("--pairs", type=int, default=15, help="alternating run pairs")
    parser.add_argument("--sampler", default="Euler a")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: default)")
    parser.add_argument("--work-dir", default=None, help="where to build the model")
    args = parser.parse_args(argv)

    import torch

    from sdstudio.core.request import GenerationRequest
    from sdstudio.core.settings import EngineSettings
    from sdstudio.engine import Engine
    from sdstudio.engine.samplers import build_scheduler
    from sdstudio.engine.tiny import build_tiny_model

    if args.threads:
        torch.set_num_threads(args.threads)
    work = Path(args.work_dir or tempfile.mkdtemp(prefix="sdstudio-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    if args.model:
        folder, label = Path(args.model), Path(args.model).name
    elif args.sd15_random:
        folder, label = build_sd15_random(work / "sd15-random"), "SD 1.5 architecture, random"
    else:
        folder, label = build_tiny_model(work / "tiny-sd1", "sd1"), "tiny sd1"
    size = args.size or (64 if not (args.model or args.sd15_random) else 512)

    engine = Engine(EngineSettings(device=args.device))
    ready = engine.load(str(folder))
    request = GenerationRequest(
        prompt="a photo of a cat", negative_prompt="blurry", width=size, height=size,
        steps=args.steps, cfg_scale=7.0, seed=1234, sampler=args.sampler, model=str(folder),
    )
    from diffusers import StableDiffusionPipeline, StableDiffusionXLPipeline

    base = engine._model.pipes.base  # the very same modules
    cls = StableDiffusionXLPipeline if ready.arch.startswith("sdxl") else StableDiffusionPipeline
    bare = cls(**base.components)
    bare.set_progress_bar_config(disable=True)
    bare.scheduler = build_scheduler(args.sampler, engine._model.scheduler_config)
    device = base._execution_device
    sync = torch.cuda.synchronize if device.type == "cuda" else None

    def run_engine() -> object:
        return engine.generate(request)[0].image

    def run_bare() -> object:
        gen = torch.Generator("cpu").manual_seed(1234)
        return bare("a photo of a cat", negative_prompt="blurry", width=size, height=size,
                    num_inference_steps=args.steps, guidance_scale=7.0,
                    generator=[gen]).images[0]

    ours_img, bare_img = run_engine(), run_bare()  # warm-up (and a correctness check)
    import numpy as np

    diff = int(np.abs(np.asarray(ours_img, np.int16) - np.asarray(bare_img, np.int16)).max())
    eng_t: list[float] = []
    bare_t: list[float] = []
    eng_cpu: list[float] = []
    bare_cpu: list[float] = []

    def one(fn: Any, wall: list[float], cpu: list[float]) -> None:
        c0 = time.process_time()
        wall.append(timed(fn, sync))
        cpu.append(time.process_time() - c0)

    for i in range(args.pairs):
        if i % 2 == 0:
            one(run_engine, eng_t, eng_cpu)
            one(run_bare, bare_t, bare_cpu)
        else:
            one(run_bare, bare_t, bare_cpu)
            one(run_engine, eng_t, eng_cpu)
    e, b = median(eng_t), median(bare_t)
    ratio = e / b
    per_step_ms = (e - b) / args.steps * 1000
    print(f"model: {label} ({ready.arch}, {ready.device}, {ready.dtype}); {size}x{size}, "
          f"{args.steps} steps, {args.sampler}, {args.pairs} alternating pairs, "
          f"torch threads {torch.get_num_threads()}")
    print(f"engine median {e * 1000:.1f} ms   bare diffusers median {b * 1000:.1f} ms")
    print(f"ratio engine/bare: {ratio:.3f}  (goal <= 1.02); best-of ratio "
          f"{min(eng_t) / min(bare_t):.3f} (less sensitive to other load on the machine)")
    print(f"app cost per step: {per_step_ms:+.2f} ms (wall)")
    if device.type == "cpu":
        ec, bc = median(eng_cpu), median(bare_cpu)
        print(f"CPU-time (process_time) medians: engine {ec * 1000:.1f} ms, bare {bc * 1000:.1f}"
              f" ms, ratio {ec / bc:.3f}, app cost per step {(ec - bc) / args.steps * 1000:+.2f}"
              " ms (robust to other processes on a shared machine)")
    print(f"max pixel difference engine vs bare: {diff}")
    engine.unload()
    return 0


if __name__ == "__main__":
    sys.exit(main())
