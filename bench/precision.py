"""CPU precision: ``sdstudio generate --precision auto`` against ``--precision fp32`` end to
end, on a real-size SD 1.5 with random weights, and the UNet step in the variants tried.

End to end (the default): every run is a fresh process running the real CLI (``sdstudio
generate``: interpreter start, imports, model load, prompt encoding, the denoising steps,
VAE decode, PNG save), the arms alternating, ``--repeats`` times each. Printed per arm: the
median wall time, the median seconds per denoising step (between step callbacks), the load
time and the dtype the engine chose; then the ratio fp32 / auto (> 1: auto is faster).

    python bench/precision.py                    # 512x512, 5 steps, 2 repeats: ~8 min here
    python bench/precision.py --steps 20 --repeats 3
    python bench/precision.py --unet             # one UNet step (CFG batch 2) per variant

``--unet`` times one UNet call at the size (batch 2, as with CFG) in one process for each
variant: fp32, fp32 + channels_last, bf16 weights, bf16 + channels_last, bf16 + channels_last +
the blocked bf16 attention of engine/cpu_attention.py (what ``auto`` runs on a bf16 CPU), fp32
weights under bf16 autocast, and (``--compile``) bf16 under ``torch.compile``; medians of
``--repeats`` after a warm-up, with the ratio to fp32. The model is built once under
``--work-dir`` (default: a temporary folder, removed afterwards unless ``--keep``).
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
for p in (str(ROOT), str(HERE)):
    if p not in sys.path:
        sys.path.insert(0, p)

from _common import build_sd15_random, median  # noqa: E402

ARMS = ("fp32", "auto")
UNET_VARIANTS = ("fp32", "fp32-channels_last", "bf16", "bf16-channels_last",
                 "bf16-channels_last-blocked", "fp32-autocast_bf16")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--arms", default=",".join(ARMS),
                        help="precisions to compare end to end (first = the baseline)")
    parser.add_argument("--unet", action="store_true", help="time the UNet step variants")
    parser.add_argument("--variants", help="with --unet: a comma-separated subset of "
                        + ", ".join(UNET_VARIANTS) + " (fp32 is always first)")
    parser.add_argument("--compile", action="store_true",
                        help="with --unet: also bf16 under torch.compile (slow to compile)")
    parser.add_argument("--model", help="a diffusers folder instead of SD 1.5 random weights")
    parser.add_argument("--work-dir", help="where to build the model (default: temporary)")
    parser.add_argument("--keep", action="store_true", help="keep the temporary folder")
    parser.add_argument("--json", help="also write the figures as JSON to this file")
    parser.add_argument("--child", help=argparse.SUPPRESS)  # internal: one CLI run
    return parser


def _child(out: str, cli_args: list[str]) -> int:
    """One run of the real CLI with the step callback's times recorded into ``out``."""
    from sdstudio import cli
    from sdstudio.core.events import ModelReady
    from sdstudio.engine import latents, runner

    stamps: list[float] = []
    ready: list[ModelReady] = []
    real_call = latents.StepCallback.__call__

    def call(self: Any, pipe: Any, i: int, t: Any, kwargs: dict[str, Any]) -> Any:
        stamps.append(time.perf_counter())
        return real_call(self, pipe, i, t, kwargs)

    real_load = runner.Engine.load

    def load(self: Any, *args: Any, **kwargs: Any) -> ModelReady:
        result = real_load(self, *args, **kwargs)
        ready.append(result)
        return result

    latents.StepCallback.__call__ = call  # type: ignore[method-assign]
    runner.Engine.load = load  # type: ignore[method-assign]
    code = cli.main(cli_args)
    steps = [b - a for a, b in itertools.pairwise(stamps)]
    Path(out).write_text(json.dumps({
        "code": code, "step_s": median(steps) if steps else float("nan"),
        "dtype": ready[0].dtype if ready else "", "load_s": ready[0].load_s if ready else 0}))
    return int(code or 0)


