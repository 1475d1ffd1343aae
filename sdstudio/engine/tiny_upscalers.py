"""Upscaler model files with random weights, built locally from spandrel's own architecture
classes (tests and benchmarks; nothing is downloaded).

``build_upscaler(path, "esrgan" | "esrgan-new" | "compact" | "swinir", scale=4, ...)`` writes
a ``.pth`` (``torch.save`` of the state dict) or ``.safetensors`` file, chosen by the suffix.
``"esrgan"`` is the old-arch key layout (``model.0.weight``, ``model.1.sub.0.RDB1...``) most
ESRGAN files have; ``"esrgan-new"`` the layout of xinntao's newer RRDBNet (``conv_first``,
``body.0.rdb1...``, Real-ESRGAN's files). Default sizes are tiny (a few thousand weights);
``bench/upscale.py`` asks for the real size (23 blocks, 64 features).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from sdstudio.engine.spandrel_import import import_spandrel

KINDS = ("esrgan", "esrgan-new", "compact", "swinir")


def _module(kind: str, scale: int, sizes: dict[str, Any]) -> Any:
    import_spandrel()
    if kind in ("esrgan", "esrgan-new"):
        from spandrel.architectures.ESRGAN import ESRGAN

        return ESRGAN(num_filters=sizes.get("num_filters", 8),
                      num_blocks=sizes.get("num_blocks", 1), scale=scale)
    if kind == "compact":
        from spandrel.architectures.Compact import Compact

        return Compact(num_feat=sizes.get("num_feat", 8), num_conv=sizes.get("num_conv", 2),
                       upscale=scale)
    if kind == "swinir":
        from spandrel.architectures.SwinIR import SwinIR

        return SwinIR(img_size=sizes.get("img_size", 16), embed_dim=sizes.get("embed_dim", 12),
                      depths=sizes.get("depths", [1]), num_heads=sizes.get("num_heads", [2]),
                      window_size=sizes.get("window_size", 4), upscale=scale,
                      upsampler="pixelshuffledirect")
    raise ValueError(f"unknown upscaler kind {kind!r} (one of {', '.join(KINDS)})")


def _old_to_new_esrgan(state: dict[str, Any], num_blocks: int) -> dict[str, Any]:
    """Rename old-arch ESRGAN keys to the new RRDBNet layout (spandrel reads both)."""
    fixed = {"model.0": "conv_first", f"model.1.sub.{num_blocks}": "conv_body",
             "model.3": "conv_up1", "model.6": "conv_up2"}
    out: dict[str, Any] = {}
    last_two = sorted({int(k.split(".")[1]) for k in state if re.match(r"model\.\d+\.", k)})[-2:]
    fixed[f"model.{last_two[0]}"] = "conv_hr"
    fixed[f"model.{last_two[1]}"] = "conv_last"
    for key, value in state.items():
        m = re.match(r"model\.1\.sub\.(\d+)\.RDB(\d)\.conv(\d)\.0\.(weight|bias)$", key)
        if m:
            out[f"body.{m[1]}.rdb{m[2]}.conv{m[3]}.{m[4]}"] = value
            continue
        prefix, _, leaf = key.rpartition(".")
        if prefix not in fixed:
            raise ValueError(f"unexpected ESRGAN key {key}")
        out[f"{fixed[prefix]}.{leaf}"] = value
    return out


def build_upscaler(path: Path, kind: str = "esrgan", *, scale: int = 4, seed: int = 0,
                   **sizes: Any) -> Path:
    """Write a random-weight upscaler of ``kind`` to ``path`` (format from the suffix).
    Weights are drawn with ``seed``; outputs land mid-range (not clamped flat)."""
    import torch

    torch.manual_seed(seed)
    module = _module(kind, scale, sizes)
    with torch.no_grad():
        for name, param in module.named_parameters():
            if name.endswith("weight") and param.ndim > 1:
                fan_in = param[0].numel()
                param.normal_(0.0, (1.0 / fan_in) ** 0.5)
    state = {k: v.detach().clone().contiguous() for k, v in module.state_dict().items()}
    if kind == "esrgan-new":
        state = _old_to_new_esrgan(state, sizes.get("num_blocks", 1))
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix.lower() == ".safetensors":
        from safetensors.torch import save_file

        save_file(state, str(path))
    else:
        torch.save(state, path)
    return path
