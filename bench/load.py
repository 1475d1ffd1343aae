"""Load time of a real-size SD 1.5 model: diffusers folder versus single file, and a cold load
versus switching back to a model kept in RAM.

Builds a real-size SD 1.5 model with random weights (fp16 on disk, from
resources/model_configs/sd15) in a temporary folder, writes the same weights as one
single-file checkpoint in the original LDM layout (no embedded configs, so it loads exactly as
a downloaded checkpoint does: architecture detection, shipped configs, conversion), then
runs, in fresh processes, alternating, ``--repeats`` times each:

* ``bare-folder``  diffusers ``StableDiffusionPipeline.from_pretrained(folder)`` (baseline);
* ``single-file``  ``sdstudio.engine.single_file.load_single_file(file)``;
  both to fp32 on the CPU, timed from after the imports (diffusers, transformers and SD
  Studio's loader are imported before the clock starts in both), with the peak of the
  process's anonymous memory (RssAnon) above what it was before the load;
* ``switch``  one process, one ``Engine`` with ``checkpoint_cache=1`` and its automatic
  precision: load the folder (cold), load the single file (cold, the previous model kept in
  RAM), load the folder again (from RAM): the cached switch against the cold load of the
  same model in the same process;
* with ``--engine``, also ``engine-folder`` / ``engine-file``: ``Engine.generate`` of a 1-step
  request, the time from the call until the first denoising step has run.

The files were just written, so the page cache is warm: the figures are conversion/assembly
costs, not disk speed. The temporary folder is deleted afterwards unless ``--keep`` is given;
``--work DIR`` with a model built there before (``--keep``) reuses it.

    python bench/load.py [--repeats 2] [--engine] [--size 256] [--work DIR] [--keep]
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
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
for p in (str(ROOT), str(HERE)):
    if p not in sys.path:
        sys.path.insert(0, p)
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("DIFFUSERS_VERBOSITY", "error")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")

LOAD_MODES = ("bare-folder", "single-file")
ENGINE_MODES = ("engine-folder", "engine-file")
GOAL_FILE_RATIO = 1.1
GOAL_SWITCH_RATIO = 0.10


def _anon_bytes() -> int:
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith("RssAnon:"):
                return int(line.split()[1]) * 1024
    return 0


@contextmanager
def _peak_anon() -> Iterator[dict[str, float]]:
    """The peak of RssAnon above its value at entry, sampled every 5 ms (Linux)."""
    out: dict[str, float] = {}
    if not Path("/proc/self/status").exists():
        yield out
        return
    base, peak, done = _anon_bytes(), [0], threading.Event()

    def sample() -> None:
        while not done.is_set():
            peak[0] = max(peak[0], _anon_bytes())
            done.wait(0.005)

    thread = threading.Thread(target=sample, daemon=True)
    thread.start()
    try:
        yield out
    finally:
        done.set()
        thread.join()
        out["peak_anon_gib"] = round(max(0, max(peak[0], _anon_bytes()) - base) / 2**30, 2)


def _timed(load: Callable[[], object]) -> dict[str, float]:
    with _peak_anon() as marks:
        start = time.perf_counter()
        load()
        marks["load_s"] = time.perf_counter() - start
    return marks


def _child(mode: str, paths: list[str], size: int) -> dict[str, float]:
    import diffusers
    import torch
    import transformers

    torch.set_grad_enabled(False)
    # The same imports before the clock in every arm.
    _ = (diffusers.StableDiffusionPipeline, transformers.CLIPTextModel)
    import sdstudio.engine.single_file as single_file

    if mode == "bare-folder":
        return _timed(lambda: diffusers.StableDiffusionPipeline.from_pretrained(
            paths[0], dtype=torch.float32, local_files_only=True, use_safetensors=True,
            safety_checker=None, feature_extractor=None, requires_safety_checker=False))
    if mode == "single-file":
        return _timed(lambda: single_file.load_single_file(Path(paths[0]), device="cpu",
                                                           dtype=torch.float32))
    from sdstudio.core.settings import EngineSettings
    from sdstudio.engine import Engine

    if mode == "switch":
        engine = Engine(EngineSettings(checkpoint_cache=1))
        folder, single = paths
        cold = engine.load(folder)
        other = engine.load(single)
        cached = engine.load(folder)
        kept = len(engine._cache)
        engine.unload()
        return {"cold_s": cold.load_s, "other_cold_s": other.load_s, "cached_s": cached.load_s,
                "kept": kept, "dtype": cold.dtype}  # type: ignore[dict-item]
    from sdstudio.core.events import ModelReady, Progress
    from sdstudio.core.request import GenerationRequest

    marks: dict[str, float] = {}
    start = time.perf_counter()

    def on_event(event: object) -> None:
        now = time.perf_counter() - start
        if isinstance(event, ModelReady):
            marks.setdefault("load_s", now)
        elif isinstance(event, Progress):
            marks.setdefault("first_step_s", now)

    Engine().generate(GenerationRequest(prompt="a lighthouse", width=size, height=size,
                                        steps=1, seed=1, model=paths[0]), on_event)
    return marks


def build(work: Path) -> tuple[Path, Path]:
    from _common import build_sd15_random

    from sdstudio.engine.convert import _save_safetensors, diffusers_to_ldm

    folder = build_sd15_random(work / "sd15-random")
    single = work / "sd15-random.safetensors"
    if not single.exists():
        _save_safetensors(diffusers_to_ldm(folder), single, {"format": "pt"})
    return folder, single


def _run_child(mode: str, paths: list[Path], size: int) -> dict[str, float]:
    proc = subprocess.run(
        [sys.executable, str(Path(__file__).resolve()), "--size", str(size), "--child", mode,
         *map(str, paths)], capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"{mode} failed:\n{proc.stderr[-3000:]}")
    result: dict[str, float] = json.loads(proc.stdout.strip().splitlines()[-1])
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--engine", action="store_true",
                        help="also time Engine.generate until the first step (folder, file)")
    parser.add_argument("--size", type=int, default=256, help="image side for the first step")
    parser.add_argument("--work", type=Path, default=None,
                        help="where to build (default: a temporary folder); a model built "
                        "there before is reused")
    parser.add_argument("--keep", action="store_true", help="keep the built model files")
    parser.add_argument("--child", nargs="+", metavar="ARG", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        print(json.dumps(_child(args.child[0], args.child[1:], args.size)))
        return 0

    if args.work is not None:
        args.work.mkdir(parents=True, exist_ok=True)
    reuse = args.work is not None and (args.work / "sd15-random" / "model_index.json").is_file()
    work = args.work if reuse else Path(tempfile.mkdtemp(prefix="sdstudio-bench-load-",
                                                         dir=args.work))
    modes = (*LOAD_MODES, "switch", *(ENGINE_MODES if args.engine else ()))
    results: dict[str, list[dict[str, float]]] = {m: [] for m in modes}
    try:
        t0 = time.perf_counter()
        folder, single = build(work)
        sizes = {
            "folder": sum(p.stat().st_size for p in folder.rglob("*.safetensors")),
            "single": single.stat().st_size,
        }
        print(f"built in {time.perf_counter() - t0:.0f} s: folder {sizes['folder'] / 2**30:.2f}"
              f" GiB, single file {sizes['single'] / 2**30:.2f} GiB (fp16)", flush=True)
        for rep in range(args.repeats):
            for mode in modes:
                paths = ([folder, single] if mode == "switch" else
                         [folder if mode.endswith("folder") else single])
                results[mode].append(_run_child(mode, paths, args.size))
                print(f"  run {rep + 1} {mode:<14} {results[mode][-1]}", flush=True)
    except RuntimeError as exc:
        print(exc, file=sys.stderr)
        return 1
    finally:
        if args.keep or reuse:
            print(f"kept {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)

    def med(mode: str, key: str) -> float:
        return statistics.median(float(r[key]) for r in results[mode])

    n = args.repeats
    print(f"\nSD 1.5 (random weights, fp16 files), median of {n} fresh processes per arm:")
    folder_s, file_s = med("bare-folder", "load_s"), med("single-file", "load_s")
    print(f"  load to fp32, bare diffusers folder   {folder_s:7.2f} s   peak anon "
          f"{med('bare-folder', 'peak_anon_gib'):5.2f} GiB")
    print(f"  load to fp32, single file (sdstudio)  {file_s:7.2f} s   peak anon "
          f"{med('single-file', 'peak_anon_gib'):5.2f} GiB")
    print(f"  single file / folder ratio {file_s / folder_s:.2f}x (goal <= {GOAL_FILE_RATIO}x)")
    cold, cached = med("switch", "cold_s"), med("switch", "cached_s")
    print(f"  Engine.load, {results['switch'][0]['dtype']}: cold {cold:6.2f} s, back from RAM "
          f"{cached:6.3f} s: cached switch / cold load ratio {cached / cold:.3f} "
          f"(goal <= {GOAL_SWITCH_RATIO})")
    if args.engine:
        for mode in ENGINE_MODES:
            print(f"  {mode}: loaded at {med(mode, 'load_s'):6.2f} s, first step done at "
                  f"{med(mode, 'first_step_s'):6.2f} s ({args.size}x{args.size})")
        print(f"  engine first step, file / folder ratio "
              f"{med('engine-file', 'first_step_s') / med('engine-folder', 'first_step_s'):.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
