"""TAESD live previews: the decoder of madebyollin's tiny autoencoder turns the latent being
denoised into a preview that looks like the image, at the image's size.

Files, looked for by name (A1111's names) in SD Studio's own ``vae_approx`` folder
(``paths.model_dir("vae_approx")``) and in AUTOMATIC1111's ``models/VAE-approx`` next to the
configured A1111 folders (``core.other_apps.vae_approx_folders``): ``taesd_decoder`` for SD 1.x
and 2.x, ``taesdxl_decoder`` for SDXL, ``.safetensors`` or ``.pth``. The format comes from the
file's bytes and is loaded safely (``engine.checkpoint``: safetensors, or
``torch.load(weights_only=True)``).

Key layout: madebyollin's decoder is an ``nn.Sequential`` whose layer 0 is the clamp (no
weights), so its keys are ``1.weight``, ``3.conv.0.weight`` ...; diffusers' ``DecoderTiny``
holds the same layers without the clamp in ``layers``: key ``N.rest`` is ``layers.(N-1).rest``
(diffusers' ``scripts/convert_tiny_autoencoder_to_diffusers.py``). A diffusers-format
``AutoencoderTiny`` file (``decoder.layers.…``) is taken as well. ``DecoderTiny.forward``
applies the clamp and returns pixels in [-1, 1]; it takes the pipeline's latents as they are
(TAESD's scaling factor is 1).
"""

from __future__ import annotations

import logging
import re
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from PIL import Image

from sdstudio.core import paths
from sdstudio.core.errors import ModelError
from sdstudio.core.other_apps import vae_approx_folders
from sdstudio.engine import checkpoint

log = logging.getLogger(__name__)

DECODER_NAMES = {"sd": "taesd_decoder", "sdxl": "taesdxl_decoder"}
SUFFIXES = (".safetensors", ".pth")
NUM_BLOCKS = (3, 3, 3, 1)  # TAESD's decoder: 3 blocks per stage, 3 upsamplings, 1 block last
MAX_CHANNELS = 512  # the real decoders have 64
_TAESD_KEY = re.compile(r"^(\d+)\.(.+)$")

Previewer = Callable[[torch.Tensor], Image.Image]


def family(arch: str) -> str:
    """Which TAESD decodes ``arch``'s latents: ``sdxl`` for SDXL, else ``sd`` (SD 1.x/2.x)."""
    return "sdxl" if arch.startswith("sdxl") else "sd"


def decoder_dirs(settings: Any) -> list[Path]:
    """Where TAESD decoder files are looked for: SD Studio's own folder, then AUTOMATIC1111's
    ``models/VAE-approx`` beside the A1111 folders in ``settings`` (an EngineSettings)."""
    own = [Path(d) for d in paths.search_dirs("vae_approx", settings)]
    return own + [d for d in vae_approx_folders(settings) if d not in own]


def find_decoder(arch: str, dirs: Sequence[Path]) -> Path | None:
    """The first TAESD decoder file for ``arch`` in ``dirs``; a name that resolves outside its
    folder (a link elsewhere) is not taken."""
    name = DECODER_NAMES[family(arch)]
    for folder in dirs:
        try:
            root = Path(folder).resolve()
        except OSError:
            continue
        for suffix in SUFFIXES:
            candidate = root / f"{name}{suffix}"
            try:
                resolved = candidate.resolve()
                if resolved.is_file() and resolved.is_relative_to(root):
                    return resolved
            except OSError:
                continue
    return None


def to_decoder_keys(state: dict[str, torch.Tensor], path: Path) -> dict[str, torch.Tensor]:
    """madebyollin's (``N.…``) or diffusers' (``decoder.layers.N.…``) decoder keys as
    ``DecoderTiny``'s (``layers.N.…``); anything else is refused."""
    out: dict[str, torch.Tensor] = {}
    for key, tensor in state.items():
        if key.startswith("decoder.layers."):
            out["layers." + key[len("decoder.layers."):]] = tensor
            continue
        if key.startswith("encoder."):  # a whole AutoencoderTiny file: its decoder only
            continue
        match = _TAESD_KEY.match(key)
        if match is None or int(match.group(1)) < 1:
            raise ModelError(f"{path.name} is not a TAESD decoder (unexpected tensor {key[:60]!r})")
        out[f"layers.{int(match.group(1)) - 1}.{match.group(2)}"] = tensor
    if not out:
        raise ModelError(f"{path.name} is not a TAESD decoder (it holds no decoder weights)")
    return out


