"""Tiny random ControlNets for tests: built with diffusers' ``ControlNetModel.from_unet`` on a
tiny model's UNet (its zero convolutions given random weights, so the control shows), saved
as a diffusers folder, a diffusers-layout single file and single files in the original layout
(``control_model.`` keys as safetensors, unprefixed keys as a ``.pth``), which the engine
loads through its real loader."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch


def original_layout(model: Any, unet_config: dict[str, Any], prefix: str = "control_model."
                    ) -> dict[str, torch.Tensor]:
    """A ControlNetModel's tensors under the original ControlNet names (the inverse of
    diffusers' ``convert_controlnet_checkpoint``): the UNet-shaped part through
    ``convert.unet_to_ldm``, then the hint embedding, zero convolutions and middle output."""
    from sdstudio.engine.convert import unet_to_ldm

    state = {k: v.detach().clone().contiguous() for k, v in model.state_dict().items()}
    own = ("controlnet_cond_embedding.", "controlnet_down_blocks.", "controlnet_mid_block.")
    shared = {k: v for k, v in state.items() if not k.startswith(own)}
    out = {prefix + k.removeprefix("model.diffusion_model."): v
           for k, v in unet_to_ldm(shared, unet_config).items()}
    blocks = sorted({int(k.split(".")[2]) for k in state
                     if k.startswith("controlnet_cond_embedding.blocks.")})
    out[prefix + "input_hint_block.0.weight"] = state["controlnet_cond_embedding.conv_in.weight"]
    out[prefix + "input_hint_block.0.bias"] = state["controlnet_cond_embedding.conv_in.bias"]
    for i in blocks:
        for part in ("weight", "bias"):
            out[f"{prefix}input_hint_block.{2 * (i + 1)}.{part}"] = state[
                f"controlnet_cond_embedding.blocks.{i}.{part}"]
    last = 2 * (len(blocks) + 1)
    for part in ("weight", "bias"):
        out[f"{prefix}input_hint_block.{last}.{part}"] = state[
            f"controlnet_cond_embedding.conv_out.{part}"]
        out[f"{prefix}middle_block_out.0.{part}"] = state[f"controlnet_mid_block.{part}"]
    downs = sorted({int(k.split(".")[1]) for k in state
                    if k.startswith("controlnet_down_blocks.")})
    for i in downs:
        for part in ("weight", "bias"):
            out[f"{prefix}zero_convs.{i}.0.{part}"] = state[f"controlnet_down_blocks.{i}.{part}"]
    return out


def build_controlnets(model_dir: Path, dest: Path, seed: int = 0) -> dict[str, Path]:
    """Tiny ControlNets for the tiny model at ``model_dir`` in every layout, by label:
    "folder", "diffusers-file", "original", "original-pth" (the same weights), "other"
    (another seed, original layout)."""
    from diffusers import ControlNetModel, UNet2DConditionModel
    from safetensors.torch import save_file

    dest.mkdir(parents=True, exist_ok=True)
    unet = UNet2DConditionModel.from_pretrained(model_dir / "unet")
    out: dict[str, Path] = {}
    for label, s in (("main", seed), ("other", seed + 1)):
        torch.manual_seed(s)
        model = ControlNetModel.from_unet(unet, conditioning_embedding_out_channels=(8, 8, 16, 16))
        with torch.no_grad():  # the zero convolutions: random, so the control shows
            for name, param in model.named_parameters():
                if name.startswith(("controlnet_down_blocks", "controlnet_mid_block",
                                    "controlnet_cond_embedding.conv_out")):
                    param.copy_(torch.randn_like(param) * 0.5)
        original = original_layout(model, dict(unet.config))
        if label == "other":
            out["other"] = dest / "control_tiny_other.safetensors"
            save_file(original, out["other"])
            continue
        folder = dest / "tiny_controlnet_folder"
        model.save_pretrained(folder, safe_serialization=True)
        out["folder"] = folder
        state = {k: v.contiguous() for k, v in model.state_dict().items()}
        out["diffusers-file"] = dest / "tiny_cn_diffusers.safetensors"
        save_file(state, out["diffusers-file"])
        out["original"] = dest / "control_tiny_sd15.safetensors"
        save_file(original, out["original"])
        out["original-pth"] = dest / "control_tiny_plain.pth"
        torch.save({k.removeprefix("control_model."): v for k, v in original.items()},
                   out["original-pth"])
    return out


def build_adapters(model_dir: Path, dest: Path, seed: int = 0) -> dict[str, Path]:
    """A tiny random full T2I-Adapter for the tiny model at ``model_dir`` (its UNet's
    channels; SDXL's adapter type for an SDXL model, the tiny UNets' first block being a
    plain one as in SDXL), as a diffusers folder ("adapter-folder") and a diffusers-layout
    single file ("adapter-file"), the same weights."""
    from diffusers import T2IAdapter, UNet2DConditionModel
    from safetensors.torch import save_file

    dest.mkdir(parents=True, exist_ok=True)
    unet = UNet2DConditionModel.from_pretrained(model_dir / "unet")
    xl = unet.config.addition_embed_type == "text_time"
    torch.manual_seed(seed)
    adapter = T2IAdapter(in_channels=3, channels=list(unet.config.block_out_channels),
                         num_res_blocks=2, downscale_factor=16 if xl else 8,
                         adapter_type="full_adapter_xl" if xl else "full_adapter")
    folder = dest / "t2iadapter_tiny_folder"
    adapter.save_pretrained(folder, safe_serialization=True)
    single = dest / "t2iadapter_tiny.safetensors"
    save_file({k: v.contiguous() for k, v in adapter.state_dict().items()}, single)
    return {"adapter-folder": folder, "adapter-file": single}
