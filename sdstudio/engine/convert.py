"""Model file conversions (``sdstudio convert IN OUT``).

* ``.ckpt``/``.pt`` (pickle) -> ``.safetensors``: read only through the safe loader
  (``torch.load(weights_only=True)``), the A1111 ``"state_dict"`` wrapper removed;
* single file -> diffusers folder: loaded as SD Studio loads it (architecture detection, shipped
  configs), then ``save_pretrained`` with safetensors;
* diffusers folder -> single file in the original CompVis/LDM layout (``model.diffusion_model.*``,
  ``first_stage_model.*``, ``cond_stage_model.transformer.*`` for SD 1.x,
  ``cond_stage_model.model.*`` (OpenCLIP) for SD 2.x, ``conditioner.embedders.0/1.*`` for SDXL).
  The inverse of diffusers' own LDM -> diffusers conversion; the test suite checks the round
  trip is exact. The file also carries the folder's diffusers configs in its safetensors
  metadata (:data:`CONFIG_METADATA_KEY`), so models whose sizes differ from the standard
  architectures (custom or tiny models) load back exactly; standard single files without that
  key load with the configs shipped in ``resources/model_configs``.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sdstudio.core.errors import ModelError
from sdstudio.engine import checkpoint, single_file
from sdstudio.engine.ldm_layout import (
    CONFIG_METADATA_KEY,
    SD1_TEXT_PREFIX,
    SD2_TEXT_PREFIX,
    SDXL_TEXT1_PREFIX,
    SDXL_TEXT2_PREFIX,
    UNET_PREFIX,
    VAE_PREFIX,
    embedded_config,
    read_config,
)

if TYPE_CHECKING:
    import torch

_UNET_FIXED = {
    "time_embedding.linear_1": "time_embed.0",
    "time_embedding.linear_2": "time_embed.2",
    "add_embedding.linear_1": "label_emb.0.0",
    "add_embedding.linear_2": "label_emb.0.2",
    "conv_in": "input_blocks.0.0",
    "conv_norm_out": "out.0",
    "conv_out": "out.2",
}
_UNET_RESNET = (
    ("norm1", "in_layers.0"),
    ("conv1", "in_layers.2"),
    ("norm2", "out_layers.0"),
    ("conv2", "out_layers.3"),
    ("time_emb_proj", "emb_layers.1"),
    ("conv_shortcut", "skip_connection"),
)
_VAE_FIXED = {
    "conv_norm_out": "norm_out",
}
_VAE_ATTN = (
    ("group_norm", "norm"),
    ("to_q", "q"),
    ("to_k", "k"),
    ("to_v", "v"),
    ("to_out.0", "proj_out"),
)


def _split(key: str, prefix: str) -> str | None:
    return key[len(prefix):] if key.startswith(prefix) else None


def _rename_parts(rest: str, table: tuple[tuple[str, str], ...]) -> str:
    head, _, leaf = rest.rpartition(".")
    for new, old in table:
        if head == new or head.startswith(new + "."):
            head = old + head[len(new):]
            break
    return f"{head}.{leaf}" if head else leaf


def unet_to_ldm(state: Mapping[str, torch.Tensor], config: Mapping[str, Any]) -> dict[str, Any]:
    """diffusers UNet2DConditionModel weights -> ``model.diffusion_model.*`` names."""
    per_level = int(config["layers_per_block"]) + 1  # LDM: resnets (+ attn) then a downsampler
    out: dict[str, Any] = {}
    for key, value in state.items():
        module, _, leaf = key.rpartition(".")
        parts = key.split(".")
        ldm: str | None = None
        if module in _UNET_FIXED:
            ldm = f"{_UNET_FIXED[module]}.{leaf}"
        elif parts[0] == "down_blocks":
            b, kind, j = int(parts[1]), parts[2], int(parts[3])
            rest = ".".join(parts[4:])
            if kind == "resnets":
                ldm = f"input_blocks.{1 + b * per_level + j}.0.{_rename_parts(rest, _UNET_RESNET)}"
            elif kind == "attentions":
                ldm = f"input_blocks.{1 + b * per_level + j}.1.{rest}"
            elif kind == "downsamplers":  # downsamplers.0.conv.weight
                ldm = f"input_blocks.{(b + 1) * per_level}.0.op.{parts[-1]}"
        elif parts[0] == "mid_block":
            kind, j = parts[1], int(parts[2])
            rest = ".".join(parts[3:])
            if kind == "resnets":
                ldm = f"middle_block.{2 * j}.{_rename_parts(rest, _UNET_RESNET)}"
            elif kind == "attentions":
                ldm = f"middle_block.1.{rest}"
        elif parts[0] == "up_blocks":
            b, kind, j = int(parts[1]), parts[2], int(parts[3])
            rest = ".".join(parts[4:])
            if kind == "resnets":
                ldm = f"output_blocks.{b * per_level + j}.0.{_rename_parts(rest, _UNET_RESNET)}"
            elif kind == "attentions":
                ldm = f"output_blocks.{b * per_level + j}.1.{rest}"
            elif kind == "upsamplers":
                has_attn = any(k.startswith(f"up_blocks.{b}.attentions.") for k in state)
                ldm = (f"output_blocks.{b * per_level + per_level - 1}."
                       f"{2 if has_attn else 1}.conv.{parts[-1]}")
        if ldm is None:
            raise ModelError(f"Cannot convert UNet weight {key!r} to the LDM layout")
        out[UNET_PREFIX + ldm] = value
    return out


def vae_to_ldm(state: Mapping[str, torch.Tensor], config: Mapping[str, Any]) -> dict[str, Any]:
    """diffusers AutoencoderKL weights -> ``first_stage_model.*`` names (attention weights as
    1x1 convolutions, as in the original)."""
    n_up = len(config["up_block_types"])
    out: dict[str, Any] = {}
    for key, value in state.items():
        parts = key.split(".")
        ldm: str | None = None
        if parts[0] in ("quant_conv", "post_quant_conv"):
            ldm = key
        elif parts[0] in ("encoder", "decoder"):
            side, block = parts[0], parts[1]
            if block in ("conv_in", "conv_out"):
                ldm = key
            elif block in _VAE_FIXED:
                ldm = f"{side}.{_VAE_FIXED[block]}.{parts[-1]}"
            elif block == "down_blocks":
                i, kind = int(parts[2]), parts[3]
                if kind == "resnets":
                    rest = ".".join(parts[5:]).replace("conv_shortcut", "nin_shortcut")
                    ldm = f"{side}.down.{i}.block.{parts[4]}.{rest}"
                elif kind == "downsamplers":
                    ldm = f"{side}.down.{i}.downsample.conv.{parts[-1]}"
            elif block == "up_blocks":
                i, kind = int(parts[2]), parts[3]
                level = n_up - 1 - i
                if kind == "resnets":
                    rest = ".".join(parts[5:]).replace("conv_shortcut", "nin_shortcut")
                    ldm = f"{side}.up.{level}.block.{parts[4]}.{rest}"
                elif kind == "upsamplers":
                    ldm = f"{side}.up.{level}.upsample.conv.{parts[-1]}"
            elif block == "mid_block":
                kind, j = parts[2], int(parts[3])
                rest = ".".join(parts[4:])
                if kind == "resnets":
                    rest = rest.replace("conv_shortcut", "nin_shortcut")
                    ldm = f"{side}.mid.block_{j + 1}.{rest}"
                elif kind == "attentions":
                    ldm = f"{side}.mid.attn_1.{_rename_parts(rest, _VAE_ATTN)}"
                    if value.ndim == 2:  # linear -> 1x1 conv
                        value = value[:, :, None, None]
        if ldm is None:
            raise ModelError(f"Cannot convert VAE weight {key!r} to the LDM layout")
        out[VAE_PREFIX + ldm] = value
    return out


def _clip_key(key: str) -> str:
    """transformers >= 5.6 flattens CLIPTextModel; the LDM layout keeps ``text_model.``."""
    if key.startswith("text_model.") or key.startswith("text_projection"):
        return key
    return "text_model." + key


def clip_to_ldm(state: Mapping[str, torch.Tensor], prefix: str) -> dict[str, Any]:
    """Hugging Face CLIP text encoder -> the LDM layout (which keeps the HF names)."""
    return {prefix + _clip_key(k): v for k, v in state.items()
            if not k.endswith("position_ids") and not k.startswith("text_projection")}


def open_clip_to_ldm(state: Mapping[str, torch.Tensor], prefix: str) -> dict[str, Any]:
    """Hugging Face CLIP text encoder -> OpenCLIP names (q/k/v fused into ``in_proj``)."""
    import torch

    state = {_clip_key(k): v for k, v in state.items() if not k.endswith("position_ids")}
    fixed = {
        "text_model.embeddings.position_embedding.weight": "positional_embedding",
        "text_model.embeddings.token_embedding.weight": "token_embedding.weight",
        "text_model.final_layer_norm.weight": "ln_final.weight",
        "text_model.final_layer_norm.bias": "ln_final.bias",
    }
    out: dict[str, Any] = {}
    qkv: dict[tuple[int, str], dict[str, Any]] = {}
    for key, value in state.items():
        if key in fixed:
            out[prefix + fixed[key]] = value
            continue
        if key == "text_projection.weight":
            out[prefix + "text_projection"] = value.T
            continue
        parts = key.split(".")
        if parts[:3] != ["text_model", "encoder", "layers"]:
            raise ModelError(f"Cannot convert text encoder weight {key!r} to the OpenCLIP layout")
        layer, rest = int(parts[3]), ".".join(parts[4:])
        if rest.startswith("self_attn.") and rest.split(".")[1] in ("q_proj", "k_proj", "v_proj"):
            proj, leaf = rest.split(".")[1], rest.split(".")[2]
            qkv.setdefault((layer, leaf), {})[proj] = value
            continue
        rest = (rest.replace("layer_norm1", "ln_1").replace("layer_norm2", "ln_2")
                .replace("mlp.fc1", "mlp.c_fc").replace("mlp.fc2", "mlp.c_proj")
                .replace("self_attn.out_proj", "attn.out_proj"))
        out[f"{prefix}transformer.resblocks.{layer}.{rest}"] = value
    for (layer, leaf), projs in qkv.items():
        fused = torch.cat([projs["q_proj"], projs["k_proj"], projs["v_proj"]], dim=0)
        out[f"{prefix}transformer.resblocks.{layer}.attn.in_proj_{leaf}"] = fused
    return out


# ----------------------------------------------------------------------------- whole models
def _component_state(folder: Path, name: str) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    files = sorted((folder / name).glob("*.safetensors"))
    if not files:
        raise ModelError(f"{folder.name}: no safetensors weights for {name}")
    state: dict[str, torch.Tensor] = {}
    for file in files:
        state.update(load_file(str(file)))
    return state


def folder_family(folder: Path) -> str:
    """"sd1", "sd2" or "sdxl" for a diffusers folder."""
    index = read_config(folder / "model_index.json")
    if "text_encoder_2" in index:
        return "sdxl"
    te = read_config(folder / "text_encoder" / "config.json")
    return "sd2" if te.get("hidden_act") == "gelu" or te.get("pad_token_id") == 0 else "sd1"


def diffusers_to_ldm(
    folder: Path, *, states: Mapping[str, Mapping[str, torch.Tensor]] | None = None
) -> dict[str, Any]:
    """All weights of a diffusers SD 1.x / 2.x / SDXL folder in the original single-file layout.

    ``states`` (component -> diffusers state dict) replaces reading the weight files, e.g. meta
    tensors of a real-size model built from a config folder.
    """
    folder = Path(folder)
    family = folder_family(folder)

    def state_of(name: str) -> Mapping[str, torch.Tensor]:
        return states[name] if states is not None else _component_state(folder, name)

    out: dict[str, Any] = {}
    out.update(unet_to_ldm(state_of("unet"), read_config(folder / "unet" / "config.json")))
    out.update(vae_to_ldm(state_of("vae"), read_config(folder / "vae" / "config.json")))
    if family == "sd1":
        out.update(clip_to_ldm(state_of("text_encoder"), SD1_TEXT_PREFIX))
    elif family == "sd2":
        out.update(open_clip_to_ldm(state_of("text_encoder"), SD2_TEXT_PREFIX))
    else:
        out.update(clip_to_ldm(state_of("text_encoder"), SDXL_TEXT1_PREFIX))
        out.update(open_clip_to_ldm(state_of("text_encoder_2"), SDXL_TEXT2_PREFIX))
    return out


def _save_safetensors(
    tensors: Mapping[str, torch.Tensor], out: Path, metadata: dict[str, str] | None = None
) -> Path:
    """Atomic: written to a temp file next to ``out``, then renamed; never overwrites."""
    from safetensors.torch import save_file

    out = Path(out)
    if out.exists():
        raise ModelError(f"{out} already exists; choose another output name")
    out.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{out.name}-", suffix=".tmp", dir=out.parent)
    os.close(fd)
    try:
        contiguous = {k: v.contiguous() for k, v in tensors.items()}
        save_file(contiguous, tmp, metadata=metadata)
        if out.exists():
            raise ModelError(f"{out} already exists; choose another output name")
        os.replace(tmp, out)
    finally:
        Path(tmp).unlink(missing_ok=True)
    return out


def folder_to_single_file(folder: Path, out: Path, *, embed_config: bool = True) -> Path:
    """A diffusers folder -> one ``.safetensors`` in the original LDM layout."""
    tensors = diffusers_to_ldm(Path(folder))
    metadata = {"format": "pt"}
    if embed_config:
        metadata[CONFIG_METADATA_KEY] = json.dumps(embedded_config(Path(folder)))
    return _save_safetensors(tensors, out, metadata)


def ckpt_to_safetensors(src: Path, out: Path) -> Path:
    """A pickle checkpoint -> safetensors, through the safe loader only. Tensors that share
    storage are copied (safetensors forbids shared storage)."""
    state = checkpoint.load_state_dict(Path(src))
    seen: set[tuple[int, int]] = set()
    clean: dict[str, Any] = {}
    for key, tensor in state.items():
        ident = (tensor.untyped_storage().data_ptr(), int(tensor.storage_offset()))
        clean[key] = tensor.clone() if ident in seen or not tensor.is_contiguous() else tensor
        seen.add(ident)
    return _save_safetensors(clean, out, {"format": "pt"})


def single_file_to_folder(src: Path, out: Path) -> Path:
    """A single-file checkpoint -> a diffusers folder (safetensors weights)."""
    import torch

    out = Path(out)
    if out.exists() and any(out.iterdir()):
        raise ModelError(f"{out} already exists and is not empty; choose another output folder")
    pipe = single_file.load_single_file(Path(src), device=torch.device("cpu"), dtype=torch.float32)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}-", suffix=".tmp", dir=out.parent))
    try:
        pipe.save_pretrained(tmp, safe_serialization=True)
        # transformers 5 saves tokenizers as tokenizer.json only; keep the plain CLIP files
        # (vocab.json, merges.txt, configs) that every other SD Studio folder has.
        config_dir = Path(getattr(pipe, "sdstudio_config_dir", ""))
        for sub in ("tokenizer", "tokenizer_2"):
            if (config_dir / sub).is_dir() and (tmp / sub).is_dir():
                shutil.rmtree(tmp / sub)
                shutil.copytree(config_dir / sub, tmp / sub)
        if out.exists():
            out.rmdir()
        os.replace(tmp, out)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return out


def convert(src: Path, out: Path, *, log: Callable[[str], None] = print) -> Path:
    """``sdstudio convert IN OUT``: chooses the conversion from what IN is (by its bytes or its
    folder layout) and what OUT names (a ``.safetensors`` file or a folder)."""
    src, out = Path(src), Path(out)
    if not src.exists():
        raise ModelError(f"Not found: {src}")
    wants_file = out.suffix.lower() == ".safetensors"
    if src.is_dir():
        if not (src / "model_index.json").is_file():
            raise ModelError(f"{src} is not a diffusers model folder (no model_index.json)")
        if not wants_file:
            raise ModelError("A diffusers folder converts to a single file: name OUT *.safetensors")
        log(f"Writing {src.name} as one single-file checkpoint (LDM layout)...")
        return folder_to_single_file(src, out)
    fmt = checkpoint.detect_format(src)
    if wants_file:
        if fmt == "safetensors":
            raise ModelError(f"{src.name} is already a safetensors file")
        log(f"Converting {src.name} to safetensors through the safe loader...")
        return ckpt_to_safetensors(src, out)
    if out.suffix:
        raise ModelError(f"Output {out.name}: name a folder (diffusers) or a .safetensors file")
    log(f"Loading {src.name} and saving it as a diffusers folder...")
    return single_file_to_folder(src, out)
