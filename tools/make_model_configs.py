"""Generate the offline diffusers-format config folders shipped in ``resources/model_configs``.

One folder per architecture that single-file checkpoints are loaded into (see
``sdstudio.engine.single_file``): ``model_index.json``, each component's config, the scheduler
config and the CLIP tokenizer files (copied from ``resources/tokenizers``). No weights.

The values are those of the public reference models (runwayml SD 1.5, SD 1.5 inpainting,
stabilityai SD 2.x base and 768-v, SDXL base 1.0). Each config is produced by instantiating the
diffusers / transformers class on the ``meta`` device with those values and saving its config,
so every field the installed library version knows is written out explicitly.

Usage: ``python tools/make_model_configs.py [--out resources/model_configs]``
"""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
TOKENIZERS = ROOT / "resources" / "tokenizers"

SCHEDULER_BASE: dict[str, Any] = {
    "beta_start": 0.00085,
    "beta_end": 0.012,
    "beta_schedule": "scaled_linear",
    "num_train_timesteps": 1000,
    "steps_offset": 1,
    "timestep_spacing": "leading",
}

VAE_SD: dict[str, Any] = {
    "in_channels": 3,
    "out_channels": 3,
    "down_block_types": ["DownEncoderBlock2D"] * 4,
    "up_block_types": ["UpDecoderBlock2D"] * 4,
    "block_out_channels": [128, 256, 512, 512],
    "layers_per_block": 2,
    "act_fn": "silu",
    "latent_channels": 4,
    "norm_num_groups": 32,
    "sample_size": 512,
    "scaling_factor": 0.18215,
}

CLIP_L: dict[str, Any] = {  # openai/clip-vit-large-patch14 text tower (SD 1.x, SDXL 1st)
    "vocab_size": 49408,
    "hidden_size": 768,
    "intermediate_size": 3072,
    "projection_dim": 768,
    "num_hidden_layers": 12,
    "num_attention_heads": 12,
    "max_position_embeddings": 77,
    "hidden_act": "quick_gelu",
    "layer_norm_eps": 1e-5,
    "bos_token_id": 49406,
    "eos_token_id": 49407,
    "pad_token_id": 49407,
}

OPEN_CLIP_H: dict[str, Any] = {  # OpenCLIP ViT-H/14 text tower, penultimate layer (SD 2.x)
    **CLIP_L,
    "hidden_size": 1024,
    "intermediate_size": 4096,
    "projection_dim": 512,
    "num_hidden_layers": 23,
    "num_attention_heads": 16,
    "hidden_act": "gelu",
    "pad_token_id": 0,
}

OPEN_CLIP_BIGG: dict[str, Any] = {  # OpenCLIP ViT-bigG/14 text tower (SDXL 2nd)
    **CLIP_L,
    "hidden_size": 1280,
    "intermediate_size": 5120,
    "projection_dim": 1280,
    "num_hidden_layers": 32,
    "num_attention_heads": 20,
    "hidden_act": "gelu",
    "pad_token_id": 0,
}

UNET_SD1: dict[str, Any] = {
    "sample_size": 64,
    "in_channels": 4,
    "out_channels": 4,
    "down_block_types": ["CrossAttnDownBlock2D"] * 3 + ["DownBlock2D"],
    "up_block_types": ["UpBlock2D"] + ["CrossAttnUpBlock2D"] * 3,
    "block_out_channels": [320, 640, 1280, 1280],
    "layers_per_block": 2,
    "cross_attention_dim": 768,
    "attention_head_dim": 8,
    "norm_num_groups": 32,
}

UNET_SD2: dict[str, Any] = {
    **UNET_SD1,
    "cross_attention_dim": 1024,
    "attention_head_dim": [5, 10, 20, 20],
    "use_linear_projection": True,
}

UNET_SDXL: dict[str, Any] = {
    "sample_size": 128,
    "in_channels": 4,
    "out_channels": 4,
    "down_block_types": ["DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"],
    "up_block_types": ["CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"],
    "block_out_channels": [320, 640, 1280],
    "layers_per_block": 2,
    "transformer_layers_per_block": [1, 2, 10],
    "cross_attention_dim": 2048,
    "attention_head_dim": [5, 10, 20],
    "use_linear_projection": True,
    "addition_embed_type": "text_time",
    "addition_time_embed_dim": 256,
    "projection_class_embeddings_input_dim": 2816,
    "norm_num_groups": 32,
}


def _sd_index(pipeline: str, scheduler: str) -> dict[str, Any]:
    return {
        "_class_name": pipeline,
        "feature_extractor": [None, None],
        "safety_checker": [None, None],
        "requires_safety_checker": False,
        "image_encoder": [None, None],
        "scheduler": ["diffusers", scheduler],
        "text_encoder": ["transformers", "CLIPTextModel"],
        "tokenizer": ["transformers", "CLIPTokenizer"],
        "unet": ["diffusers", "UNet2DConditionModel"],
        "vae": ["diffusers", "AutoencoderKL"],
    }


def _sdxl_index(pipeline: str) -> dict[str, Any]:
    return {
        "_class_name": pipeline,
        "feature_extractor": [None, None],
        "image_encoder": [None, None],
        "force_zeros_for_empty_prompt": True,
        "scheduler": ["diffusers", "EulerDiscreteScheduler"],
        "text_encoder": ["transformers", "CLIPTextModel"],
        "text_encoder_2": ["transformers", "CLIPTextModelWithProjection"],
        "tokenizer": ["transformers", "CLIPTokenizer"],
        "tokenizer_2": ["transformers", "CLIPTokenizer"],
        "unet": ["diffusers", "UNet2DConditionModel"],
        "vae": ["diffusers", "AutoencoderKL"],
    }


