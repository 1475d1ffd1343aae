"""Cheap latent -> RGB previews: a linear map of the 4 latent channels, no VAE.

Factors from ComfyUI's latent formats (fitted against the real VAEs). The preview has the
latent's size (1/8 of the image per side); the window scales it up.
"""

from __future__ import annotations

import torch
from PIL import Image

_SD15_FACTORS = [
    [0.3512, 0.2297, 0.3227],
    [0.3250, 0.4974, 0.2350],
    [-0.2829, 0.1762, 0.2721],
    [-0.2120, -0.2616, -0.7177],
]
_SD15_BIAS = [0.0, 0.0, 0.0]
_SDXL_FACTORS = [
    [0.3651, 0.4232, 0.4341],
    [-0.2533, -0.0042, 0.1068],
    [0.1076, 0.1111, -0.0362],
    [-0.3165, -0.2492, -0.2188],
]
_SDXL_BIAS = [0.1084, -0.0175, -0.0011]

_CACHE: dict[tuple[bool, torch.device, torch.dtype], tuple[torch.Tensor, torch.Tensor]] = {}


def _factors(sdxl: bool, device: torch.device,
             dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
    key = (sdxl, device, dtype)
    if key not in _CACHE:
        f, b = (_SDXL_FACTORS, _SDXL_BIAS) if sdxl else (_SD15_FACTORS, _SD15_BIAS)
        _CACHE[key] = (torch.tensor(f, device=device, dtype=dtype),
                       torch.tensor(b, device=device, dtype=dtype))
    return _CACHE[key]


def latents_to_rgb(latents: torch.Tensor, arch: str = "sd1") -> Image.Image:
    """Preview of the first latent of a batch (shape (B, 4, h, w) or (4, h, w))."""
    with torch.no_grad():
        latent = latents[0] if latents.dim() == 4 else latents
        latent = latent[:4]
        factors, bias = _factors(arch.startswith("sdxl"), latent.device, latent.dtype)
        # (h*w, 4) @ (4, 3): one small matmul, then one copy to the CPU as bytes
        rgb = torch.addmm(bias, latent.flatten(1).T, factors)
        rgb = rgb.clamp_(-1, 1).add_(1).mul_(127.5).round_().to(torch.uint8).cpu()
    h, w = latent.shape[-2:]
    return Image.frombuffer("RGB", (int(w), int(h)), rgb.numpy().tobytes(), "raw", "RGB", 0, 1)
