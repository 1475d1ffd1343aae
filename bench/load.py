"""Load time of a real-size SD 1.5 model: diffusers folder versus single file.

Builds a real-size SD 1.5 model with random weights (fp16 on disk, from
resources/model_configs/sd15) in a temporary folder, writes the same weights as one
single-file checkpoint in the original LDM layout (no embedded configs, so it loads exactly as
a downloaded checkpoint does: architecture detection, shipped configs, conversion), then times
in fresh processes, alternating, ``--repeats`` times each:

* ``bare-folder``  diffusers ``StableDiffusionPipeline.from_pretrained(folder)`` (baseline);
* ``single-file``  ``sdstudio.engine.single_file.load_single_file(file)``;
* ``engine-folder`` / ``engine-file``: ``Engine.generate`` of a 1-step request, the time from
  the call until the first denoising step has run (load + prompt encoding + one UNet step).

Everything loads to fp32 on the CPU (the CPU policy). The files were just written, so the page
cache is warm: the figures are conversion/assembly costs, not disk speed. The temporary folder
is deleted afterwards unless ``--keep`` is given.

    python bench/load.py [--repeats 2] [--size 256] [--work DIR] [--keep]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
for p in (str(ROOT), str(HERE)):
    if p not in sys.path:
        sys.path.insert(0, p)
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("DIFFUSERS_VERBOSITY", "error")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")

MODES = ("bare-folder", "single-file", "engine-folder", "engine-file")


def _child(mode: str, path: str, size: int) -> dict[str, float]:
    import torch

    torch.set_grad_enabled(False)
    if mode == "bare-folder":
        from diffusers import StableDiffusionPipeline

        start = time.perf_counter()
        StableDiffusionPipeline.from_pretrained(
            path, dtype=torch.float32, local_files_only=True, use_safetensors=True,
            safety_checker=None, feature_extractor=None, requires_safety_checker=False)
        return {"load_s": time.perf_counter() - start}
    if mode == "single-file":
        from sdstudio.engine.single_file import load_single_file

        start = time.perf_counter()
        load_single_file(Path(path), device="cpu", dtype=torch.float32)
        return {"load_s": time.perf_counter() - start}
    from sdstudio.core.events import ModelReady, Progress
    from sdstudio.core.request import GenerationRequest
    from sdstudio.engine import Engine

    marks: dict[str, float] = {}
    start = time.perf_counter()

    def on_event(event: object) -> None:
        now = time.perf_counter() - start
        if isinstance(event, ModelReady):
            marks.setdefault("load_s", now)
        elif isinstance(event, Progress):
            marks.setdefault("first_step_s", now)

    Engine().generate(GenerationRequest(prompt="a lighthouse", width=size, height=size,
                                        steps=1, seed=1, model=path), on_event)
    return marks


def build(work: Path) -> tuple[Path, Path]:
    from _common import build_sd15_random

    from sdstudio.engine.convert import _save_safetensors, diffusers_to_ldm

    folder = build_sd15_random(work / "sd15-random")
    single = work / "sd15-random.safetensors"
    if not single.exists():
        _save_safetensors(diffusers_to_ldm(folder), single, {"format": "pt"})
    return folder, single


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--size", type=int, default=256, help="image side for the first step")
    parser.add_argument("--work", type=Path, default=None, help="where to build (default: tmp)")
    parser.add_argument("--keep", action="store_true", help="keep the built model files")
    parser.add_argument("--child", nargs=2, metavar=("MODE", "PATH"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        print(json.dumps(_child(args.child[0], args.child[1], args.size)))
        return 0

    work = Path(tempfile.mkdtemp(prefix="sdstudio-bench-load-", dir=args.work))
    try:
        t0 = time.perf_counter()
        folder, single = build(work)
        sizes = {
            "folder": sum(p.stat().st_size for p in folder.rglob("*.safetensors")),
            "single": single.stat().st_size,
        }
        print(f"built in {time.perf_counter() - t0:.0f} s: folder {sizes['folder'] / 2**30:.2f}"
              f" GiB, single file {sizes['single'] / 2**30:.2f} GiB (fp16)", flush=True)
        results: dict[str, list[dict[str, float]]] = {m: [] for m in MODES}
        for rep in range(args.repeats):
            for mode in MODES:
                path = folder if mode.endswith("folder") else single
                proc = subprocess.run(
                    [sys.executable, str(Path(__file__).resolve()), "--size", str(args.size),
                     "--child", mode, str(path)], capture_output=True, text=True, check=False)
                if proc.returncode != 0:
                    print(proc.stderr[-3000:], file=sys.stderr)
                    return 1
                results[mode].append(json.loads(proc.stdout.strip().splitlines()[-1]))
                print(f"  run {rep + 1} {mode:<14} {results[mode][-1]}", flush=True)
    finally:
        if args.keep:
            print(f"kept {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)

    def med(mode: str, key: str) -> float:
        return statistics.median(r[key] for r in results[mode])

    print("\nSD 1.5 (random weights, fp16 files -> fp32 on CPU), median of "
          f"{args.repeats} fresh processes:")
    print(f"  load, bare diffusers folder     {med('bare-folder', 'load_s'):7.2f} s")
    print(f"  load, single file (sdstudio)    {med('single-file', 'load_s'):7.2f} s   "
          f"ratio {med('single-file', 'load_s') / med('bare-folder', 'load_s'):.2f}x")
    for mode in ("engine-folder", "engine-file"):
        print(f"  {mode}: loaded at {med(mode, 'load_s'):6.2f} s, first step done at "
              f"{med(mode, 'first_step_s'):6.2f} s ({args.size}x{args.size})")
    print(f"  engine first step, file / folder ratio "
          f"{med('engine-file', 'first_step_s') / med('engine-folder', 'first_step_s'):.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
