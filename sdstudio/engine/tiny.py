"""Tiny, untrained, deterministic Stable Diffusion models written as diffusers folders.

The same builder serves three purposes: the built-in demo model (the default when no model is
configured; its images are noise and it is always labelled untrained), the test suite and the
benchmarks. Every build is seeded, so the same kind always gives byte-identical weight files.

The models keep the *shape* of the real ones where it matters to the code paths: a VAE with four
blocks (scale factor 8), a 2-layer CLIP text encoder with the real CLIP tokenizer and vocabulary
(49408 ids, eos/pad ids matching the tokenizer), UNets with cross-attention, an inpainting
variant with a 9-channel UNet, SD2-like variants (OpenCLIP-style ``gelu`` text encoder, ``!``
padding, optionally v-prediction) and an SDXL-like variant with two text encoders (the second
with a projection) and the ``text_time`` addition embeddings.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

from sdstudio.core import paths

KINDS: tuple[str, ...] = ("sd1", "sd1-inpaint", "sd2", "sd2-v", "sdxl")
MARKER = "sdstudio-tiny.json"  # present in every tiny model folder; labels it untrained
VOCAB_SIZE = 49408
BOS_ID = 49406
EOS_ID = 49407
_TEXT_HIDDEN = 32
_SEED = 1234

# Real SD scheduler settings (the tiny models keep them so sampler code sees real configs).
_SD_SCHEDULER: dict[str, Any] = {
    "beta_start": 0.00085,
    "beta_end": 0.012,
    "beta_schedule": "scaled_linear",
    "num_train_timesteps": 1000,
    "clip_sample": False,
    "set_alpha_to_one": False,
    "steps_offset": 1,
    "trained_betas": None,
}


def _tokenizer_dir(name: str) -> Path:
    return paths.resources_dir() / "tokenizers" / name


def _write_json(path: Path, data: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n", encoding="utf-8")


def _copy_tokenizer(src_name: str, dest: Path) -> None:
    dest.mkdir(parents=True, exist_ok=True)
    for name in ("vocab.json", "merges.txt", "special_tokens_map.json", "tokenizer_config.json"):
        shutil.copyfile(_tokenizer_dir(src_name) / name, dest / name)


def _text_config(*, pad_id: int, act: str, projection: bool) -> Any:
    from transformers import CLIPTextConfig

    return CLIPTextConfig(
        vocab_size=VOCAB_SIZE,
        hidden_size=_TEXT_HIDDEN,
        intermediate_size=37,
        num_hidden_layers=2,
        num_attention_heads=4,
        max_position_embeddings=77,
        hidden_act=act,
        projection_dim=_TEXT_HIDDEN if projection else 512,
        bos_token_id=BOS_ID,
        eos_token_id=EOS_ID,
        pad_token_id=pad_id,
        layer_norm_eps=1e-5,
    )


def _save(model: Any, dest: Path) -> None:
    model.save_pretrained(dest, safe_serialization=True)


def _build_into(root: Path, kind: str) -> None:
    import torch
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextModel, CLIPTextModelWithProjection

    sdxl = kind == "sdxl"
    sd2 = kind in ("sd2", "sd2-v")
    in_channels = 9 if kind == "sd1-inpaint" else 4

    torch.manual_seed(_SEED)
    unet_kwargs: dict[str, Any] = {
        "block_out_channels": (32, 64),
        "layers_per_block": 2,
        "sample_size": 8,
        "in_channels": in_channels,
        "out_channels": 4,
        "down_block_types": ("DownBlock2D", "CrossAttnDownBlock2D"),
        "up_block_types": ("CrossAttnUpBlock2D", "UpBlock2D"),
        "cross_attention_dim": _TEXT_HIDDEN * (2 if sdxl else 1),
        "attention_head_dim": (2, 4) if (sdxl or sd2) else 8,
        "norm_num_groups": 32,
    }
    if sd2 or sdxl:
        unet_kwargs["use_linear_projection"] = True
    if sdxl:
        unet_kwargs.update(
            addition_embed_type="text_time",
            addition_time_embed_dim=8,
            transformer_layers_per_block=(1, 2),
            projection_class_embeddings_input_dim=6 * 8 + _TEXT_HIDDEN,
        )
    _save(UNet2DConditionModel(**unet_kwargs), root / "unet")

    torch.manual_seed(_SEED + 1)
    vae = AutoencoderKL(
        block_out_channels=(16, 16, 32, 32),
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D",) * 4,
        up_block_types=("UpDecoderBlock2D",) * 4,
        latent_channels=4,
        layers_per_block=1,
        norm_num_groups=16,
        sample_size=128,
        scaling_factor=0.13025 if sdxl else 0.18215,
        force_upcast=sdxl,
    )
    _save(vae, root / "vae")

    torch.manual_seed(_SEED + 2)
    te1 = CLIPTextModel(
        _text_config(pad_id=0 if sd2 else EOS_ID, act="gelu" if sd2 else "quick_gelu",
                     projection=False)
    )
    _save(te1, root / "text_encoder")
    _copy_tokenizer("clip-g" if sd2 else "clip-l", root / "tokenizer")

    components: dict[str, Any] = {
        "unet": ["diffusers", "UNet2DConditionModel"],
        "vae": ["diffusers", "AutoencoderKL"],
        "text_encoder": ["transformers", "CLIPTextModel"],
        "tokenizer": ["transformers", "CLIPTokenizer"],
        "feature_extractor": [None, None],
        "image_encoder": [None, None],
    }
    scheduler = dict(_SD_SCHEDULER)
    if sdxl:
        torch.manual_seed(_SEED + 3)
        te2 = CLIPTextModelWithProjection(_text_config(pad_id=0, act="gelu", projection=True))
        _save(te2, root / "text_encoder_2")
        _copy_tokenizer("clip-g", root / "tokenizer_2")
        components["text_encoder_2"] = ["transformers", "CLIPTextModelWithProjection"]
        components["tokenizer_2"] = ["transformers", "CLIPTokenizer"]
        components["scheduler"] = ["diffusers", "EulerDiscreteScheduler"]
        components["force_zeros_for_empty_prompt"] = True
        class_name = "StableDiffusionXLPipeline"
        scheduler.update(_class_name="EulerDiscreteScheduler", interpolation_type="linear",
                         prediction_type="epsilon", timestep_spacing="leading",
                         use_karras_sigmas=False)
    else:
        components["safety_checker"] = [None, None]
        components["requires_safety_checker"] = False
        class_name = ("StableDiffusionInpaintPipeline" if kind == "sd1-inpaint"
                      else "StableDiffusionPipeline")
        if kind == "sd2-v":
            components["scheduler"] = ["diffusers", "DDIMScheduler"]
            scheduler.update(_class_name="DDIMScheduler", prediction_type="v_prediction",
                             clip_sample_range=1.0, rescale_betas_zero_snr=False,
                             thresholding=False, timestep_spacing="leading")
        else:
            components["scheduler"] = ["diffusers", "PNDMScheduler"]
            scheduler.update(_class_name="PNDMScheduler", prediction_type="epsilon",
                             skip_prk_steps=True, timestep_spacing="leading")
    import diffusers

    scheduler["_diffusers_version"] = diffusers.__version__
    _write_json(root / "scheduler" / "scheduler_config.json", scheduler)
    _write_json(root / "model_index.json",
                {"_class_name": class_name, "_diffusers_version": diffusers.__version__,
                 **components})
    _write_json(root / MARKER, {
        "kind": kind,
        "untrained": True,
        "note": "Tiny random model built by SD Studio: it is untrained and its images are noise.",
    })


def _build_quietly(root: Path, kind: str) -> None:
    from transformers.utils import logging as hf_logging

    was_enabled = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        _build_into(root, kind)
    finally:
        if was_enabled:
            hf_logging.enable_progress_bar()


def build_tiny_model(folder: str | os.PathLike[str], kind: str = "sd1") -> Path:
    """Write a tiny random diffusers model of ``kind`` into ``folder`` and return the folder.

    Deterministic (seeded); safetensors only. The folder is written to a temporary sibling
    and renamed into place, so a crash never leaves a half-written model behind. An existing
    complete tiny model of the same kind is reused.
    """
    if kind not in KINDS:
        raise ValueError(f"unknown tiny model kind {kind!r}; choose one of {', '.join(KINDS)}")
    dest = Path(folder)
    if is_tiny_model(dest) and _marker(dest).get("kind") == kind:
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{dest.name}-", suffix=".tmp", dir=dest.parent))
    try:
        _build_quietly(tmp, kind)
        try:
            os.replace(tmp, dest)
        except OSError:
            # dest exists (empty folder, or another process won the race)
            if is_tiny_model(dest):
                shutil.rmtree(tmp, ignore_errors=True)
                return dest
            if dest.is_dir() and not any(dest.iterdir()):
                dest.rmdir()
                os.replace(tmp, dest)
            else:
                raise
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return dest


def _marker(folder: Path) -> dict[str, Any]:
    try:
        data = json.loads((folder / MARKER).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def is_tiny_model(folder: str | os.PathLike[str]) -> bool:
    """True for a folder written by this module (so: untrained)."""
    folder = Path(folder)
    return bool(_marker(folder).get("untrained")) and (folder / "model_index.json").is_file()


def ensure_demo_model(folder: str | os.PathLike[str] | None = None) -> Path:
    """The built-in demo model (sd1 kind), built into ``paths.demo_model_dir()`` on first use."""
    return build_tiny_model(Path(folder) if folder is not None else paths.demo_model_dir(), "sd1")