def _end_to_end(args: argparse.Namespace, folder: Path, work: Path) -> dict[str, Any]:
    arms = [a for a in args.arms.split(",") if a]
    runs: dict[str, list[dict[str, Any]]] = {a: [] for a in arms}
    env = dict(os.environ, SDSTUDIO_HOME=str(work / "home"), HF_HUB_OFFLINE="1")
    env.pop("SDSTUDIO_PRECISION", None)  # "auto" as a person gets it
    for repeat in range(args.repeats):
        order = arms if repeat % 2 == 0 else arms[::-1]
        for arm in order:
            out = work / f"run-{arm}-{repeat}.json"
            cli_args = ["generate", "--prompt", "a photo of a cat", "--model", str(folder),
                        "--precision", arm, "--width", str(args.size), "--height",
                        str(args.size), "--steps", str(args.steps), "--seed", "1",
                        "--sampler", "Euler a", "--out", str(work / f"out-{arm}")]
            started = time.perf_counter()
            proc = subprocess.run(
                [sys.executable, str(Path(__file__).resolve()), "--child", str(out), "--",
                 *cli_args], env=env, cwd=str(ROOT), capture_output=True, text=True,
                check=False)
            wall = time.perf_counter() - started
            if proc.returncode != 0:
                sys.stderr.write(proc.stdout + proc.stderr)
                raise SystemExit(f"the {arm} run failed (exit {proc.returncode})")
            result = json.loads(out.read_text())
            result["wall_s"] = wall
            runs[arm].append(result)
            print(f"  {arm:6} run {repeat + 1}: {wall:7.1f} s, {result['step_s']:.2f} s/step, "
                  f"load {result['load_s']:.1f} s, dtype {result['dtype']}", flush=True)
    summary = {arm: {"wall_s": median([r["wall_s"] for r in rs]),
                     "step_s": median([r["step_s"] for r in rs]),
                     "load_s": median([r["load_s"] for r in rs]),
                     "dtype": rs[0]["dtype"]} for arm, rs in runs.items()}
    base = arms[0]
    print(f"\nSD 1.5 architecture, random weights; {args.size}x{args.size}, {args.steps} "
          f"steps, Euler a; fresh processes, alternating; median of {args.repeats}")
    print(f"{'arm':8} {'dtype':16} {'wall s':>8} {'s/step':>8} {'load s':>7} "
          f"{'wall ' + base + '/arm':>14} {'step ' + base + '/arm':>14}")
    for arm, s in summary.items():
        print(f"{arm:8} {s['dtype']:16} {s['wall_s']:8.1f} {s['step_s']:8.2f} "
              f"{s['load_s']:7.1f} {summary[base]['wall_s'] / s['wall_s']:14.2f} "
              f"{summary[base]['step_s'] / s['step_s']:14.2f}")
    return {"end_to_end": summary, "runs": runs}


def _unet(args: argparse.Namespace, folder: Path) -> dict[str, Any]:
    import torch
    from diffusers import UNet2DConditionModel

    torch.set_grad_enabled(False)
    from sdstudio.engine import cpu_attention

    chosen = [v for v in (args.variants or "").split(",") if v]
    unknown = sorted(set(chosen) - set(UNET_VARIANTS))
    if unknown:
        raise SystemExit(f"unknown variant(s): {', '.join(unknown)}")
    variants = ["fp32", *[v for v in chosen if v != "fp32"]] if chosen else list(UNET_VARIANTS)
    variants += ["bf16-compile"] if args.compile else []
    latent = args.size // 8
    results: dict[str, float] = {}
    for variant in variants:
        bf16_weights = variant.startswith("bf16")
        dtype = torch.bfloat16 if bf16_weights else torch.float32
        unet = UNet2DConditionModel.from_pretrained(folder / "unet", dtype=dtype).eval()
        gen = torch.Generator().manual_seed(0)
        cfg = unet.config  # SD 1.5: 4 channels, 768-wide text embeddings
        x = torch.randn(2, cfg.in_channels, latent, latent, generator=gen).to(dtype)
        ctx = torch.randn(2, 77, cfg.cross_attention_dim, generator=gen).to(dtype)
        t = torch.tensor([500])
        if "channels_last" in variant:
            unet.to(memory_format=torch.channels_last)
            x = x.to(memory_format=torch.channels_last)
        call: Any = unet
        compile_s = 0.0
        if variant.endswith("compile"):
            call = torch.compile(unet, dynamic=False)
        autocast = variant.endswith("autocast_bf16")
        blocked = variant.endswith("blocked")

        def step(call: Any = call, x: torch.Tensor = x, ctx: torch.Tensor = ctx,
                 t: torch.Tensor = t, autocast: bool = autocast, blocked: bool = blocked
                 ) -> None:
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast), \
                    cpu_attention.installed(blocked):
                call(x, t, ctx)

        started = time.perf_counter()
        step()  # warm-up (and the compilation)
        compile_s = time.perf_counter() - started
        times = []
        for _ in range(args.repeats):
            started = time.perf_counter()
            step()
            times.append(time.perf_counter() - started)
        results[variant] = median(times)
        extra = f" (first call {compile_s:.0f} s)" if variant.endswith("compile") else ""
        print(f"  {variant:20} {results[variant]:6.2f} s/step  "
              f"x{results['fp32'] / results[variant]:.2f} vs fp32{extra}", flush=True)
        del unet, call
    return {"unet_step_s": results}


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if "--child" in argv:
        split = argv.index("--")
        return _child(argv[argv.index("--child") + 1], argv[split + 1:])
    args = _parser().parse_args(argv)
    temp = args.work_dir is None
    work = Path(args.work_dir or tempfile.mkdtemp(prefix="sdstudio-precision-"))
    work.mkdir(parents=True, exist_ok=True)
    try:
        import torch

        from sdstudio.engine import accel

        folder = Path(args.model) if args.model else build_sd15_random(work / "sd15-random")
        cpu = accel.cpu_precision()
        print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, capability "
              f"{torch.backends.cpu.get_cpu_capability()}; auto: {cpu.reason}", flush=True)
        figures = _unet(args, folder) if args.unet else _end_to_end(args, folder, work)
        if args.json:
            Path(args.json).write_text(json.dumps(figures, indent=2))
    finally:
        if temp and not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
