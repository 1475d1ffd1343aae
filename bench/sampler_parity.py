"""SD Studio's samplers against k-diffusion on the SD 1.5 architecture (random weights, built
locally: no download), once: the check tests/engine/test_kdiffusion_parity.py makes on the tiny
models, at real UNet size. Prints the max |diff| of the final latents per sampler.

    python bench/sampler_parity.py                       # CPU, fp32, 64x64, 4 steps
    python bench/sampler_parity.py --samplers "Euler a,DPM++ SDE" --steps 6 --size 128

Needs k-diffusion (installed with --no-deps by `python3 installer/bootstrap.py test`).
Exit status 1 when a sampler is off by more than the test's tolerance.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from _common import ROOT, build_sd15_random

DEFAULT_SAMPLERS = ("Euler a", "Euler", "DPM++ 2M", "DPM++ SDE", "DPM++ 2M SDE", "DPM2 a",
                    "Heun", "Restart", "LCM")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--samplers", default=",".join(DEFAULT_SAMPLERS))
    parser.add_argument("--schedule", default="Automatic")
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--work-dir", type=Path, help="keep the random model here")
    parser.add_argument("--model", type=Path, help="a diffusers folder instead")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    import torch

    sys.path.insert(0, str(ROOT))
    from sdstudio.core.request import GenerationRequest
    from sdstudio.engine import Engine
    from sdstudio.engine import runner as runner_module
    from tests.engine import _kdiffusion
    from tests.engine.test_kdiffusion_parity import TOL, Captured, reference_run

    kd = _kdiffusion.load()
    work = args.work_dir or Path(tempfile.mkdtemp(prefix="sdstudio-parity-"))
    work.mkdir(parents=True, exist_ok=True)
    folder = args.model or build_sd15_random(work / "sd15-random", dtype=torch.float32)
    engine = Engine()
    engine.load(str(folder))
    unet = engine._model.pipes.base.unet  # type: ignore[union-attr]
    worst = 0.0
    print(f"SD 1.5 architecture, random fp32 weights, {args.size}x{args.size}, "
          f"{args.steps} steps, schedule {args.schedule}; tolerance {TOL:g} x |reference|")
    for sampler in [s.strip() for s in args.samplers.split(",") if s.strip()]:
        request = GenerationRequest(prompt="a photo of a cat", width=args.size,
                                    height=args.size, steps=args.steps, seed=1234,
                                    sampler=sampler, schedule_type=args.schedule,
                                    model=str(folder)).validated()
        got = Captured()

        def hook(module: Any, hook_args: Any, kwargs: dict[str, Any], got: Captured = got
                 ) -> None:
            if got.unet_kwargs is None:
                got.unet_kwargs = dict(kwargs)

        def decode(pipe: Any, latents: Any, got: Captured = got,
                   real: Any = runner_module.decode_latents) -> Any:
            got.latents = latents.detach().clone()
            return real(pipe, latents)

        handle = unet.register_forward_pre_hook(hook, with_kwargs=True)
        saved = runner_module.decode_latents
        runner_module.decode_latents = decode  # type: ignore[assignment]
        started = time.perf_counter()
        try:
            engine.generate(request)
        finally:
            runner_module.decode_latents = saved  # type: ignore[assignment]
            handle.remove()
        ours_s = time.perf_counter() - started
        started = time.perf_counter()
        ref = reference_run(kd, engine, got, request)
        ref_s = time.perf_counter() - started
        assert got.latents is not None
        diff = (got.latents.float() - ref.float()).abs().max().item()
        relative = diff / max(1.0, ref.abs().max().item())
        worst = max(worst, relative)
        print(f"  {sampler:<18} max |diff| {diff:.3g} ({relative:.2g} of |ref|)  "
              f"SD Studio {ours_s:.1f} s, k-diffusion {ref_s:.1f} s")
    print(f"worst: {worst:.2g} of |reference|")
    return 0 if worst <= TOL else 1


if __name__ == "__main__":
    sys.exit(main())
