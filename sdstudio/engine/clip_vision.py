"""CLIP image encoders for IP-Adapters: found in local folders only, loaded safely.

An IP-Adapter turns a reference image into extra cross-attention tokens; the image first goes
through a CLIP vision model (``CLIPVisionModelWithProjection``): SD 1.5 adapters and the SDXL
``*_vit-h`` adapters use OpenCLIP ViT-H/14, ``ip-adapter_sdxl`` uses ViT-bigG/14. Which one
an adapter needs follows from its weights' shapes (:func:`needed_width`): a plain adapter
takes the encoder's projected embedding (1024 wide for ViT-H, 1280 for bigG), the Plus /
Plus-face / full-face adapters its penultimate hidden states (1280 wide for ViT-H, 1664 for
bigG).

Where encoders are looked for (:func:`clip_vision_dirs`, nothing is ever downloaded):

* an ``image_encoder`` folder next to the adapter file (the layout of the h94/IP-Adapter
  repository: ``models/ip-adapter_sd15.safetensors`` beside ``models/image_encoder/``);
* SD Studio's own ``models/clip_vision`` folder (``paths.model_dir("clip_vision")``);
* beside every ControlNet folder: ``../clip_vision`` (ComfyUI's and Forge's
  ``models/clip_vision``) and A1111's ControlNet extension's download folder
  ``extensions/sd-webui-controlnet/annotator/downloads/clip_vision`` (``clip_h.pth``,
  ``clip_g.pth``).

What an encoder may be: a transformers folder (``config.json`` + ``model.safetensors`` or
``pytorch_model.bin``), or one weights file in transformers' key layout (ComfyUI's
``CLIP-ViT-H-14-laion2B-s32B-b79K.safetensors``, the extension's ``clip_h.pth``). The
configuration is built from the tensors' shapes (width, layers, patch size, image size,
projection); the head count and activation come from a folder's ``config.json`` when there is
one (read within limits; only known keys of plain types are taken), else from the known CLIP
widths. Weights go through :mod:`sdstudio.engine.checkpoint` (safetensors validated first,
PyTorch files only through ``torch.load(weights_only=True)``); nothing is imported from a file.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from sdstudio.core import paths
from sdstudio.core.errors import ModelError
from sdstudio.engine import checkpoint

ENCODER_SUFFIXES = (".safetensors", ".bin", ".pth", ".pt")
WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin")
_PREFIX = "vision_model."
_CLASS_KEY = "vision_model.embeddings.class_embedding"
_PATCH_KEY = "vision_model.embeddings.patch_embedding.weight"
_POSITION_KEY = "vision_model.embeddings.position_embedding.weight"
_PROJECTION_KEY = "visual_projection.weight"
_LAYER = re.compile(r"^vision_model\.encoder\.layers\.(\d+)\.")
# CLIP's image normalisation (OpenAI's and OpenCLIP's ViT-H / bigG use the same)
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
# width -> (heads, activation) of the released CLIP vision towers
_KNOWN_WIDTHS = {768: (12, "quick_gelu"), 1024: (16, "quick_gelu"), 1280: (16, "gelu"),
                 1664: (16, "gelu")}
_CONFIG_KEYS = {"num_attention_heads": int, "hidden_act": str, "layer_norm_eps": float}
_ACTIVATIONS = ("gelu", "quick_gelu", "gelu_new", "gelu_pytorch_tanh")
MAX_CANDIDATES = 200  # files looked at per search


def encoder_label(width: int, projected: bool) -> str:
    """Which released encoder an adapter's input width means, for messages."""
    vit_h = 1024 if projected else 1280
    big_g = 1280 if projected else 1664
    if width == vit_h:
        return "CLIP ViT-H/14 (CLIP-ViT-H-14-laion2B-s32B-b79K)"
    if width == big_g:
        return "CLIP ViT-bigG/14 (CLIP-ViT-bigG-14-laion2B-39B-b160k)"
    kind = "projection" if projected else "hidden"
    return f"a CLIP vision model with {kind} width {width}"


@dataclass(frozen=True)
class EncoderFile:
    """One CLIP vision model found on disk: its weights, optional config and widths."""

    path: Path  # the folder or the file, as found
    weights: Path
    config: Path | None
    width: int  # hidden size
    projection: int  # projected embedding size
    layers: int
    patch: int
    image_size: int

    @property
    def name(self) -> str:
        return self.path.name


def _shapes(weights: Path) -> dict[str, tuple[int, ...]]:
    shapes, _ = checkpoint.tensor_shapes(weights)
    return shapes


