"""GPU check (one NVIDIA GPU, < 5 minutes): SD 1.5 and SDXL architectures with random fp16
weights, bare diffusers next to SD Studio (default, Speed: compile, low-VRAM mode), measured in
the same run, with the performance goals marked met or missed.

    python bench/gpu_check.py                  # everything, prints a table and the goals
    python bench/gpu_check.py --archs sd15     # one architecture
    python bench/gpu_check.py --json out.json  # also write the figures as JSON
    python bench/gpu_check.py --cpu-smoke      # the same code on the CPU, tiny models (< 2 min)

Cells: for each architecture, at its own size (SD 1.5: 512x512, SDXL: 1024x1024) txt2img,
img2img, inpaint and the hires fix (512x512 upscaled 2x in latent space, then image to image
at 1024x1024), and txt2img at the other size; for each of bare diffusers (the pipeline as
loaded, no savers), SD Studio's defaults, SD Studio with Speed: compile (txt2img at the
architecture's own size: one compilation each, the expensive part) and SD Studio in low-VRAM
mode. For every cell: it/s (denoising steps per second between step callbacks, median of
``--runs`` after a warm-up), seconds per image, peak VRAM (``torch.cuda.max_memory_allocated``
from after the load) and the ratio of its it/s to bare diffusers'. Goals: default >= 0.95x
bare, compile >= 1.3x bare, SD 1.5 low-VRAM peak <= 2.5 GiB, SDXL low-VRAM peak <= 4 GiB.

The random weights are built in fp16 directly on the GPU (SDXL: ~7 GB written once under
``--work-dir``, reused by later runs given the same folder). Without an NVIDIA GPU it refuses
with exit status 2 (``--cpu-smoke`` aside).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from _common import build_sd15_random, build_sdxl_random, median

ARCHS = ("sd15", "sdxl")
ARMS = ("bare", "default", "compile", "low")
TASKS = ("txt2img", "img2img", "inpaint", "hires")
NATIVE = {"sd15": 512, "sdxl": 1024}
OTHER = {"sd15": 1024, "sdxl": 512}
HIRES_FROM = 512  # the hires fix: 512 -> 1024
SMOKE_NATIVE = {"sd15": 64, "sdxl": 64}
SMOKE_OTHER = {"sd15": 128, "sdxl": 128}
LOW_VRAM_GOAL_GIB = {"sd15": 2.5, "sdxl": 4.0}
DEFAULT_GOAL = 0.95
COMPILE_GOAL = 1.3


@dataclass(frozen=True)
class Cell:
    arch: str
    arm: str
    task: str
    size: int  # the image's side (the hires fix: its first pass)


def plan_cells(archs: list[str], arms: list[str], tasks: list[str], *, smoke: bool = False,
               compile_tasks: tuple[str, ...] = ("txt2img",)) -> list[Cell]:
    """Every cell of one run, grouped by architecture then arm (one model load each)."""
    native = SMOKE_NATIVE if smoke else NATIVE
    other = SMOKE_OTHER if smoke else OTHER
    cells: list[Cell] = []
    for arch in archs:
        for arm in arms:
            for task in tasks:
                if arm == "compile" and task not in compile_tasks:
                    continue
                size = native[arch]
                if task == "hires":  # its first pass; the second at twice the side
                    size = native[arch] if smoke else HIRES_FROM
                cells.append(Cell(arch, arm, task, size))
            if "txt2img" in tasks and arm != "compile":
                cells.append(Cell(arch, arm, "txt2img", other[arch]))
    return cells


def goals(rows: list[dict[str, Any]], *, vram: bool = True) -> list[dict[str, Any]]:
    """The goals, each met / missed from the rows (missing figures: not measured; without
    ``vram``, on the CPU, the VRAM goals are not measured)."""
    out: list[dict[str, Any]] = []
    bare = {(r["arch"], r["task"], r["size"]): r for r in rows if r["arm"] == "bare"}

    def ratio(r: dict[str, Any]) -> float | None:
        b = bare.get((r["arch"], r["task"], r["size"]))
        return r["it_s"] / b["it_s"] if b and b["it_s"] > 0 else None

    for arm, goal, label in (("default", DEFAULT_GOAL, "SD Studio default >= 0.95x bare it/s"),
                             ("compile", COMPILE_GOAL, "Speed: compile >= 1.3x bare it/s")):
        for r in rows:
            if r["arm"] != arm:
                continue
            value = ratio(r)
            out.append({"goal": f"{label} ({r['arch']} {r['task']} {r['size']})",
                        "value": value, "met": value is not None and value >= goal})
    for arch, limit in LOW_VRAM_GOAL_GIB.items():
        peaks = [r["peak_gib"] for r in rows if r["arm"] == "low" and r["arch"] == arch]
        if peaks:
            value = max(peaks) if vram else None
            out.append({"goal": f"{arch} low-VRAM peak <= {limit} GiB", "value": value,
                        "met": value is not None and value <= limit})
    return out


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--archs", default=",".join(ARCHS))
    parser.add_argument("--arms", default=",".join(ARMS))
    parser.add_argument("--tasks", default=",".join(TASKS))
    parser.add_argument("--compile-tasks", default="txt2img",
                        help="tasks the compile arm runs (each new size compiles again)")
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--runs", type=int, default=2, help="timed runs per cell (median)")
    parser.add_argument("--work-dir", help="where to build the random models (default: temp)")
    parser.add_argument("--json", help="write the results as JSON to this file")
    parser.add_argument("--plan", action="store_true", help="print the cells and stop")
    parser.add_argument("--cpu-smoke", action="store_true",
                        help="run the whole script on the CPU with tiny models, to check the "
                             "script itself; figures mean nothing")
    return parser


class Bench:
    """The measuring side: models, inputs, one cell at a time."""

    def __init__(self, args: argparse.Namespace) -> None:
        import torch

        self.torch = torch
        self.args = args
        self.smoke = bool(args.cpu_smoke)
        self.device = "cpu" if self.smoke else "cuda"
        self.dtype = torch.float32 if self.smoke else torch.float16
        self.work = Path(args.work_dir or tempfile.mkdtemp(prefix="sdstudio-gpu-"))
        self.work.mkdir(parents=True, exist_ok=True)
        self.models: dict[str, Path] = {}

    def sync(self) -> None:
        if not self.smoke:
            self.torch.cuda.synchronize()

    def model(self, arch: str) -> Path:
        if arch not in self.models:
            if self.smoke:
                from sdstudio.engine.tiny import build_tiny_model

                kind = "sd1" if arch == "sd15" else "sdxl"
                self.models[arch] = build_tiny_model(self.work / f"tiny-{kind}", kind)
            else:
                build = build_sd15_random if arch == "sd15" else build_sdxl_random
                self.models[arch] = build(self.work / f"{arch}-random",
                                          dtype=self.torch.float16, device="cuda")
        return self.models[arch]

    def inputs(self, size: int) -> tuple[Any, Any, Path, Path]:
        import numpy as np
        from PIL import Image

        init_path, mask_path = self.work / f"init-{size}.png", self.work / f"mask-{size}.png"
        if not init_path.is_file():
            rng = np.random.RandomState(0)
            Image.fromarray((rng.rand(size, size, 3) * 255).astype(np.uint8)).save(init_path)
            mask = Image.new("L", (size, size), 0)
            mask.paste(255, (size // 4, size // 4, 3 * size // 4, 3 * size // 4))
            mask.save(mask_path)
        return (Image.open(init_path).convert("RGB"), Image.open(mask_path).convert("L"),
                init_path, mask_path)

    def measure(self, fn: Callable[[list[float]], None]) -> tuple[float, float, float]:
        """(median wall s, median it/s, peak GiB) over the runs after a warm-up."""
        torch = self.torch
        fn([])
        self.sync()
        if not self.smoke:
            torch.cuda.reset_peak_memory_stats()
        walls, rates = [], []
        for _ in range(self.args.runs):
            stamps: list[float] = []
            self.sync()
            started = time.perf_counter()
            fn(stamps)
            self.sync()
            walls.append(time.perf_counter() - started)
            if len(stamps) > 2:
                rates.append((len(stamps) - 1) / (stamps[-1] - stamps[0]))
        peak = 0.0 if self.smoke else torch.cuda.max_memory_allocated() / 2**30
        return median(walls), median(rates), peak

    # ------------------------------------------------------------------ bare diffusers
    def bare(self, arch: str, cells: list[Cell]) -> list[dict[str, Any]]:
        torch = self.torch
        from diffusers import (
            AutoPipelineForImage2Image,
            AutoPipelineForInpainting,
            DiffusionPipeline,
        )

        from sdstudio.engine.samplers import build_scheduler

        folder = self.model(arch)
        extra: dict[str, Any] = {} if arch == "sdxl" else {
            "safety_checker": None, "requires_safety_checker": False}
        base = DiffusionPipeline.from_pretrained(
            str(folder), dtype=self.dtype, use_safetensors=True, local_files_only=True,
            **extra).to(self.device)
        pipes = {"txt2img": base, "img2img": AutoPipelineForImage2Image.from_pipe(base),
                 "inpaint": AutoPipelineForInpainting.from_pipe(base)}
        del base
        for pipe in pipes.values():
            pipe.set_progress_bar_config(disable=True)
        config = dict(pipes["txt2img"].scheduler.config)
        rows = []
        steps = self.args.steps
        for cell in cells:
            image, mask, _, _ = self.inputs(cell.size)

            def run(stamps: list[float], cell: Cell = cell, image: Any = image,
                    mask: Any = mask) -> None:
                def cb(p: Any, i: int, t: Any, kw: dict[str, Any]) -> dict[str, Any]:
                    stamps.append(time.perf_counter())
                    return kw

                common: dict[str, Any] = {
                    "num_inference_steps": steps, "guidance_scale": 7.0,
                    "generator": torch.Generator("cpu").manual_seed(1),
                    "callback_on_step_end": cb}
                for pipe in pipes.values():
                    pipe.scheduler = build_scheduler("Euler a", config)
                size = cell.size
                if cell.task == "txt2img":
                    pipes["txt2img"]("a photo of a cat", height=size, width=size, **common)
                elif cell.task == "img2img":
                    pipes["img2img"]("a photo of a cat", image=image, strength=1.0, **common)
                elif cell.task == "inpaint":
                    pipes["inpaint"]("a photo of a cat", image=image, mask_image=mask,
                                     strength=1.0, height=size, width=size, **common)
                else:  # the hires fix: latent 2x, then image to image at the larger size
                    latents = pipes["txt2img"]("a photo of a cat", height=size, width=size,
                                               output_type="latent", **common).images
                    big = torch.nn.functional.interpolate(latents, scale_factor=2,
                                                          mode="bilinear")
                    common["generator"] = torch.Generator("cpu").manual_seed(2)
                    pipes["img2img"]("a photo of a cat", image=big, strength=0.7, **common)

            rows.append(self._row(cell, *self.measure(run)))
        pipes.clear()
        self._free()
        return rows

    # ------------------------------------------------------------------------ engine
    def engine(self, arch: str, arm: str, cells: list[Cell]) -> list[dict[str, Any]]:
        from sdstudio.core.events import Progress
        from sdstudio.core.request import GenerationRequest
        from sdstudio.core.settings import EngineSettings
        from sdstudio.engine import Engine

        settings = EngineSettings(device=self.device, precision="fp32" if self.smoke else "auto",
                                  memory_mode="low" if arm == "low" else "auto",
                                  compile_unet=arm == "compile")
        engine = Engine(settings)
        ready = engine.load(str(self.model(arch)))
        rows = []
        try:
            for cell in cells:
                _, _, init_path, mask_path = self.inputs(cell.size)
                kw: dict[str, Any] = {}
                if cell.task in ("img2img", "inpaint"):
                    kw.update(init_image=str(init_path), strength=1.0)
                if cell.task == "inpaint":
                    kw["mask"] = str(mask_path)
                if cell.task == "hires":
                    kw.update(hires=True, hires_scale=2.0, hires_denoising=0.7)
                request = GenerationRequest(
                    "a photo of a cat", width=cell.size, height=cell.size,
                    steps=self.args.steps, seed=1, sampler="Euler a",
                    model=str(self.model(arch)), **kw)
                info: list[Any] = []

                def run(stamps: list[float], request: GenerationRequest = request,
                        info: list[Any] = info) -> None:
                    def on_event(event: Any) -> None:
                        if isinstance(event, Progress):
                            stamps.append(time.perf_counter())

                    out = engine.generate(request, on_event)
                    info[:] = [out[0].info]

                row = self._row(cell, *self.measure(run))
                made = info[0]
                row.update(dtype=ready.dtype, notes=list(made.notes),
                           savers=[k for k in ("attention_slicing", "vae_slicing",
                                               "vae_tiling", "cpu_offload")
                                   if made.memory.get(k)],
                           speed=list(engine._model.accel.active)  # type: ignore[union-attr]
                           if engine._model is not None else [])
                rows.append(row)
        finally:
            engine.unload()
            self._free()
        return rows

    def _free(self) -> None:
        import gc

        gc.collect()
        if not self.smoke:
            self.torch.cuda.empty_cache()

    @staticmethod
    def _row(cell: Cell, wall: float, rate: float, peak: float) -> dict[str, Any]:
        return {**asdict(cell), "wall_s": wall, "it_s": rate, "peak_gib": peak}


def report(rows: list[dict[str, Any]], header: str, *, vram: bool = True
           ) -> list[dict[str, Any]]:
    bare = {(r["arch"], r["task"], r["size"]): r for r in rows if r["arm"] == "bare"}
    print(f"\n{header}")
    line = (f"{'arch':5} {'arm':8} {'task':8} {'size':>5} {'it/s':>7} {'s/image':>8} "
            f"{'peak GiB':>9} {'vs bare':>8}  speed paths / savers / notes")
    print(line)
    print("-" * len(line))
    for r in rows:
        b = bare.get((r["arch"], r["task"], r["size"]))
        ratio = f"{r['it_s'] / b['it_s']:.3f}" if b and b["it_s"] > 0 and b is not r else ""
        extra = ", ".join([*r.get("speed", []), *r.get("savers", [])])
        if r.get("notes"):
            extra += " | " + "; ".join(r["notes"])
        print(f"{r['arch']:5} {r['arm']:8} {r['task']:8} {r['size']:5d} {r['it_s']:7.2f} "
              f"{r['wall_s']:8.3f} {r['peak_gib']:9.2f} {ratio:>8}  {extra}")
    marked = goals(rows, vram=vram)
    print("\nGoals:")
    for g in marked:
        value = "not measured" if g["value"] is None else f"{g['value']:.3f}"
        print(f"  [{'met' if g['met'] else 'MISSED':6}] {g['goal']}: {value}")
    return marked


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    split = [x for x in args.archs.split(",") if x], [x for x in args.arms.split(",") if x], \
        [x for x in args.tasks.split(",") if x]
    for values, known, what in zip(split, (ARCHS, ARMS, TASKS), ("arch", "arm", "task"),
                                   strict=True):
        unknown = sorted(set(values) - set(known))
        if unknown:
            print(f"gpu_check: unknown {what} {', '.join(unknown)} (known: "
                  f"{', '.join(known)})", file=sys.stderr)
            return 2
    archs, arms, tasks = split
    cells = plan_cells(archs, arms, tasks, smoke=args.cpu_smoke,
                       compile_tasks=tuple(t for t in args.compile_tasks.split(",") if t))
    if args.plan:
        for cell in cells:
            print(f"{cell.arch:5} {cell.arm:8} {cell.task:8} {cell.size}")
        return 0
    import torch

    if args.cpu_smoke:
        torch.set_num_threads(1)
    elif not torch.cuda.is_available():
        print("gpu_check: no NVIDIA GPU (CUDA) found; this check needs one. Nothing was run.",
              file=sys.stderr)
        return 2
    started = time.perf_counter()
    bench = Bench(args)
    rows: list[dict[str, Any]] = []
    for arch in archs:
        built = time.perf_counter()
        bench.model(arch)
        print(f"{arch}: model ready in {time.perf_counter() - built:.0f} s", flush=True)
        for arm in arms:
            part = [c for c in cells if c.arch == arch and c.arm == arm]
            if not part:
                continue
            began = time.perf_counter()
            rows += bench.bare(arch, part) if arm == "bare" else bench.engine(arch, arm, part)
            print(f"{arch} {arm}: {len(part)} cells in {time.perf_counter() - began:.0f} s",
                  flush=True)
    gpu = "CPU smoke test" if args.cpu_smoke else torch.cuda.get_device_name(0)
    marked = report(rows, f"GPU: {gpu}; torch {torch.__version__}; random fp16 weights; "
                          f"{args.steps} steps, Euler a, CFG 7, median of {args.runs}",
                    vram=not args.cpu_smoke)
    print(f"\ntotal time {time.perf_counter() - started:.0f} s")
    if args.json:
        Path(args.json).write_text(json.dumps({"gpu": gpu, "results": rows, "goals": marked},
                                              indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
