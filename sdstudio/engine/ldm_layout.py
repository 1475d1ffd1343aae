"""The single-file (original CompVis/LDM) layout that ``convert`` writes and ``single_file``
reads: the key prefix of each component, and the diffusers configs a file can carry in its
safetensors metadata (:data:`CONFIG_METADATA_KEY`) so that custom-size models round-trip
exactly.

Pure Python and JSON (no torch): both :mod:`sdstudio.engine.convert` and
:mod:`sdstudio.engine.single_file` import it, so the dependency between those two runs one
way (``convert`` -> ``single_file`` -> here).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from sdstudio.core import paths, safejson
from sdstudio.core.errors import ModelError
from sdstudio.engine.config_check import check_embedded_config

CONFIG_METADATA_KEY = "sdstudio.diffusers_config"

UNET_PREFIX = "model.diffusion_model."
VAE_PREFIX = "first_stage_model."
SD1_TEXT_PREFIX = "cond_stage_model.transformer."
SD2_TEXT_PREFIX = "cond_stage_model.model."
SDXL_TEXT1_PREFIX = "conditioner.embedders.0.transformer."
SDXL_TEXT2_PREFIX = "conditioner.embedders.1.model."


def read_config(path: Path) -> dict[str, Any]:
    """A JSON config file as a dict, read within safejson's limits (a ValueError, or OSError,
    propagates as it is)."""
    data = safejson.load_file(path)
    if not isinstance(data, dict):
        raise ValueError(f"{path} is not a JSON object")
    return data


def embedded_config(folder: Path) -> dict[str, Any]:
    """The folder's configs as one JSON-able dict (what :data:`CONFIG_METADATA_KEY` holds).

    Tokenizers are stored by reference (``"clip-l"`` / ``"clip-g"``, the files shipped in
    ``resources/tokenizers``) when they are the standard CLIP vocabulary, else in full.
    """
    folder = Path(folder)
    index = read_config(folder / "model_index.json")
    data: dict[str, Any] = {"model_index": index}
    for name, spec in index.items():
        if name.startswith("_") or not isinstance(spec, list) or spec[0] is None:
            continue
        sub = folder / name
        if name.startswith("tokenizer"):
            data[name] = _tokenizer_entry(sub)
        elif name == "scheduler":
            data[name] = read_config(sub / "scheduler_config.json")
        else:
            data[name] = read_config(sub / "config.json")
    return data


def _tokenizer_entry(sub: Path) -> dict[str, Any]:
    entry: dict[str, Any] = {}
    for meta in ("tokenizer_config.json", "special_tokens_map.json"):
        if (sub / meta).is_file():
            entry[meta] = read_config(sub / meta)
    shipped = paths.resources_dir() / "tokenizers"
    for ref in ("clip-l", "clip-g"):
        if all(
            (sub / f).is_file() and (sub / f).read_bytes() == (shipped / ref / f).read_bytes()
            for f in ("vocab.json", "merges.txt")
        ):
            entry["vocab_ref"] = ref
            return entry
    entry["vocab.json"] = (sub / "vocab.json").read_text(encoding="utf-8")
    entry["merges.txt"] = (sub / "merges.txt").read_text(encoding="utf-8")
    return entry


def materialize_config(data: Mapping[str, Any], dest: Path, where: str = "the model") -> Path:
    """Write an :func:`embedded_config` dict back out as a diffusers config folder. The dict
    comes from a model file: it is validated whole first
    (:func:`~sdstudio.engine.config_check.check_embedded_config`, ModelError), and every
    path written is checked to be inside ``dest``."""
    data = check_embedded_config(data, where)
    shipped = paths.resources_dir() / "tokenizers"
    dest.mkdir(parents=True, exist_ok=True)
    root = dest.resolve()
    (dest / "model_index.json").write_text(json.dumps(data["model_index"], indent=2))
    for name, entry in data.items():
        if name == "model_index":
            continue
        sub = dest / name
        if sub.resolve().parent != root:  # names are from a fixed set; this is a backstop
            raise ModelError(f"{where}: the embedded config names a folder outside its own")
        sub.mkdir(exist_ok=True)
        if name.startswith("tokenizer"):
            for meta in ("tokenizer_config.json", "special_tokens_map.json"):
                if meta in entry:
                    (sub / meta).write_text(json.dumps(entry[meta], indent=2))
            for f in ("vocab.json", "merges.txt"):
                if "vocab_ref" in entry:
                    (sub / f).write_bytes((shipped / entry["vocab_ref"] / f).read_bytes())
                else:
                    (sub / f).write_text(entry[f], encoding="utf-8")
        elif name == "scheduler":
            (sub / "scheduler_config.json").write_text(json.dumps(entry, indent=2))
        else:
            (sub / "config.json").write_text(json.dumps(entry, indent=2))
    return dest


# ----------------------------------------------------------------------------- key layout
# Where each diffusers / transformers weight lives in the single file: (its name there, how
# it is stored). ``how``: "" as it is; "1x1" a linear layer's weight stored as a 1x1
# convolution (the VAE's mid-block attention); "T" transposed (OpenCLIP's text projection);
# "q" / "k" / "v" one third of a fused ``in_proj`` (OpenCLIP attention), stacked on dim 0.
# The one table both directions use: ``convert`` writes files with it, ``single_file`` reads
# them with it.
Placement = tuple[str, str]
FUSED_QKV = ("q", "k", "v")

# A1111's ``checkpoint_dict_replacements_sd1``: SD 1.x files written with older transformers
# keep the CLIP text model without its ``text_model.`` level.
SD1_OLD_TEXT_NAMES = {
    SD1_TEXT_PREFIX + "text_model.embeddings.": SD1_TEXT_PREFIX + "embeddings.",
    SD1_TEXT_PREFIX + "text_model.encoder.": SD1_TEXT_PREFIX + "encoder.",
    SD1_TEXT_PREFIX + "text_model.final_layer_norm.": SD1_TEXT_PREFIX + "final_layer_norm.",
}

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
_OPEN_CLIP_FIXED = {
    "text_model.embeddings.position_embedding.weight": "positional_embedding",
    "text_model.embeddings.token_embedding.weight": "token_embedding.weight",
    "text_model.final_layer_norm.weight": "ln_final.weight",
    "text_model.final_layer_norm.bias": "ln_final.bias",
}
_OPEN_CLIP_RENAMES = (("layer_norm1", "ln_1"), ("layer_norm2", "ln_2"), ("mlp.fc1", "mlp.c_fc"),
                      ("mlp.fc2", "mlp.c_proj"), ("self_attn.out_proj", "attn.out_proj"))


def _rename_parts(rest: str, table: tuple[tuple[str, str], ...]) -> str:
    head, _, leaf = rest.rpartition(".")
    for new, old in table:
        if head == new or head.startswith(new + "."):
            head = old + head[len(new):]
            break
    return f"{head}.{leaf}" if head else leaf


def _unet_name(key: str, per_level: int, attn_blocks: set[int]) -> str | None:
    module, _, leaf = key.rpartition(".")
    parts = key.split(".")
    if module in _UNET_FIXED:
        return f"{_UNET_FIXED[module]}.{leaf}"
    if parts[0] == "down_blocks":
        b, kind, j = int(parts[1]), parts[2], int(parts[3])
        rest = ".".join(parts[4:])
        if kind == "resnets":
            return f"input_blocks.{1 + b * per_level + j}.0.{_rename_parts(rest, _UNET_RESNET)}"
        if kind == "attentions":
            return f"input_blocks.{1 + b * per_level + j}.1.{rest}"
        if kind == "downsamplers":  # downsamplers.0.conv.weight
            return f"input_blocks.{(b + 1) * per_level}.0.op.{parts[-1]}"
    elif parts[0] == "mid_block":
        kind, j = parts[1], int(parts[2])
        rest = ".".join(parts[3:])
        if kind == "resnets":
            return f"middle_block.{2 * j}.{_rename_parts(rest, _UNET_RESNET)}"
        if kind == "attentions":
            return f"middle_block.1.{rest}"
    elif parts[0] == "up_blocks":
        b, kind, j = int(parts[1]), parts[2], int(parts[3])
        rest = ".".join(parts[4:])
        if kind == "resnets":
            return f"output_blocks.{b * per_level + j}.0.{_rename_parts(rest, _UNET_RESNET)}"
        if kind == "attentions":
            return f"output_blocks.{b * per_level + j}.1.{rest}"
        if kind == "upsamplers":
            return (f"output_blocks.{b * per_level + per_level - 1}."
                    f"{2 if b in attn_blocks else 1}.conv.{parts[-1]}")
    return None


def unet_placements(keys: Iterable[str], config: Mapping[str, Any]) -> dict[str, Placement]:
    """diffusers UNet2DConditionModel weight names -> ``model.diffusion_model.*``."""
    keys = list(keys)
    per_level = int(config["layers_per_block"]) + 1  # LDM: resnets (+ attn) then a downsampler
    attn_blocks = {int(k.split(".")[1]) for k in keys
                   if k.startswith("up_blocks.") and k.split(".")[2] == "attentions"}
    out: dict[str, Placement] = {}
    for key in keys:
        try:
            name = _unet_name(key, per_level, attn_blocks)
        except (IndexError, ValueError):
            name = None
        if name is None:
            raise ModelError(f"Cannot place UNet weight {key!r} in the LDM layout")
        out[key] = (UNET_PREFIX + name, "")
    return out


def _vae_name(key: str, n_up: int) -> Placement | None:
    parts = key.split(".")
    if parts[0] in ("quant_conv", "post_quant_conv"):
        return key, ""
    if parts[0] not in ("encoder", "decoder"):
        return None
    side, block = parts[0], parts[1]
    if block in ("conv_in", "conv_out"):
        return key, ""
    if block in _VAE_FIXED:
        return f"{side}.{_VAE_FIXED[block]}.{parts[-1]}", ""
    if block == "down_blocks":
        i, kind = int(parts[2]), parts[3]
        if kind == "resnets":
            rest = ".".join(parts[5:]).replace("conv_shortcut", "nin_shortcut")
            return f"{side}.down.{i}.block.{parts[4]}.{rest}", ""
        if kind == "downsamplers":
            return f"{side}.down.{i}.downsample.conv.{parts[-1]}", ""
    elif block == "up_blocks":
        i, kind = int(parts[2]), parts[3]
        level = n_up - 1 - i
        if kind == "resnets":
            rest = ".".join(parts[5:]).replace("conv_shortcut", "nin_shortcut")
            return f"{side}.up.{level}.block.{parts[4]}.{rest}", ""
        if kind == "upsamplers":
            return f"{side}.up.{level}.upsample.conv.{parts[-1]}", ""
    elif block == "mid_block":
        kind, j = parts[2], int(parts[3])
        rest = ".".join(parts[4:])
        if kind == "resnets":
            return f"{side}.mid.block_{j + 1}.{rest.replace('conv_shortcut', 'nin_shortcut')}", ""
        if kind == "attentions":  # linear layers there, 1x1 convolutions in the original
            return f"{side}.mid.attn_1.{_rename_parts(rest, _VAE_ATTN)}", "1x1"
    return None


def vae_placements(keys: Iterable[str], config: Mapping[str, Any]) -> dict[str, Placement]:
    """diffusers AutoencoderKL weight names -> ``first_stage_model.*``."""
    n_up = len(config["up_block_types"])
    out: dict[str, Placement] = {}
    for key in keys:
        try:
            found = _vae_name(key, n_up)
        except (IndexError, ValueError):
            found = None
        if found is None:
            raise ModelError(f"Cannot place VAE weight {key!r} in the LDM layout")
        out[key] = (VAE_PREFIX + found[0], found[1])
    return out


def clip_key(key: str) -> str:
    """transformers >= 5.6 flattens CLIPTextModel; the LDM layout keeps ``text_model.``."""
    if key.startswith("text_model.") or key.startswith("text_projection"):
        return key
    return "text_model." + key


def clip_placements(keys: Iterable[str], prefix: str) -> dict[str, Placement]:
    """Hugging Face CLIP text encoder names -> the LDM layout (which keeps the HF names);
    ``position_ids`` and a projection are not stored."""
    return {k: (prefix + clip_key(k), "") for k in keys
            if not k.endswith("position_ids") and not k.startswith("text_projection")}


def open_clip_placements(keys: Iterable[str], prefix: str) -> dict[str, Placement]:
    """Hugging Face CLIP text encoder names -> OpenCLIP's (q/k/v fused into ``in_proj``)."""
    out: dict[str, Placement] = {}
    for original in keys:
        key = clip_key(original)
        if key.endswith("position_ids"):
            continue
        if key in _OPEN_CLIP_FIXED:
            out[original] = (prefix + _OPEN_CLIP_FIXED[key], "")
            continue
        if key == "text_projection.weight":
            out[original] = (prefix + "text_projection", "T")
            continue
        parts = key.split(".")
        if parts[:3] != ["text_model", "encoder", "layers"] or len(parts) < 6:
            raise ModelError(f"Cannot place text encoder weight {key!r} in the OpenCLIP layout")
        layer, rest = int(parts[3]), ".".join(parts[4:])
        proj = parts[5] if parts[4] == "self_attn" else ""
        if proj in ("q_proj", "k_proj", "v_proj"):
            out[original] = (f"{prefix}transformer.resblocks.{layer}.attn.in_proj_{parts[-1]}",
                             proj[0])
            continue
        for new, old in _OPEN_CLIP_RENAMES:
            rest = rest.replace(new, old)
        out[original] = (f"{prefix}transformer.resblocks.{layer}.{rest}", "")
    return out


def text_encoder_placements(name: str, family: str, keys: Iterable[str]
                            ) -> dict[str, Placement]:
    """The text encoder ``name`` ("text_encoder" / "text_encoder_2") of a ``family`` model:
    CLIP-L in the HF layout for SD 1.x and SDXL's first, OpenCLIP otherwise."""
    if family == "sd1" or (family == "sdxl" and name == "text_encoder"):
        return clip_placements(keys, SD1_TEXT_PREFIX if family == "sd1" else SDXL_TEXT1_PREFIX)
    return open_clip_placements(keys, SD2_TEXT_PREFIX if family == "sd2" else SDXL_TEXT2_PREFIX)


def stored_names(placement: Placement) -> tuple[str, ...]:
    """The names a weight may have in a file, preferred first (SD 1.x's old CLIP layout)."""
    name = placement[0]
    for new, old in SD1_OLD_TEXT_NAMES.items():
        if name.startswith(new):
            return name, old + name[len(new):]
    return (name,)
