"""The engine's txt2img against a bare diffusers pipeline call: the app's overhead.

Same model, settings and seed, in one process. Three arms, run in a rotating order every round
(so none profits from warm caches or always follows the same one): bare diffusers; the engine
as `sdstudio generate` and `sdstudio batch` run it (``preview_every=0``: no previews); the
engine as the window runs it (``preview_every=1``: a Preview image every step, delivered to a
callback). The bare call shares the engine's loaded modules, so all run the very same weights
(with the engine's speed paths: channels_last, and in bf16 on the CPU the blocked attention of
engine/cpu_attention.py, installed around the bare call too: this measures the app's overhead,
not its kernels); it uses the same scheduler and a CPU generator with the same seed. The engine
adds: request validation, prompt encoding in 75-token chunks, CPU-drawn initial noise, the step
callback (cancel check, Progress, and Preview when enabled), its own VAE decode (NaN check for
half precision), and the GenerationInfo.

    python bench/overhead.py                    # tiny model, 64x64, 20 steps
    python bench/overhead.py --sd15-random      # real SD 1.5 architecture, random weights
    python bench/overhead.py --model PATH --size 512

Prints, per arm, median wall time with its interquartile range and minimum, the ratio to bare
diffusers (goal: at most 1.02), the app's cost per step in ms, and the same from process CPU
time (less sensitive to other processes on a shared machine).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from _common import build_sd15_random, median, quartiles, timed


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    src = parser.add_mutually_exclusive_group()
    src.add_argument("--model", help="a diffusers model folder")
    src.add_argument("--sd15-random", action="store_true",
                     help="real SD 1.5 architecture with random weights, built locally")
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--size", type=int, default=None,
                        help="image side in pixels (default 64 tiny, 512 otherwise)")
    parser.add_argument("--pairs", type=int, default=15,
                        help="rounds; each runs bare, engine without and with previews once")
    parser.add_argument("--sampler", default="Euler a")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: default)")
    parser.add_argument("--work-dir", default=None, help="where to build the model")
    args = parser.parse_args(argv)

    import torch

    from sdstudio.core.events import ignore_event
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

    settings = EngineSettings(device=args.device, preview_every=0)
    engine = Engine(settings)
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
    previews: list[object] = []

    def run_engine(preview_every: int) -> object:
        # preview_every=0 is what `sdstudio generate` and `sdstudio batch` run (no previews);
        # the window runs preview_every=1 (settings default) and receives a Preview per step.
        if engine.settings.preview_every != preview_every:
            engine.configure(settings.replace(preview_every=preview_every))
        on_event = previews.append if preview_every else ignore_event
        images = engine.generate(request, on_event)
        previews.clear()
        return images[0].image

    from sdstudio.engine import cpu_attention

    blocked = engine._model.accel.cpu_attention

    def run_bare() -> object:
        gen = torch.Generator("cpu").manual_seed(1234)
        with cpu_attention.installed(blocked):
            return bare("a photo of a cat", negative_prompt="blurry", width=size, height=size,
                        num_inference_steps=args.steps, guidance_scale=7.0,
                        generator=[gen]).images[0]

    arms: dict[str, Any] = {
        "bare diffusers": run_bare,
        "engine, no previews (CLI, batch)": lambda: run_engine(0),
        "engine, Preview every step (window)": lambda: run_engine(1),
    }
    import numpy as np

    bare_img = run_bare()  # warm-up, and a correctness check
    diffs = {name: int(np.abs(np.asarray(fn(), np.int16) - np.asarray(bare_img, np.int16)).max())
             for name, fn in arms.items()}
    wall: dict[str, list[float]] = {name: [] for name in arms}
    cpu: dict[str, list[float]] = {name: [] for name in arms}
    names = list(arms)
    for i in range(args.pairs):
        # rotate the order every round so that no arm always runs first or after the same one
        for name in names[i % 3:] + names[:i % 3]:
            c0 = time.process_time()
            wall[name].append(timed(arms[name], sync))
            cpu[name].append(time.process_time() - c0)

    print(f"model: {label} ({ready.arch}, {ready.device}, {ready.dtype}); {size}x{size}, "
          f"{args.steps} steps, CFG 7, {args.sampler}, CPU generator seed 1234, "
          f"{args.pairs} rounds of the 3 arms in rotating order, "
          f"torch threads {torch.get_num_threads()}")
    print("engine settings: memory mode " + settings.memory_mode
          + "; preview_every 0 (CLI/batch) and 1 (window), toggled with engine.configure")
    b_wall, b_cpu = median(wall[names[0]]), median(cpu[names[0]])
    print(f"{'arm':38s} {'wall med':>9s} {'IQR':>13s} {'min':>8s} {'ratio':>6s} "
          f"{'ms/step':>8s} {'CPU med':>9s} {'ratio':>6s} {'ms/step':>8s} {'max px diff':>11s}")
    for name in names:
        w, c = wall[name], cpu[name]
        q1, q3 = quartiles(w)
        mw, mc = median(w), median(c)
        print(f"{name:38s} {mw * 1e3:7.1f}ms {q1 * 1e3:6.1f}-{q3 * 1e3:5.1f} "
              f"{min(w) * 1e3:6.1f}ms {mw / b_wall:6.3f} {(mw - b_wall) / args.steps * 1e3:+8.2f}"
              f" {mc * 1e3:7.1f}ms {mc / b_cpu:6.3f} {(mc - b_cpu) / args.steps * 1e3:+8.2f}"
              f" {diffs[name]:11d}")
    print("paired: the ratio to the bare run of the same round, median over the rounds "
          "(drifting load from other processes cancels out)")
    for name in names[1:]:
        paired_w = [a / b for a, b in zip(wall[name], wall[names[0]], strict=True)]
        paired_c = [a / b for a, b in zip(cpu[name], cpu[names[0]], strict=True)]
        pq1, pq3 = quartiles(paired_w)
        print(f"{name}: wall ratio {median(wall[name]) / b_wall:.3f} (goal <= 1.02); paired "
              f"wall ratio {median(paired_w):.3f} (IQR {pq1:.3f}-{pq3:.3f}); best-of ratio "
              f"{min(wall[name]) / min(wall[names[0]]):.3f}; CPU-time ratio "
              f"{median(cpu[name]) / b_cpu:.3f}, paired {median(paired_c):.3f}")
    if device.type != "cpu":
        print("(CPU time is the process's, not the GPU's: read the wall figures on a GPU)")
    engine.unload()
    return 0


if __name__ == "__main__":
    sys.exit(main())
