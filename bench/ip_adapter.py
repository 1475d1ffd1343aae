"""IP-Adapter cost: loading an adapter with its CLIP image encoder, and a generation with it,
against diffusers' own IP-Adapter path and against the same generation without an adapter,
measured in the same run.

Builds (once, in ``--work-dir``) a real-size SD 1.5 model with random weights, an
``ip-adapter_sd15``-shaped adapter for it (4 image tokens from a 1024-wide embedding, one
``to_k_ip`` / ``to_v_ip`` pair per cross-attention layer) and a CLIP ViT-H/14-sized image
encoder (632 M weights, fp16 on disk) in the h94/IP-Adapter layout (``models/`` with the
adapter beside ``models/image_encoder/``). Then:

* ``load``: diffusers' ``pipe.load_ip_adapter(folder, weight_name=..., image_encoder_folder=
  "image_encoder")`` (baseline) against SD Studio's ``ip_adapter.prepare`` (file read safely,
  shape check, encoder found and loaded, adapter into the UNet, the reference image encoded);
* ``generate``: one ``--size`` image of ``--steps`` steps (Euler) through the engine without
  a unit, through the engine with the IP-Adapter unit, and through bare diffusers with
  ``ip_adapter_image``: the adapter's overhead (engine with / without) and SD Studio against
  diffusers with the adapter (ratios printed).

Both run fp32 on the CPU unless ``--device cuda`` (fp16). ``--smoke`` uses the tiny model,
adapter and encoder at 64 px (the test suite runs that). The first run builds the random
models (about 5 minutes and 6 GB of disk on a 2-core CPU); later runs reuse them.

    python bench/ip_adapter.py [--size 512] [--steps 4] [--runs 1] [--device cpu|cuda]
                               [--work-dir DIR] [--smoke] [--json FILE]
"""

from __future__ import annotations

import argparse
import gc
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
if str(HERE) not in sys.path:
    sys.path.insert(0, str(HERE))
import _common  # noqa: E402  (the repository on sys.path, offline)

VIT_H: dict[str, Any] = {"hidden_size": 1280, "intermediate_size": 5120, "projection_dim": 1024,
         "num_hidden_layers": 32, "num_attention_heads": 16, "image_size": 224,
         "patch_size": 14, "hidden_act": "gelu"}
ADAPTER = "ip-adapter_sd15.safetensors"


def build(work: Path, smoke: bool) -> tuple[Path, Path]:
    """(model folder, adapter file) in ``work``, built once."""
    import torch
    from diffusers import UNet2DConditionModel

    from sdstudio.engine.tiny import build_tiny_model
    from sdstudio.engine.tiny_ip_adapter import (
        TINY_ENCODER,
        build_tiny_clip_vision,
        build_tiny_ip_adapter,
    )

    kind = "tiny" if smoke else "sd15"
    model = work / f"{kind}-model"
    if smoke:
        if not (model / "model_index.json").is_file():
            build_tiny_model(model, kind="sd1")
    else:
        _common.build_sd15_random(model)
    adapter = work / f"{kind}-ip" / "models" / ADAPTER
    encoder = adapter.parent / "image_encoder"
    sizes = TINY_ENCODER if smoke else VIT_H
    if not (encoder / "config.json").is_file():
        build_tiny_clip_vision(encoder, **({} if smoke else VIT_H))
        if not smoke:  # half the disk; both loaders cast to the compute precision
            from transformers import CLIPVisionModelWithProjection

            half = CLIPVisionModelWithProjection.from_pretrained(encoder, dtype=torch.float16)
            half.save_pretrained(encoder, safe_serialization=True)
    if not adapter.is_file():
        unet = UNet2DConditionModel.from_pretrained(model / "unet")
        build_tiny_ip_adapter(adapter, unet, encoder={"projection_dim": sizes["projection_dim"]},
                              scale=0.02)
    return model, adapter


def reference_image(size: int) -> Any:
    import numpy as np
    from PIL import Image

    rng = np.random.RandomState(0)
    return Image.fromarray((rng.rand(size, size, 3) * 255).astype(np.uint8))


