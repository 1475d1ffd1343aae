"""Shared helpers for the benchmarks: model folders (tiny or real-size random), timing."""

from __future__ import annotations

import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("DIFFUSERS_VERBOSITY", "error")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")

SD15_CONFIGS = ROOT / "resources" / "model_configs" / "sd15"

# Standard SD 1.5 configs, used when resources/model_configs/sd15 is absent.
_SD15_UNET: dict[str, Any] = {
    "sample_size": 64, "in_channels": 4, "out_channels": 4, "layers_per_block": 2,
    "block_out_channels": [320, 640, 1280, 1280], "cross_attention_dim": 768,
    "attention_head_dim": 8, "norm_num_groups": 32,
    "down_block_types": ["CrossAttnDownBlock2D", "CrossAttnDownBlock2D",
                         "CrossAttnDownBlock2D", "DownBlock2D"],
    "up_block_types": ["UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D",
                       "CrossAttnUpBlock2D"],
}
_SD15_VAE: dict[str, Any] = {
    "in_channels": 3, "out_channels": 3, "latent_channels": 4, "layers_per_block": 2,
    "block_out_channels": [128, 256, 512, 512], "norm_num_groups": 32, "sample_size": 512,
    "down_block_types": ["DownEncoderBlock2D"] * 4, "up_block_types": ["UpDecoderBlock2D"] * 4,
    "scaling_factor": 0.18215,
}
_SD15_TEXT: dict[str, Any] = {
    "vocab_size": 49408, "hidden_size": 768, "intermediate_size": 3072,
    "num_hidden_layers": 12, "num_attention_heads": 12, "max_position_embeddings": 77,
    "hidden_act": "quick_gelu", "projection_dim": 768, "bos_token_id": 49406,
    "eos_token_id": 49407, "pad_token_id": 49407,
}
_SD15_SCHEDULER: dict[str, Any] = {
    "_class_name": "PNDMScheduler", "beta_start": 0.00085, "beta_end": 0.012,
    "beta_schedule": "scaled_linear", "num_train_timesteps": 1000, "set_alpha_to_one": False,
    "skip_prk_steps": True, "steps_offset": 1, "clip_sample": False,
}


def _write_json(path: Path, data: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=2))


def build_sd15_random(dest: Path, *, dtype: Any = None, device: str = "cpu",
                      seed: int = 0) -> Path:
    """A real-size SD 1.5 diffusers folder with random weights (safetensors), built locally.
    Uses resources/model_configs/sd15 when it exists, else the standard configs above."""
    import torch
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    if (dest / "model_index.json").is_file():
        return dest
    dtype = dtype or torch.float16
    tmp = Path(tempfile.mkdtemp(prefix=".sd15-random-", dir=dest.parent))
    try:
        if (SD15_CONFIGS / "model_index.json").is_file():
            shutil.copytree(SD15_CONFIGS, tmp, dirs_exist_ok=True)
            unet_cfg = json.loads((tmp / "unet" / "config.json").read_text())
            vae_cfg = json.loads((tmp / "vae" / "config.json").read_text())
            text_cfg = CLIPTextConfig.from_pretrained(tmp / "text_encoder")
        else:
            from sdstudio.engine.tiny import _copy_tokenizer

            _copy_tokenizer("clip-l", tmp / "tokenizer")
            _write_json(tmp / "scheduler" / "scheduler_config.json", _SD15_SCHEDULER)
            _write_json(tmp / "model_index.json", {
                "_class_name": "StableDiffusionPipeline", "requires_safety_checker": False,
                "safety_checker": [None, None], "feature_extractor": [None, None],
                "scheduler": ["diffusers", "PNDMScheduler"],
                "text_encoder": ["transformers", "CLIPTextModel"],
                "tokenizer": ["transformers", "CLIPTokenizer"],
                "unet": ["diffusers", "UNet2DConditionModel"],
                "vae": ["diffusers", "AutoencoderKL"],
            })
            unet_cfg, vae_cfg, text_cfg = _SD15_UNET, _SD15_VAE, CLIPTextConfig(**_SD15_TEXT)
        torch.manual_seed(seed)
        with torch.device(device):
            unet = UNet2DConditionModel.from_config(unet_cfg)
            vae = AutoencoderKL.from_config(vae_cfg)
            text = CLIPTextModel(text_cfg)
        for name, model in (("unet", unet), ("vae", vae), ("text_encoder", text)):
            model.to(dtype=dtype).save_pretrained(tmp / name, safe_serialization=True)
        del unet, vae, text
        os.replace(tmp, dest)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return dest


SDXL_CONFIGS = ROOT / "resources" / "model_configs" / "sdxl-base"


def build_sdxl_random(dest: Path, *, dtype: Any = None, device: str = "cpu",
                      seed: int = 0) -> Path:
    """A real-size SDXL base diffusers folder with random weights (safetensors), built
    locally from resources/model_configs/sdxl-base (UNet 2.6 B parameters: build it on the
    GPU in fp16 where there is one)."""
    import torch
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import (
        CLIPTextConfig,
        CLIPTextModel,
        CLIPTextModelWithProjection,
    )

    if (dest / "model_index.json").is_file():
        return dest
    dtype = dtype or torch.float16
    tmp = Path(tempfile.mkdtemp(prefix=".sdxl-random-", dir=dest.parent))
    try:
        shutil.copytree(SDXL_CONFIGS, tmp, dirs_exist_ok=True)
        torch.manual_seed(seed)
        builders: list[tuple[str, Callable[[], Any]]] = [
            ("unet", lambda: UNet2DConditionModel.from_config(
                json.loads((tmp / "unet" / "config.json").read_text()))),
            ("vae", lambda: AutoencoderKL.from_config(
                json.loads((tmp / "vae" / "config.json").read_text()))),
            ("text_encoder", lambda: CLIPTextModel(
                CLIPTextConfig.from_pretrained(tmp / "text_encoder"))),
            ("text_encoder_2", lambda: CLIPTextModelWithProjection(
                CLIPTextConfig.from_pretrained(tmp / "text_encoder_2"))),
        ]
        for name, build in builders:  # one at a time: the fp32 UNet alone is 10 GB
            with torch.device(device):
                model = build()
            model.to(dtype=dtype).save_pretrained(tmp / name, safe_serialization=True)
            del model
        os.replace(tmp, dest)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return dest


def timed(fn: Callable[[], Any], sync: Callable[[], None] | None = None) -> float:
    if sync:
        sync()
    start = time.perf_counter()
    fn()
    if sync:
        sync()
    return time.perf_counter() - start


def median(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


def quartiles(values: list[float]) -> tuple[float, float]:
    """(first, third) quartile; the spread to print next to a median."""
    if len(values) < 2:
        return (values[0], values[0]) if values else (float("nan"), float("nan"))
    q = statistics.quantiles(values, n=4)
    return q[0], q[2]
