"""Tiny LoRA-family files for the tiny models: kohya / LyCORIS key names and random factors
shaped from the loaded pipeline's own layers."""

from __future__ import annotations

from typing import Any

import torch

# Layers of the tiny SD1 model used by the format tests (diffusers names)
LINEAR = "down_blocks.1.attentions.0.transformer_blocks.0.attn2.to_k"  # 64 x 32
CONV3 = "down_blocks.1.resnets.0.conv1"  # 64 x 32 x 3 x 3
CONV1 = "down_blocks.1.resnets.0.conv_shortcut"  # 64 x 32 x 1 x 1
NORM = "down_blocks.1.resnets.0.norm1"  # GroupNorm(32)
BIASED = "time_embedding.linear_1"  # 128 x 32, with a bias
TEXT = "text_model.encoder.layers.0.self_attn.q_proj"


def kohya(prefix: str, name: str) -> str:
    return prefix + name.replace(".", "_")


def module(root: Any, name: str) -> Any:
    """``root``'s module ``name``; text encoders may be flattened (no ``text_model.``)."""
    mods = dict(root.named_modules())
    return mods.get(name) or mods[name.removeprefix("text_model.")]


class Rand:
    """Seeded random factors, small enough that the changed weights stay sensible."""

    def __init__(self, seed: int) -> None:
        self.gen = torch.Generator().manual_seed(seed)

    def __call__(self, *shape: int, scale: float = 0.2) -> torch.Tensor:
        return torch.randn(*shape, generator=self.gen) * scale


def lora_layer(rand: Rand, weight: torch.Tensor, rank: int, alpha: float,
               *, tucker: bool = False) -> dict[str, torch.Tensor]:
    """LoRA / LoCon factors for a layer of ``weight``'s shape (kohya's layout)."""
    out, inp = weight.shape[:2]
    if weight.ndim == 2:
        w = {"lora_down.weight": rand(rank, inp), "lora_up.weight": rand(out, rank)}
    elif tucker:
        kh, kw = weight.shape[2:]
        w = {"lora_down.weight": rand(rank, inp, 1, 1), "lora_up.weight": rand(out, rank, 1, 1),
             "lora_mid.weight": rand(rank, rank, kh, kw)}
    else:
        w = {"lora_down.weight": rand(rank, inp, *weight.shape[2:]),
             "lora_up.weight": rand(out, rank, 1, 1)}
    w["alpha"] = torch.tensor(alpha)
    return w


def loha_layer(rand: Rand, weight: torch.Tensor, rank: int, alpha: float,
               *, tucker: bool = False) -> dict[str, torch.Tensor]:
    out, inp = weight.shape[:2]
    if tucker:  # LyCORIS's conv layout with hada_t1 / hada_t2: w*_a are (rank, out)
        kh, kw = weight.shape[2:]
        return {"hada_w1_a": rand(rank, out), "hada_w1_b": rand(rank, inp),
                "hada_t1": rand(rank, rank, kh, kw), "hada_w2_a": rand(rank, out),
                "hada_w2_b": rand(rank, inp), "hada_t2": rand(rank, rank, kh, kw),
                "alpha": torch.tensor(alpha)}
    flat = int(weight[0].numel())
    return {"hada_w1_a": rand(out, rank), "hada_w1_b": rand(rank, flat),
            "hada_w2_a": rand(out, rank), "hada_w2_b": rand(rank, flat),
            "alpha": torch.tensor(alpha)}


def lokr_layer(rand: Rand, weight: torch.Tensor, factor: int, rank: int | None,
               alpha: float) -> dict[str, torch.Tensor]:
    """LoKr: w1 (factor x factor) kron w2; w2 as factors ``_a``/``_b`` when ``rank``."""
    out, inp = weight.shape[:2]
    c, d = out // factor, inp // factor
    w: dict[str, torch.Tensor] = {"lokr_w1": rand(factor, factor, scale=1.0)}
    rest = tuple(weight.shape[2:])
    if rank is None:
        w["lokr_w2"] = rand(c, d, *rest)
    elif rest:  # conv with LyCORIS's Tucker factors for w2
        w["lokr_w2_a"], w["lokr_w2_b"] = rand(rank, c), rand(rank, d)
        w["lokr_t2"] = rand(rank, rank, *rest)
    else:
        w["lokr_w2_a"], w["lokr_w2_b"] = rand(c, rank), rand(rank, d)
    w["alpha"] = torch.tensor(alpha)
    return w


def keyed(layer_name: str, weights: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {f"{layer_name}.{part}": t.contiguous() for part, t in weights.items()}
