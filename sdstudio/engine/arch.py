"""Architecture of a diffusers model from its configs: pure JSON, no torch, never the name.

Both :mod:`sdstudio.engine.models` (loading) and :mod:`sdstudio.engine.library` (listing the
model folders) need it; it lives here so that ``models`` -> ``library`` -> ``arch`` runs one
way. ``models`` re-exports these names (``models.detect_arch`` and friends).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from sdstudio.core import safejson
from sdstudio.core.errors import ModelError

ARCHS = ("sd1", "sd1-inpaint", "sd2", "sd2-inpaint", "sd2-v", "sdxl", "sdxl-inpaint")


def read_json(path: Path) -> dict[str, Any]:
    try:
        data = safejson.load_file(path)  # bounded size and depth, regular files only
    except FileNotFoundError:
        raise ModelError(f"{path} is missing") from None
    except (OSError, ValueError) as exc:
        raise ModelError(f"{path} is not valid JSON: {exc}") from exc
    if not isinstance(data, dict):
        raise ModelError(f"{path} is not a JSON object")
    return data


def detect_arch(folder: Path) -> str:
    """Architecture from the folder's own configs (never from its name)."""
    index = read_json(folder / "model_index.json")
    unet = read_json(folder / "unet" / "config.json")
    sched_path = folder / "scheduler" / "scheduler_config.json"
    scheduler = read_json(sched_path) if sched_path.is_file() else {}
    text_path = folder / "text_encoder" / "config.json"
    text = read_json(text_path) if text_path.is_file() else {}
    tok_path = folder / "tokenizer" / "special_tokens_map.json"
    tok = read_json(tok_path) if tok_path.is_file() else {}
    return arch_from_configs(index.get("_class_name", ""), unet, scheduler, text,
                             has_text_encoder_2=bool(index.get("text_encoder_2")),
                             pad_token=_token_text(tok.get("pad_token")))


def _token_text(value: Any) -> str:
    if isinstance(value, Mapping):
        return str(value.get("content", ""))
    return str(value or "")


def arch_from_configs(
    class_name: str,
    unet: Mapping[str, Any],
    scheduler: Mapping[str, Any],
    text: Mapping[str, Any],
    *,
    has_text_encoder_2: bool,
    pad_token: str = "",
) -> str:
    inpaint = int(unet.get("in_channels", 4)) == 9
    if has_text_encoder_2 or "XL" in class_name or unet.get("addition_embed_type") == "text_time":
        return "sdxl-inpaint" if inpaint else "sdxl"
    cross = unet.get("cross_attention_dim")
    sd2 = (
        cross == 1024
        or text.get("hidden_act") == "gelu"  # OpenCLIP ViT-H (SD 2.x); CLIP ViT-L is quick_gelu
        or pad_token == "!"  # SD 2.x tokenizer pads with "!"
    )
    if inpaint:
        return "sd2-inpaint" if sd2 else "sd1-inpaint"
    if scheduler.get("prediction_type") == "v_prediction":
        return "sd2-v"
    return "sd2" if sd2 else "sd1"


def arch_from_pipe(pipe: Any) -> str:
    """Architecture of an already-loaded pipeline (single-file loads)."""
    unet = dict(pipe.unet.config)
    text_encoder = getattr(pipe, "text_encoder", None)
    text = text_encoder.config.to_dict() if text_encoder is not None else {}
    tokenizer = getattr(pipe, "tokenizer", None)
    pad = str(getattr(tokenizer, "pad_token", "") or "")
    return arch_from_configs(type(pipe).__name__, unet, dict(pipe.scheduler.config), text,
                             has_text_encoder_2=getattr(pipe, "text_encoder_2", None) is not None,
                             pad_token=pad)