def diffusers_arm(model: Path, adapter: Path, args: argparse.Namespace, dtype: Any,
                  ref: Any) -> dict[str, float]:
    import torch
    from diffusers import EulerDiscreteScheduler, StableDiffusionPipeline

    pipe = StableDiffusionPipeline.from_pretrained(model, dtype=dtype, safety_checker=None,
                                                   requires_safety_checker=False)
    pipe.scheduler = EulerDiscreteScheduler.from_config(pipe.scheduler.config)
    pipe.to(args.device)
    pipe.set_progress_bar_config(disable=True)
    started = time.perf_counter()
    pipe.load_ip_adapter(str(adapter.parent), subfolder="", weight_name=adapter.name,
                         image_encoder_folder="image_encoder", local_files_only=True)
    load_s = time.perf_counter() - started
    kwargs: dict[str, Any] = {"ip_adapter_image": ref, "width": args.size, "height": args.size,
                              "guidance_scale": 7.0}
    pipe("a photo of a cat", num_inference_steps=1, **kwargs)  # warm-up, as the engine's
    times = []
    for run in range(args.runs):
        started = time.perf_counter()
        pipe("a photo of a cat", num_inference_steps=args.steps,
             generator=torch.Generator().manual_seed(run), **kwargs)
        times.append(time.perf_counter() - started)
    del pipe
    gc.collect()
    return {"load_s": load_s, "generate_s": _common.median(times)}


def engine_arms(model: Path, adapter: Path, args: argparse.Namespace, ref_path: Path,
                ref: Any) -> dict[str, float]:
    import torch

    from sdstudio.core.control import ControlUnit
    from sdstudio.core.request import GenerationRequest
    from sdstudio.core.settings import EngineSettings
    from sdstudio.engine import Engine, ip_adapter

    precision = "fp16" if args.device == "cuda" else "fp32"
    engine = Engine(EngineSettings(device=args.device, precision=precision))
    engine.load(str(model))
    loaded = engine._model
    assert loaded is not None
    unit = ip_adapter.ReferenceUnit(adapter, ref)
    started = time.perf_counter()
    state, _ = ip_adapter.prepare(None, loaded.pipes.base.unet, [unit], model_name=model.name,
                                  control_dirs=[], device=loaded.choice.device,
                                  encoder_device=loaded.choice.device,
                                  dtype=loaded.choice.dtype, guidance=True)
    if loaded.choice.device.type == "cuda":
        torch.cuda.synchronize()
    load_s = time.perf_counter() - started
    assert state is not None
    state.unload()
    request = GenerationRequest(prompt="a photo of a cat", width=args.size, height=args.size,
                                steps=args.steps, sampler="Euler", cfg_scale=7.0, seed=0,
                                model=str(model))
    with_unit = request.replace(control_units=(ControlUnit(
        model=str(adapter), image=str(ref_path), module="ip-adapter_clip_sd15"),))
    engine.generate(with_unit.replace(steps=1))  # the adapter loaded before the timing
    out: dict[str, list[float]] = {"plain_s": [], "ip_s": []}
    for run in range(args.runs):
        for key, req in (("plain_s", request), ("ip_s", with_unit)):
            started = time.perf_counter()
            engine.generate(req.replace(seed=run))
            out[key].append(time.perf_counter() - started)
    engine.unload()
    return {"load_s": load_s, **{k: _common.median(v) for k, v in out.items()}}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--runs", type=int, default=1)
    parser.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    parser.add_argument("--work-dir", type=Path,
                        default=Path(tempfile.gettempdir()) / "sdstudio-bench-ip-adapter")
    parser.add_argument("--smoke", action="store_true", help="tiny models at 64 px")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    if args.smoke:
        args.size, args.steps, args.runs = 64, 2, 1
    import torch

    args.work_dir.mkdir(parents=True, exist_ok=True)
    model, adapter = build(args.work_dir, args.smoke)
    ref_path = args.work_dir / "reference.png"
    ref = reference_image(256)
    ref.save(ref_path)
    dtype = torch.float16 if args.device == "cuda" else torch.float32
    bare = diffusers_arm(model, adapter, args, dtype, ref)
    ours = engine_arms(model, adapter, args, ref_path, ref)
    result = {"size": args.size, "steps": args.steps, "runs": args.runs,
              "device": args.device, "smoke": args.smoke, "diffusers": bare, "sdstudio": ours}
    print(f"IP-Adapter, {'tiny' if args.smoke else 'SD 1.5 + ViT-H sized'} random weights, "
          f"{args.size}x{args.size}, {args.steps} steps, {args.device}, median of {args.runs}")
    print(f"  load adapter + encoder: diffusers {bare['load_s']:.2f} s, SD Studio "
          f"{ours['load_s']:.2f} s (x{ours['load_s'] / bare['load_s']:.2f})")
    print(f"  generate: SD Studio plain {ours['plain_s']:.2f} s, with the adapter "
          f"{ours['ip_s']:.2f} s (x{ours['ip_s'] / ours['plain_s']:.2f}); diffusers with the "
          f"adapter {bare['generate_s']:.2f} s "
          f"(SD Studio x{ours['ip_s'] / bare['generate_s']:.2f})")
    if args.json:
        args.json.write_text(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