def load_decoder(path: Path, device: torch.device | str = "cpu",
                 dtype: torch.dtype = torch.float32) -> torch.nn.Module:
    """A TAESD decoder (diffusers' ``DecoderTiny``) from ``path``, safely loaded, checked
    against the architecture (every weight present, every shape right). Raises ModelError."""
    from diffusers.models.autoencoders.vae import DecoderTiny

    path = Path(path)
    state = to_decoder_keys(checkpoint.load_state_dict(path), path)
    first = state.get("layers.0.weight")
    if first is None or first.dim() != 4 or first.shape[1] != 4 or first.shape[2:] != (3, 3) \
            or not 0 < first.shape[0] <= MAX_CHANNELS:
        raise ModelError(f"{path.name} is not a TAESD decoder (its first layer is not a 3x3 "
                         "convolution of 4 latent channels)")
    channels = int(first.shape[0])
    decoder = DecoderTiny(in_channels=4, out_channels=3, num_blocks=NUM_BLOCKS,
                          block_out_channels=(channels,) * len(NUM_BLOCKS),
                          upsampling_scaling_factor=2, act_fn="relu", upsample_fn="nearest")
    try:
        missing, unexpected = decoder.load_state_dict(state, strict=False)
    except RuntimeError as exc:  # a shape that does not fit
        first_line = str(exc).strip().splitlines()[-1].strip()[:160]
        raise ModelError(f"{path.name} is not a TAESD decoder ({first_line})") from None
    if missing or unexpected:
        raise ModelError(f"{path.name} is not a TAESD decoder ({len(missing)} weights "
                         f"missing, {len(unexpected)} unexpected)")
    if any(not torch.is_floating_point(t) for t in state.values()):
        raise ModelError(f"{path.name} is not a TAESD decoder (non-float weights)")
    return decoder.to(device=device, dtype=dtype).eval().requires_grad_(False)


def decode_preview(decoder: torch.nn.Module, latents: torch.Tensor) -> Image.Image:
    """The first latent of ``latents`` ((B, 4, h, w) or (4, h, w)) decoded to an RGB image
    of 8x its size."""
    with torch.no_grad():
        latent = latents[0] if latents.dim() == 4 else latents
        param = next(decoder.parameters())
        pixels = decoder(latent[None, :4].to(device=param.device, dtype=param.dtype))[0]
        rgb = pixels.float().clamp_(-1, 1).add_(1).mul_(127.5).round_().to(torch.uint8)
        rgb = rgb.permute(1, 2, 0).contiguous().cpu()
    h, w = rgb.shape[:2]
    return Image.frombuffer("RGB", (int(w), int(h)), rgb.numpy().tobytes(), "raw", "RGB", 0, 1)


@dataclass
class _Held:
    key: tuple[str, int, int, str, str]
    decoder: torch.nn.Module


class PreviewDecoders:
    """The engine's TAESD decoder, loaded on first use and kept while the same file, device
    and dtype are asked for (one at a time). A file that cannot be used is told once (its
    message returned by :meth:`previewer`) and not tried again until it changes."""

    def __init__(self) -> None:
        self._held: _Held | None = None
        self._refused: dict[tuple[str, int, int], str] = {}
        self._lock = threading.Lock()

    def previewer(self, arch: str, dirs: Sequence[Path], device: torch.device,
                  dtype: torch.dtype) -> tuple[Previewer | None, str]:
        """(a function latents -> preview image, or None when there is no usable file;
        a one-line notice when a file was refused just now, else "")."""
        path = find_decoder(arch, dirs)
        if path is None:
            return None, ""
        try:
            st = path.stat()
        except OSError:
            return None, ""
        file_key = (str(path), st.st_size, st.st_mtime_ns)
        with self._lock:
            if file_key in self._refused:
                return None, ""
            key = (*file_key, str(device), str(dtype))
            if self._held is None or self._held.key != key:
                self._held = None
                try:
                    decoder = load_decoder(path, device, dtype)
                except ModelError as exc:
                    self._refused[file_key] = str(exc)
                    return None, f"TAESD previews off: {exc}"
                self._held = _Held(key, decoder)
            decoder = self._held.decoder
        return (lambda latents: decode_preview(decoder, latents)), ""

    def release(self) -> None:
        with self._lock:
            self._held = None
