"""Batch benchmark: per-image wall time of the batch runner against a bare diffusers loop.

    python bench/batch.py [--prompts 50] [--size 128] [--steps 4] [--rounds 3] [--no-procs]

On the tiny model (built locally, untrained), in one run:

1. bare: a loop of ``StableDiffusionPipeline.__call__`` (Euler a, CPU generator per image, PIL
   output, nothing saved) over N prompts — the baseline;
2. engine: a loop of ``Engine.generate`` without saving (the engine's own overhead, measured
   in detail by bench/overhead.py);
3. runner: ``BatchRunner`` in this process on the engine (model loaded before timing, as for
   the baseline), saving every PNG with metadata atomically + fsynced manifest line;
   bare, engine and runner run ``--rounds`` times in a rotating order; medians (and minima),
   the paired ratio per round and process CPU time are printed; the engine runs with
   ``preview_every=0``, as ``sdstudio batch`` does;
4. cli: ``sdstudio batch`` as a subprocess, wall time including interpreter start, torch
   import and model load, divided by N; and its steady per-image time, (wall for N prompts -
   wall for the first prompt alone) / (N - 1);
5. two processes: ``accelerate launch --multi_gpu --num_processes 2 -m sdstudio batch`` (gloo on
   CPU) against two bare-loop processes each doing half of the prompts, started together;
   one torch thread per process in both.

Prints a table and the ratios (goal for the in-process runner: <= 1.02).
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

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("DIFFUSERS_VERBOSITY", "error")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")


def prompts(n: int) -> list[str]:
    subjects = ["a lighthouse", "a red fox", "a castle", "a bowl of fruit", "a city street"]
    styles = ["at dawn", "in the snow", "watercolor", "oil painting", "at night"]
    return [f"{subjects[i % 5]} {styles[(i // 5) % 5]}, study {i}" for i in range(n)]


def bare_pipe(model: Path, size: int, steps: int) -> object:
    from diffusers import EulerAncestralDiscreteScheduler, StableDiffusionPipeline

    pipe = StableDiffusionPipeline.from_pretrained(str(model), safety_checker=None,
                                                   requires_safety_checker=False)
    pipe.scheduler = EulerAncestralDiscreteScheduler.from_config(pipe.scheduler.config)
    pipe.set_progress_bar_config(disable=True)
    pipe("warm-up", num_inference_steps=steps, width=size, height=size)
    return pipe


def bare_loop(model: Path, texts: list[str], size: int, steps: int, seed0: int,
              pipe: object = None) -> float:
    """Seconds for a plain diffusers loop over ``texts`` (pipeline loaded before timing)."""
    import torch

    pipe = pipe or bare_pipe(model, size, steps)
    t0 = time.perf_counter()
    for i, text in enumerate(texts):
        gen = torch.Generator("cpu").manual_seed(seed0 + i)
        pipe(text, num_inference_steps=steps, width=size, height=size,  # type: ignore[operator]
             guidance_scale=7.0, generator=gen).images[0]
    return time.perf_counter() - t0


def engine_loop(engine: object, model: Path, texts: list[str], size: int, steps: int,
                seed0: int) -> float:
    """A bare loop of ``Engine.generate`` (no saving): isolates the runner's own cost."""
    from sdstudio.core.request import GenerationRequest

    base = GenerationRequest(prompt="", width=size, height=size, steps=steps, model=str(model))
    t0 = time.perf_counter()
    for i, text in enumerate(texts):
        engine.generate(base.replace(prompt=text, seed=seed0 + i))  # type: ignore[attr-defined]
    return time.perf_counter() - t0


