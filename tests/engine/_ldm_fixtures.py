"""Helpers for the single-file / LoRA / library tests: LDM-layout tiny checkpoints, a
kohya-format LoRA, real-size LDM key shapes built on the meta device (no memory)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from sdstudio.engine.convert import diffusers_to_ldm, folder_to_single_file


def write_single_file(folder: Path, out: Path, *, embed_config: bool = True) -> Path:
    if not out.exists():
        folder_to_single_file(folder, out, embed_config=embed_config)
    return out


def meta_ldm_shapes(config_folder: Path) -> dict[str, tuple[int, ...]]:
    """Names and shapes a real checkpoint of ``config_folder``'s architecture has, in the LDM
    layout, computed on the meta device (nothing allocated)."""
    import transformers
    from diffusers import AutoencoderKL, UNet2DConditionModel

    states: dict[str, Any] = {}
    with torch.device("meta"):
        states["unet"] = UNet2DConditionModel.from_config(
            UNet2DConditionModel.load_config(config_folder / "unet")).state_dict()
        states["vae"] = AutoencoderKL.from_config(
            AutoencoderKL.load_config(config_folder / "vae")).state_dict()
        for name in ("text_encoder", "text_encoder_2"):
            if (config_folder / name).is_dir():
                cfg = transformers.CLIPTextConfig.from_pretrained(config_folder / name)
                cls = getattr(transformers, cfg.architectures[0])
                states[name] = cls(cfg).state_dict()
    ldm = diffusers_to_ldm(config_folder, states=states)
    return {k: tuple(v.shape) for k, v in ldm.items()}


def kohya_lora(pipe: Any, *, rank: int = 4, seed: int = 0, scale: float = 0.5
               ) -> dict[str, torch.Tensor]:
    """A random LoRA in the kohya / A1111 layout (``lora_unet_*``, ``lora_te*_*``,
    ``lora_down``/``lora_up``/``alpha``) for ``pipe``'s attention projections."""
    gen = torch.Generator().manual_seed(seed)
    te2 = getattr(pipe, "text_encoder_2", None)
    targets: list[tuple[str, Any, tuple[str, ...]]] = [
        ("lora_unet_", pipe.unet, ("to_q", "to_k", "to_v", "to_out.0")),
        ("lora_te1_" if te2 is not None else "lora_te_", pipe.text_encoder,
         ("q_proj", "k_proj", "v_proj", "out_proj")),
    ]
    if te2 is not None:
        targets.append(("lora_te2_", te2, ("q_proj", "k_proj", "v_proj", "out_proj")))
    out: dict[str, torch.Tensor] = {}
    for prefix, module, leaves in targets:
        for name, m in module.named_modules():
            if not isinstance(m, torch.nn.Linear) or not name.endswith(leaves):
                continue
            if prefix.startswith("lora_te") and not name.startswith("text_model."):
                name = "text_model." + name
            key = prefix + name.replace(".", "_")
            out[f"{key}.lora_down.weight"] = torch.randn(rank, m.in_features, generator=gen) * scale
            out[f"{key}.lora_up.weight"] = torch.randn(m.out_features, rank, generator=gen) * scale
            out[f"{key}.alpha"] = torch.tensor(float(rank))
    return out