def describe(path: Path) -> EncoderFile | None:
    """The CLIP vision model at ``path`` (a folder or a file), or None when it holds none.
    Reads only the safetensors header (PyTorch files: a memory-mapped safe load)."""
    config: Path | None = None
    if path.is_dir():
        weights = next((path / n for n in WEIGHT_FILES if (path / n).is_file()), None)
        if weights is None:
            return None
        config = path / "config.json" if (path / "config.json").is_file() else None
    elif path.is_file() and path.suffix.lower() in ENCODER_SUFFIXES:
        weights = path
    else:
        return None
    try:
        shapes = _shapes(weights)
    except ModelError:
        return None
    return _from_shapes(path, weights, config, shapes)


def _from_shapes(path: Path, weights: Path, config: Path | None,
                 shapes: Mapping[str, tuple[int, ...]]) -> EncoderFile | None:
    try:
        width = shapes[_CLASS_KEY][0]
        patch = shapes[_PATCH_KEY][-1]
        positions = shapes[_POSITION_KEY][0]
        projection = shapes[_PROJECTION_KEY][0]
    except (KeyError, IndexError):
        return None
    layers = {int(m.group(1)) for k in shapes if (m := _LAYER.match(k))}
    side = math.isqrt(max(positions - 1, 0))
    if not layers or side * side != positions - 1 or patch < 1:
        return None
    return EncoderFile(path=path, weights=weights, config=config, width=int(width),
                       projection=int(projection), layers=max(layers) + 1, patch=int(patch),
                       image_size=int(side * patch))


def clip_vision_dirs(control_dirs: Iterable[str], adapter: Path | None = None) -> list[Path]:
    """The folders searched for CLIP image encoders, in order (see the module's docstring)."""
    out: list[Path] = []
    if adapter is not None:
        out.append(adapter.parent / "image_encoder")
    out.append(paths.model_dir("clip_vision"))
    for control_dir in control_dirs:
        base = Path(control_dir).expanduser()
        out.append(base.parent / "clip_vision")
        out.append(base.parent.parent / "extensions" / "sd-webui-controlnet" / "annotator"
                   / "downloads" / "clip_vision")
    seen: set[str] = set()
    unique: list[Path] = []
    for folder in out:
        key = str(folder.resolve()) if folder.exists() else str(folder)
        if key not in seen:
            seen.add(key)
            unique.append(folder)
    return unique


def _candidates(folder: Path) -> list[Path]:
    if not folder.is_dir():
        return []
    if any((folder / n).is_file() for n in WEIGHT_FILES):
        return [folder]  # the folder itself is a transformers model
    try:
        entries = sorted(folder.iterdir())
    except OSError:
        return []
    return [e for e in entries[:MAX_CANDIDATES]
            if e.is_dir() or e.suffix.lower() in ENCODER_SUFFIXES]


def find_encoder(dirs: Iterable[Path], *, width: int, projected: bool) -> EncoderFile | None:
    """The first encoder in ``dirs`` whose projection (``projected``) or hidden width equals
    ``width``."""
    for folder in dirs:
        for candidate in _candidates(folder):
            found = _describe_cached(candidate)
            if found is not None and (found.projection if projected else found.width) == width:
                return found
    return None


_DESCRIBED: dict[tuple[str, int, int], EncoderFile | None] = {}


def _describe_cached(path: Path) -> EncoderFile | None:
    try:
        stat = path.stat()
    except OSError:
        return None
    key = (str(path), stat.st_mtime_ns, stat.st_size)
    if key not in _DESCRIBED:
        if len(_DESCRIBED) > 512:
            _DESCRIBED.clear()
        _DESCRIBED[key] = describe(path)
    return _DESCRIBED[key]


# ------------------------------------------------------------------------------ loading
def _config_values(path: Path | None) -> dict[str, Any]:
    if path is None:
        return {}
    data = checkpoint.read_config_json(path)
    nested = data.get("vision_config")
    vision: dict[str, Any] = nested if isinstance(nested, dict) else data
    out: dict[str, Any] = {}
    for key, kind in _CONFIG_KEYS.items():
        value = vision.get(key)
        if kind is float and type(value) is int:
            value = float(value)
        if type(value) is kind:
            out[key] = value
    if out.get("hidden_act") not in (None, *_ACTIVATIONS):
        raise ModelError(f"{path}: unknown hidden_act {str(out['hidden_act'])[:40]!r}")
    return out


def _heads_for(width: int) -> int:
    if width in _KNOWN_WIDTHS:
        return _KNOWN_WIDTHS[width][0]
    for heads in (16, 8, 4, 2):
        if width % heads == 0 and width // heads >= 8:
            return heads
    return 1


