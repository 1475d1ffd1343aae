"""Memory policy: which savers to enable, as a pure function of the situation.

``decide_memory`` takes the device kind, its free and total memory, the model's size and the
request's size and returns a ``MemoryPlan``. It imports nothing heavy, so it is tested as a
table without a GPU. ``settings.memory_mode`` is ``auto`` (decided from free memory), ``low``
(every saver that applies) or ``off`` (none); each saver's own setting (``on``/``off``)
overrides the mode.

Estimates (fp16 on the GPU; doubled for fp32), deliberately on the safe side:
- the VAE decoder at full resolution peaks around ``w*h*1.5 kB`` per image (1.6 GB at 1024²);
- the UNet's activations (with PyTorch SDPA) around ``w*h*0.5 kB`` per image incl. CFG;
- the weights need ``model_bytes`` on the device unless offloaded to the CPU.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace
from typing import Any

from sdstudio.core.settings import EngineSettings

GIB = 1 << 30
_HEADROOM = 0.85  # use at most this share of the free memory


@dataclass(frozen=True)
class MemoryPlan:
    attention_slicing: bool = False
    vae_slicing: bool = False
    vae_tiling: bool = False
    cpu_offload: bool = False
    sequential_offload: bool = False  # only as the last out-of-memory fallback
    reason: str = ""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @property
    def savers(self) -> tuple[str, ...]:
        return tuple(
            name for name in ("attention_slicing", "vae_slicing", "vae_tiling", "cpu_offload",
                              "sequential_offload")
            if getattr(self, name)
        )


def estimate_vae_bytes(width: int, height: int, bytes_per_value: int = 2) -> int:
    """Peak memory of one full-resolution VAE decode."""
    return width * height * 768 * bytes_per_value


def estimate_unet_bytes(width: int, height: int, batch: int, bytes_per_value: int = 2) -> int:
    return batch * width * height * 256 * bytes_per_value


def decide_memory(
    device_kind: str,
    free_bytes: int,
    total_bytes: int,
    model_bytes: int,
    width: int,
    height: int,
    batch: int,
    settings: EngineSettings,
    *,
    bytes_per_value: int = 2,
) -> MemoryPlan:
    """Choose the memory savers. Pure: no torch, no device queries."""
    mode = (settings.memory_mode or "auto").lower()
    gpu = device_kind in ("cuda", "mps")
    reasons: list[str] = []
    decided: dict[str, bool]
    if mode == "off":
        decided = dict.fromkeys(("attention_slicing", "vae_slicing", "vae_tiling",
                                 "cpu_offload"), False)
        reasons.append("memory savers off")
    elif mode == "low":
        decided = {
            "attention_slicing": True,
            "vae_slicing": True,
            "vae_tiling": True,
            "cpu_offload": device_kind == "cuda",
        }
        reasons.append("low-memory mode: every saver")
        if device_kind != "cuda":
            reasons.append("CPU offload applies to CUDA only")
    else:
        budget = int(free_bytes * _HEADROOM)
        vae_one = estimate_vae_bytes(width, height, bytes_per_value)
        vae_tile = estimate_vae_bytes(512, 512, bytes_per_value)  # a tiled decode's peak
        unet = estimate_unet_bytes(width, height, batch, bytes_per_value)
        # offload only when the weights do not fit even with the VAE tiled
        offload = device_kind == "cuda" and model_bytes + unet + vae_tile > budget
        forced = (settings.cpu_offload or "auto").lower()
        if device_kind == "cuda" and forced in ("on", "off"):
            offload = forced == "on"
        elif offload:
            reasons.append(
                f"model {model_bytes / GIB:.1f} GiB + activations do not fit in "
                f"{free_bytes / GIB:.1f} GiB free: CPU offload"
            )
        room = max(budget - (0 if offload else model_bytes), 0)
        tiling = vae_one > room * 0.8
        slicing = batch > 1 and not tiling and vae_one * batch > room * 0.8
        attention = gpu and (unet > room // 2 or (device_kind == "mps" and total_bytes < 64 * GIB))
        if not gpu:
            reasons.append("CPU: savers only when the image would not fit in RAM")
        elif device_kind == "mps" and total_bytes < 64 * GIB:
            reasons.append("MPS with less than 64 GiB: attention slicing")
        elif attention:
            reasons.append("little memory left for attention: attention slicing")
        if tiling:
            reasons.append(f"VAE decode of {width}x{height} needs ~{vae_one / GIB:.1f} GiB: tiling")
        if slicing:
            reasons.append(f"VAE decode of {batch} images at once does not fit: VAE slicing")
        if gpu and not (tiling or slicing or attention or offload):
            reasons.append(
                f"{free_bytes / GIB:.1f} GiB free is enough for {width}x{height} x{batch}"
            )
        decided = {
            "attention_slicing": attention,
            "vae_slicing": slicing,
            "vae_tiling": tiling,
            "cpu_offload": offload,
        }
    for name in decided:
        override = (getattr(settings, name, "auto") or "auto").lower()
        if override in ("on", "off"):
            value = override == "on"
            if name == "cpu_offload" and value and device_kind != "cuda":
                reasons.append("cpu_offload=on ignored: CUDA only")
                value = False
            if value != decided[name]:
                reasons.append(f"{name}={override} (setting)")
            decided[name] = value
    return MemoryPlan(**decided, reason="; ".join(reasons))


# When the device runs out of memory anyway, the same image is tried again with the next
# saver, in this order (the cheapest in speed first); offloading applies to CUDA only.
FALLBACKS: tuple[tuple[str, str], ...] = (
    ("vae_tiling", "VAE tiling"),
    ("attention_slicing", "attention slicing"),
    ("cpu_offload", "model CPU offload"),
    ("sequential_offload", "sequential CPU offload"),
)


def next_fallback(plan: MemoryPlan, device_kind: str) -> tuple[MemoryPlan, str] | None:
    """The plan with the next saver of :data:`FALLBACKS` that is not on yet, and its name;
    None when every one that applies to ``device_kind`` is on. Pure."""
    for name, label in FALLBACKS:
        if name.endswith("offload") and device_kind != "cuda":
            continue
        if getattr(plan, name) or (name == "cpu_offload" and plan.sequential_offload):
            continue
        changes: dict[str, Any] = {name: True}
        if name == "sequential_offload":
            changes["cpu_offload"] = False  # replaces the model-level offload
        reason = f"{plan.reason}; out of memory: {label}" if plan.reason else (
            f"out of memory: {label}")
        return replace(plan, **changes, reason=reason), label
    return None



# ------------------------------------------------------------------- upscaler tile size
UPSCALE_TILE_SIDES = (1024, 768, 512, 384, 256, 192, 128, 96, 64)
UPSCALE_CPU_MAX_TILE = 512  # larger tiles are no faster on the CPU and cost RAM


def estimate_upscale_tile_bytes(tile: int, scale: int, bytes_per_value: int,
                                heavy: bool = False) -> int:
    """Peak activation memory of one ``tile``x``tile`` tile through an upscaler model of
    ``scale``: an ESRGAN-like network keeps ~12 maps of 64 channels at the input size and ~3
    at each upsampled size (``scale**2`` times larger); transformer models (SwinIR, HAT, DAT:
    ``heavy``) about four times as much. On the safe side."""
    values_per_pixel = 64 * (12 + 3 * max(scale, 1) ** 2)
    return tile * tile * values_per_pixel * bytes_per_value * (4 if heavy else 1)


def choose_upscale_tile(
    device_kind: str,
    free_bytes: int,
    *,
    scale: int,
    model_bytes: int,
    bytes_per_value: int,
    image_side: int,
    heavy: bool = False,
) -> int:
    """The tile side (input pixels) for upscaling an image whose longer side is
    ``image_side`` with a model of ``scale`` (weights ``model_bytes``): the largest of
    :data:`UPSCALE_TILE_SIDES` whose estimate fits in the usable share of ``free_bytes`` after
    the weights, at most :data:`UPSCALE_CPU_MAX_TILE` off the GPU; never more than the image
    (one tile = untiled). Pure: no torch, no device queries."""
    budget = int(free_bytes * _HEADROOM) - model_bytes
    cap = UPSCALE_TILE_SIDES[0] if device_kind in ("cuda", "mps") else UPSCALE_CPU_MAX_TILE
    chosen = UPSCALE_TILE_SIDES[-1]
    for side in UPSCALE_TILE_SIDES:
        if side <= cap and estimate_upscale_tile_bytes(side, scale, bytes_per_value,
                                                       heavy) <= budget:
            chosen = side
            break
    return max(1, min(chosen, image_side))


def upscale_tile_overlap(tile: int) -> int:
    """Input pixels two neighbouring tiles share (blended): an eighth of the tile, 8 to 32."""
    return max(8, min(32, tile // 8))