def runner_loop(engine: object, model: Path, texts: list[str], size: int, steps: int,
                seed0: int, out: Path) -> float:
    from sdstudio.batch.plan import BatchOptions
    from sdstudio.batch.runner import BatchRunner
    from sdstudio.core.prompts import parse_prompt_list
    from sdstudio.core.request import GenerationRequest

    defaults = GenerationRequest(prompt="", width=size, height=size, steps=steps,
                                 seed=seed0, model=str(model))
    plist = parse_prompt_list("\n".join(texts), defaults)
    t0 = time.perf_counter()
    summary = BatchRunner(engine, plist, BatchOptions(out)).run()  # type: ignore[arg-type]
    elapsed = time.perf_counter() - t0
    assert summary.done == len(texts) and not summary.failed, summary.line()
    return elapsed


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--prompts", type=int, default=50)
    ap.add_argument("--size", type=int, default=128)
    ap.add_argument("--steps", type=int, default=4)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--threads", type=int, default=0,
                    help="torch threads in this process (0 = torch's default)")
    ap.add_argument("--no-procs", action="store_true", help="skip the subprocess parts")
    ap.add_argument("--json", type=Path, default=None, help="write the figures here")
    ap.add_argument("--bare-worker", nargs=4, metavar=("MODEL", "START", "STOP", "OUT"),
                    help=argparse.SUPPRESS)
    args = ap.parse_args()
    texts = prompts(args.prompts)

    if args.bare_worker:  # one of the two bare-loop processes
        model, start, stop, out = args.bare_worker
        import torch

        torch.set_num_threads(1)
        t = bare_loop(Path(model), texts[int(start):int(stop)], args.size, args.steps,
                      1000 + int(start))
        Path(out).write_text(json.dumps({"seconds": t}))
        return 0

    import torch

    from sdstudio.core.settings import EngineSettings
    from sdstudio.engine import Engine
    from sdstudio.engine.tiny import build_tiny_model

    if args.threads:
        torch.set_num_threads(args.threads)

    work = Path(tempfile.mkdtemp(prefix="sdstudio-bench-batch-"))
    model = build_tiny_model(work / "tiny", kind="sd1")
    n = len(texts)
    print(f"tiny model, {n} prompts, {args.size}x{args.size}, {args.steps} steps, "
          f"torch {torch.__version__}, {torch.get_num_threads()} threads")

    # as `sdstudio batch` runs it: no previews (batch/cli.py sets preview_every=0)
    engine = Engine(EngineSettings(preview_every=0))
    engine.load(str(model))
    print(f"engine settings: preview_every {engine.settings.preview_every}, memory mode "
          f"{engine.settings.memory_mode}, device {engine.settings.device}; Euler a, CFG 7, "
          "CPU generator per image; runner: PNG with metadata, atomic + fsynced, then an "
          "fsynced manifest line, saved on the runner's writer thread")
    from sdstudio.core.request import GenerationRequest

    engine.generate(GenerationRequest(prompt="warm", width=args.size, height=args.size,
                                      steps=args.steps, seed=1, model=str(model)))
    pipe = bare_pipe(model, args.size, args.steps)
    arms = {
        "bare": lambda r: bare_loop(model, texts, args.size, args.steps, 1000, pipe),
        "engine": lambda r: engine_loop(engine, model, texts, args.size, args.steps, 1000),
        "runner": lambda r: runner_loop(engine, model, texts, args.size, args.steps, 1000,
                                        work / f"out-{r}"),
    }
    wall: dict[str, list[float]] = {k: [] for k in arms}
    cpu: dict[str, list[float]] = {k: [] for k in arms}
    names = list(arms)
    for r in range(args.rounds):
        for name in names[r % 3:] + names[:r % 3]:  # rotating order
            c0 = time.process_time()
            wall[name].append(arms[name](r))
            cpu[name].append(time.process_time() - c0)
        print(f"round {r + 1}: " + ", ".join(
            f"{k} {wall[k][-1] / n * 1000:.1f} ms/image (CPU {cpu[k][-1] / n * 1000:.1f})"
            for k in names))
    med = {k: statistics.median(v) / n * 1000 for k, v in wall.items()}
    figures: dict[str, float] = {
        "bare_ms": med["bare"], "engine_ms": med["engine"], "runner_ms": med["runner"],
        "bare_min_ms": min(wall["bare"]) / n * 1000,
        "engine_min_ms": min(wall["engine"]) / n * 1000,
        "runner_min_ms": min(wall["runner"]) / n * 1000,
    }
    for k in ("engine", "runner"):
        figures[f"{k}_paired_ratio"] = statistics.median(
            a / b for a, b in zip(wall[k], wall["bare"], strict=True))
        figures[f"{k}_cpu_ratio"] = statistics.median(cpu[k]) / statistics.median(cpu["bare"])
    figures["runner_ratio"] = figures["runner_ms"] / figures["bare_ms"]
    figures["engine_ratio"] = figures["engine_ms"] / figures["bare_ms"]
    figures["runner_vs_engine"] = figures["runner_ms"] / figures["engine_ms"]

    if not args.no_procs:
        env = dict(os.environ, PYTHONPATH=str(ROOT), SDSTUDIO_HOME=str(work / "home"))
        if args.threads:
            env["OMP_NUM_THREADS"] = str(args.threads)
        list_path = work / "list.txt"
        list_path.write_text("\n".join(texts) + "\n", encoding="utf-8")
        common = ["batch", str(list_path), "--model", str(model), "--width", str(args.size),
                  "--height", str(args.size), "--steps", str(args.steps), "--seed", "1000",
                  "--quiet"]
        t0 = time.perf_counter()
        subprocess.run([sys.executable, "-m", "sdstudio", *common, "--out",
                        str(work / "cli")], env=env, check=True)
        t_all = time.perf_counter() - t0
        figures["cli_ms"] = t_all / n * 1000
        figures["cli_ratio"] = figures["cli_ms"] / figures["bare_ms"]
        # the same command on the first prompt only: what start-up (interpreter, imports, model
        # load, first image) costs; the difference is the CLI's steady per-image time
        one_path = work / "one.txt"
        one_path.write_text(texts[0] + "\n", encoding="utf-8")
        one = [one_path if a == str(list_path) else a for a in common]
        t0 = time.perf_counter()
        subprocess.run([sys.executable, "-m", "sdstudio", *map(str, one), "--out",
                        str(work / "cli-one")], env=env, check=True)
        t_one = time.perf_counter() - t0
        figures["cli_startup_s"] = t_one
        figures["cli_steady_ms"] = (t_all - t_one) / (n - 1) * 1000
        figures["cli_steady_ratio"] = figures["cli_steady_ms"] / figures["bare_ms"]

        env1 = dict(env, OMP_NUM_THREADS="1")
        half = n // 2
        t0 = time.perf_counter()
        workers = [
            subprocess.Popen([sys.executable, __file__, "--prompts", str(n), "--size",
                              str(args.size), "--steps", str(args.steps), "--bare-worker",
                              str(model), str(a), str(b), str(work / f"bare{a}.json")],
                             env=env1)
            for a, b in ((0, half), (half, n))
        ]
        for w in workers:
            if w.wait() != 0:
                raise SystemExit("a bare worker failed")
        figures["bare2_wall_ms"] = (time.perf_counter() - t0) / n * 1000
        figures["bare2_loop_ms"] = max(
            json.loads((work / f"bare{a}.json").read_text())["seconds"] for a in (0, half)
        ) / n * 1000
        launcher = shutil.which("accelerate", path=str(Path(sys.executable).parent)) \
            or shutil.which("accelerate")
        if launcher:
            t0 = time.perf_counter()
            subprocess.run([launcher, "launch", "--multi_gpu", "--num_processes", "2",
                            "--num_machines", "1", "--mixed_precision", "no",
                            "--dynamo_backend", "no", "--num_cpu_threads_per_process", "1",
                            "-m", "sdstudio", *common, "--out", str(work / "two")],
                           env=env1, check=True)
            figures["two_ms"] = (time.perf_counter() - t0) / n * 1000
            figures["two_ratio_vs_bare2_wall"] = figures["two_ms"] / figures["bare2_wall_ms"]

    print()
    print(f"medians over {args.rounds} rounds (min in brackets); paired = median over rounds "
          "of the ratio to that round's bare loop; CPU = process CPU time, all threads")
    print(f"{'what':52s} {'ms/image':>9s} {'(min)':>7s} {'ratio':>7s} {'paired':>7s} "
          f"{'CPU':>6s}")
    print(f"{'bare diffusers loop (baseline, in process)':52s} {figures['bare_ms']:9.1f} "
          f"{figures['bare_min_ms']:7.1f} {1.0:7.3f}")
    print(f"{'Engine.generate loop, no saving (engine overhead)':52s} "
          f"{figures['engine_ms']:9.1f} {figures['engine_min_ms']:7.1f} "
          f"{figures['engine_ratio']:7.3f} {figures['engine_paired_ratio']:7.3f} "
          f"{figures['engine_cpu_ratio']:6.3f}")
    print(f"{'BatchRunner in process (PNG+metadata+manifest)':52s} {figures['runner_ms']:9.1f}"
          f" {figures['runner_min_ms']:7.1f} {figures['runner_ratio']:7.3f} "
          f"{figures['runner_paired_ratio']:7.3f} {figures['runner_cpu_ratio']:6.3f}"
          f"  ({figures['runner_vs_engine']:.3f} x engine loop; goal <= 1.02 x bare)")
    if "cli_ms" in figures:
        print(f"{'sdstudio batch subprocess (incl. start-up)':52s} {figures['cli_ms']:9.1f}"
              f" {'':7s} {figures['cli_ratio']:7.3f}")
        print(f"{'sdstudio batch subprocess, per image after start-up':52s} "
              f"{figures['cli_steady_ms']:9.1f} {'':7s} {figures['cli_steady_ratio']:7.3f}"
              f"  (start-up + 1 image: {figures['cli_startup_s']:.1f} s)")
        print(f"{'2 bare processes, wall incl. start-up':52s} {figures['bare2_wall_ms']:9.1f}")
        print(f"{'2 bare processes, loop only (slowest)':52s} {figures['bare2_loop_ms']:9.1f}")
    if "two_ms" in figures:
        print(f"{'accelerate 2 processes sdstudio batch, wall':52s} {figures['two_ms']:9.1f}"
              f" {figures['two_ratio_vs_bare2_wall']:7.3f}  (vs 2 bare processes, wall)")
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2))
    shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
