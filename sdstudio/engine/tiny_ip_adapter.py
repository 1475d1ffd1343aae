"""Tiny random IP-Adapters and CLIP image encoders for tests and benchmarks.

The files are written in the layouts people download: an adapter as a safetensors file with
``image_proj.*`` / ``ip_adapter.*`` keys (or ``torch.save`` of the nested
``{"image_proj": ..., "ip_adapter": ...}`` dictionary, as the ``.bin`` files), the original
IP-Adapter key names (``proj``/``norm``; the Plus resampler's ``layers.N.0.to_kv`` ...), and
the encoder as a transformers ``CLIPVisionModelWithProjection`` folder or one safetensors
file. The engine loads them through the same code as real files.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

TINY_ENCODER: dict[str, Any] = {"hidden_size": 32, "intermediate_size": 64, "projection_dim": 16,
                "num_hidden_layers": 2, "num_attention_heads": 4, "image_size": 32,
                "patch_size": 8, "hidden_act": "gelu"}  # as OpenCLIP ViT-H / bigG


def build_tiny_clip_vision(dest: str | Path, *, single_file: bool = False, seed: int = 0,
                           **overrides: Any) -> Path:
    """A tiny ``CLIPVisionModelWithProjection``: a folder (config.json + model.safetensors),
    or, with ``single_file``, ``dest`` as one safetensors file in transformers' key layout."""
    from safetensors.torch import save_file
    from transformers import CLIPVisionConfig, CLIPVisionModelWithProjection

    torch.manual_seed(seed)
    config = CLIPVisionConfig(**{**TINY_ENCODER, **overrides})
    model = CLIPVisionModelWithProjection(config).eval()
    dest = Path(dest)
    if single_file:
        dest.parent.mkdir(parents=True, exist_ok=True)
        save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(dest))
    else:
        model.save_pretrained(dest, safe_serialization=True)
    return dest


def _plus_projection(width: int, cross: int, generator: torch.Generator) -> dict[str, Any]:
    """A Plus resampler in the original IP-Adapter key layout (diffusers converts it)."""
    from diffusers.models.embeddings import IPAdapterPlusImageProjection

    model = IPAdapterPlusImageProjection(embed_dims=width, output_dims=cross, hidden_dims=64,
                                         heads=1, num_queries=4)
    state = {k: torch.randn(v.shape, generator=generator) * 0.2
             for k, v in model.state_dict().items()}
    out: dict[str, Any] = {}
    for key, value in state.items():
        parts = key.split(".")
        if parts[0] != "layers":
            out[key] = value
            continue
        i, rest = parts[1], ".".join(parts[2:])
        original = {"ln0.weight": "0.norm1.weight", "ln0.bias": "0.norm1.bias",
                    "ln1.weight": "0.norm2.weight", "ln1.bias": "0.norm2.bias",
                    "attn.to_q.weight": "0.to_q.weight", "attn.to_out.0.weight": "0.to_out.weight",
                    "ff.0.weight": "1.0.weight", "ff.0.bias": "1.0.bias",
                    "ff.1.net.0.proj.weight": "1.1.weight", "ff.1.net.2.weight": "1.3.weight"}
        if rest in original:
            out[f"layers.{i}.{original[rest]}"] = value
    for i in range(4):
        out[f"layers.{i}.0.to_kv.weight"] = torch.cat(
            [state[f"layers.{i}.attn.to_k.weight"], state[f"layers.{i}.attn.to_v.weight"]])
    return out


def tiny_ip_adapter_state(unet: Any, *, variant: str = "plain", encoder: dict[str, int] | None
                          = None, seed: int = 0, scale: float = 0.5) -> dict[str, dict[str, Any]]:
    """``{"image_proj": ..., "ip_adapter": ...}`` with random weights shaped for ``unet``
    (its cross-attention layers) and the tiny encoder (``encoder``: its sizes)."""
    enc = {**TINY_ENCODER, **(encoder or {})}
    generator = torch.Generator().manual_seed(seed)
    dim = unet.config.cross_attention_dim
    cross = int(dim[0] if isinstance(dim, (list, tuple)) else dim)

    def randn(*shape: int) -> torch.Tensor:
        return torch.randn(*shape, generator=generator) * scale

    proj: dict[str, Any]
    if variant == "plain":
        proj = {"proj.weight": randn(4 * cross, enc["projection_dim"]),
                "proj.bias": randn(4 * cross), "norm.weight": torch.ones(cross),
                "norm.bias": torch.zeros(cross)}
    elif variant == "full-face":
        width = enc["hidden_size"]
        proj = {"proj.0.weight": randn(width, width), "proj.0.bias": randn(width),
                "proj.2.weight": randn(cross, width), "proj.2.bias": randn(cross),
                "proj.3.weight": torch.ones(cross), "proj.3.bias": torch.zeros(cross)}
    elif variant == "plus":
        proj = _plus_projection(enc["hidden_size"], cross, generator)
    else:
        raise ValueError(f"unknown variant {variant!r}")
    attn: dict[str, Any] = {}
    index = 1
    for name in unet.attn_processors:
        if name.endswith("attn1.processor") or name.startswith("encoder_hid_proj."):
            continue
        module = unet.get_submodule(name[: -len(".processor")])
        hidden = int(module.to_q.in_features)
        attn[f"{index}.to_k_ip.weight"] = randn(hidden, cross)
        attn[f"{index}.to_v_ip.weight"] = randn(hidden, cross)
        index += 2
    return {"image_proj": proj, "ip_adapter": attn}


def save_ip_adapter(state: dict[str, dict[str, Any]], dest: str | Path) -> Path:
    """Write an adapter as people get it: ``.safetensors`` flat with prefixes, anything else
    as ``torch.save`` of the nested dictionary."""
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    if dest.suffix == ".safetensors":
        from safetensors.torch import save_file

        flat = {f"{part}.{k}": v.contiguous() for part, d in state.items() for k, v in d.items()}
        save_file(flat, str(dest))
    else:
        torch.save(state, dest)
    return dest


def build_tiny_ip_adapter(dest: str | Path, unet: Any, **kwargs: Any) -> Path:
    """:func:`tiny_ip_adapter_state` saved to ``dest`` (see :func:`save_ip_adapter`)."""
    return save_ip_adapter(tiny_ip_adapter_state(unet, **kwargs), dest)