PNDM = {**SCHEDULER_BASE, "skip_prk_steps": True, "set_alpha_to_one": False, "clip_sample": False}
DDIM = {**SCHEDULER_BASE, "set_alpha_to_one": False, "clip_sample": False}
EULER = {**SCHEDULER_BASE, "interpolation_type": "linear", "use_karras_sigmas": False}

# arch -> components. text encoders: (class, config, tokenizer folder)
ARCHS: dict[str, dict[str, Any]] = {
    "sd15": {
        "index": _sd_index("StableDiffusionPipeline", "PNDMScheduler"),
        "unet": UNET_SD1, "vae": VAE_SD,
        "scheduler": ("PNDMScheduler", {**PNDM, "prediction_type": "epsilon"}),
        "text_encoder": ("CLIPTextModel", CLIP_L, "clip-l"),
    },
    "sd15-inpaint": {
        "index": _sd_index("StableDiffusionInpaintPipeline", "PNDMScheduler"),
        "unet": {**UNET_SD1, "in_channels": 9}, "vae": VAE_SD,
        "scheduler": ("PNDMScheduler", {**PNDM, "prediction_type": "epsilon"}),
        "text_encoder": ("CLIPTextModel", CLIP_L, "clip-l"),
    },
    "sd2-512": {
        "index": _sd_index("StableDiffusionPipeline", "PNDMScheduler"),
        "unet": UNET_SD2, "vae": VAE_SD,
        "scheduler": ("PNDMScheduler", {**PNDM, "prediction_type": "epsilon"}),
        "text_encoder": ("CLIPTextModel", OPEN_CLIP_H, "clip-g"),
    },
    "sd2-768-v": {
        "index": _sd_index("StableDiffusionPipeline", "DDIMScheduler"),
        "unet": {**UNET_SD2, "sample_size": 96}, "vae": {**VAE_SD, "sample_size": 768},
        "scheduler": ("DDIMScheduler", {**DDIM, "prediction_type": "v_prediction"}),
        "text_encoder": ("CLIPTextModel", OPEN_CLIP_H, "clip-g"),
    },
    "sd2-inpaint": {
        "index": _sd_index("StableDiffusionInpaintPipeline", "PNDMScheduler"),
        "unet": {**UNET_SD2, "in_channels": 9}, "vae": VAE_SD,
        "scheduler": ("PNDMScheduler", {**PNDM, "prediction_type": "epsilon"}),
        "text_encoder": ("CLIPTextModel", OPEN_CLIP_H, "clip-g"),
    },
    "sdxl-base": {
        "index": _sdxl_index("StableDiffusionXLPipeline"),
        "unet": UNET_SDXL,
        "vae": {**VAE_SD, "sample_size": 1024, "scaling_factor": 0.13025, "force_upcast": True},
        "scheduler": ("EulerDiscreteScheduler", {**EULER, "prediction_type": "epsilon"}),
        "text_encoder": ("CLIPTextModel", CLIP_L, "clip-l"),
        "text_encoder_2": ("CLIPTextModelWithProjection", OPEN_CLIP_BIGG, "clip-g"),
    },
    "sdxl-inpaint": {
        "index": {**_sdxl_index("StableDiffusionXLInpaintPipeline"),
                  "requires_aesthetics_score": False},
        "unet": {**UNET_SDXL, "in_channels": 9},
        "vae": {**VAE_SD, "sample_size": 1024, "scaling_factor": 0.13025, "force_upcast": True},
        "scheduler": ("EulerDiscreteScheduler", {**EULER, "prediction_type": "epsilon"}),
        "text_encoder": ("CLIPTextModel", CLIP_L, "clip-l"),
        "text_encoder_2": ("CLIPTextModelWithProjection", OPEN_CLIP_BIGG, "clip-g"),
    },
}


def _write_json(path: Path, data: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n", encoding="utf-8")


def build(out: Path) -> list[Path]:
    import diffusers
    import torch
    import transformers
    from diffusers import AutoencoderKL, UNet2DConditionModel

    written: list[Path] = []
    for arch, spec in ARCHS.items():
        folder = out / arch
        if folder.exists():
            shutil.rmtree(folder)
        folder.mkdir(parents=True)
        _write_json(folder / "model_index.json",
                    {**spec["index"], "_diffusers_version": diffusers.__version__})
        with torch.device("meta"):
            UNet2DConditionModel(**spec["unet"]).save_config(folder / "unet")
            AutoencoderKL(**spec["vae"]).save_config(folder / "vae")
        sched_cls, sched_cfg = spec["scheduler"]
        getattr(diffusers, sched_cls).from_config(sched_cfg).save_config(folder / "scheduler")
        for name in ("text_encoder", "text_encoder_2"):
            if name not in spec:
                continue
            cls_name, cfg, tok = spec[name]
            config = transformers.CLIPTextConfig(**cfg)
            config.architectures = [cls_name]
            config.save_pretrained(folder / name)
            tok_dir = folder / name.replace("text_encoder", "tokenizer")
            shutil.copytree(TOKENIZERS / tok, tok_dir)
        # Drop volatile fields so regenerating gives byte-identical files.
        for cfg_file in folder.rglob("config.json"):
            data = json.loads(cfg_file.read_text(encoding="utf-8"))
            data.pop("transformers_version", None)
            _write_json(cfg_file, data)
        for cfg_file in folder.rglob("scheduler_config.json"):
            _write_json(cfg_file, json.loads(cfg_file.read_text(encoding="utf-8")))
        written.append(folder)
    return written


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / "resources" / "model_configs")
    args = parser.parse_args()
    for folder in build(args.out):
        print(folder)


if __name__ == "__main__":
    main()