def build_config(found: EncoderFile) -> Any:
    """A ``CLIPVisionConfig`` for ``found``: sizes from the shapes, the rest as described."""
    from transformers import CLIPVisionConfig

    values = _config_values(found.config)
    heads = values.get("num_attention_heads", _heads_for(found.width))
    if heads < 1 or found.width % heads:
        raise ModelError(f"{found.path}: {heads} attention heads do not divide the width "
                         f"{found.width}")
    shapes = _shapes(found.weights)
    fc1 = shapes.get("vision_model.encoder.layers.0.mlp.fc1.weight")
    if fc1 is None:
        raise ModelError(f"{found.path} is not a CLIP vision model (no MLP weights)")
    return CLIPVisionConfig(
        hidden_size=found.width, intermediate_size=int(fc1[0]),
        projection_dim=found.projection, num_hidden_layers=found.layers,
        num_attention_heads=heads, image_size=found.image_size, patch_size=found.patch,
        hidden_act=values.get("hidden_act", _KNOWN_WIDTHS.get(found.width, (0, "gelu"))[1]),
        layer_norm_eps=values.get("layer_norm_eps", 1e-5), num_channels=3)


def load_encoder(found: EncoderFile, *, device: torch.device, dtype: torch.dtype) -> Any:
    """The ``CLIPVisionModelWithProjection`` of ``found``, its weights loaded safely, in eval
    mode on ``device`` / ``dtype``. ModelError when the weights do not fit the shapes."""
    from accelerate import init_empty_weights
    from transformers import CLIPVisionModelWithProjection

    config = build_config(found)
    state = checkpoint.load_state_dict(found.weights)
    state = {k: v for k, v in state.items() if k.startswith(_PREFIX) or k.startswith("visual_")}
    with init_empty_weights():
        model = CLIPVisionModelWithProjection(config)
    wanted = dict(model.named_parameters())
    missing = sorted(set(wanted) - set(state))
    if missing:
        raise ModelError(f"{found.path} is not a complete CLIP vision model "
                         f"({len(missing)} weights missing, e.g. {missing[0]})")
    for name, param in wanted.items():
        if tuple(state[name].shape) != tuple(param.shape):
            raise ModelError(f"{found.path}: {name} has shape {tuple(state[name].shape)}, "
                             f"expected {tuple(param.shape)}")
    model.load_state_dict({k: state[k] for k in wanted}, strict=False, assign=True)
    return model.to(device=device, dtype=dtype).eval()


def module_bytes(module: Any) -> int:
    return sum(p.numel() * p.element_size() for p in module.parameters())


# ----------------------------------------------------------------------------- encoding
def pixel_values(image: Image.Image, size: int) -> torch.Tensor:
    """CLIP's preprocessing: shortest side to ``size`` (bicubic), centre crop, normalised;
    a (1, 3, size, size) float32 tensor."""
    image = image.convert("RGB")
    w, h = image.size
    scale = size / min(w, h)
    rw, rh = max(size, round(w * scale)), max(size, round(h * scale))
    image = image.resize((rw, rh), Image.Resampling.BICUBIC)
    left, top = (rw - size) // 2, (rh - size) // 2
    image = image.crop((left, top, left + size, top + size))
    array = np.asarray(image, dtype=np.float32) / np.float32(255.0)
    mean, std = np.array(CLIP_MEAN, dtype=np.float32), np.array(CLIP_STD, dtype=np.float32)
    normalised = ((array - mean) / std).astype(np.float32)
    return torch.from_numpy(normalised.transpose(2, 0, 1).copy()).unsqueeze(0)


@torch.inference_mode()
def encode(encoder: Any, image: Image.Image, *, hidden: bool) -> tuple[torch.Tensor,
                                                                          torch.Tensor]:
    """(conditional, unconditional) features of one image, as diffusers' ``encode_image``:
    ``hidden``: the penultimate hidden states, the unconditional ones from a black (zero)
    image; else the projected embedding and zeros. Shapes (1, D) or (1, tokens, D)."""
    param = next(encoder.parameters())
    pixels = pixel_values(image, int(encoder.config.image_size)).to(param.device, param.dtype)
    if hidden:
        cond = encoder(pixels, output_hidden_states=True).hidden_states[-2]
        uncond = encoder(torch.zeros_like(pixels), output_hidden_states=True).hidden_states[-2]
        return cond, uncond
    embeds = encoder(pixels).image_embeds
    return embeds, torch.zeros_like(embeds)
