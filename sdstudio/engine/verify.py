"""Is a downloaded file a model of the kind it is meant to be, and safe to list?

:func:`verify_model_file` runs the same safe readers the engine loads files with (its
format from its bytes, a safetensors header validated before anything else is read, pickles
only through ``torch.load(weights_only=True)``, which refuses any that would run code) and
then checks what the file holds against its kind:

- checkpoint: an LDM-layout Stable Diffusion UNet (the architecture read as the engine reads
  it, :func:`sdstudio.engine.single_file.describe`);
- lora: LoRA weights in a layout the LoRA code knows;
- vae: an autoencoder's decoder;
- embedding: textual-inversion vectors (:func:`sdstudio.engine.lora.read_embedding`);
- upscaler: an architecture spandrel knows, as the upscaler loads it;
- controlnet: a ControlNet, T2I-Adapter or IP-Adapter (:func:`core.control.classify_keys`);
- clip_vision: a CLIP image encoder; vae_approx: a safely readable file.

ModelError (one line) when it is not. The download code deletes such a file; it is never
moved into a model folder. The format checks read headers; pickles are loaded (memory-mapped
when they are zip files).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from sdstudio.core.errors import ModelError
from sdstudio.engine import checkpoint


def _shapes(path: Path) -> dict[str, tuple[int, ...]]:
    """Tensor names and shapes: a safetensors header (validated), or the whole pickle loaded
    through ``torch.load(weights_only=True)``, which refuses one that would run code."""
    return checkpoint.tensor_shapes(path)[0]


def _holds(shapes: Mapping[str, object], *parts: str) -> bool:
    return any(any(p in name for p in parts) for name in shapes)


def _not_a(path: Path, what: str, shapes: Mapping[str, object]) -> ModelError:
    sample = ", ".join(sorted(shapes)[:3]) or "no tensors"
    return ModelError(f"{path.name} is not {what} (its weights: {sample}...)", details=str(path))


def verify_model_file(path: Path, kind: str) -> str:
    """A short description of what ``path`` holds if it is a usable ``kind`` of model file
    (a :data:`sdstudio.core.paths.MODEL_KINDS` key); ModelError otherwise."""
    path = Path(path)
    if kind == "checkpoint":
        from sdstudio.engine import single_file

        return f"checkpoint ({single_file.describe(path).label})"  # reads as _shapes does
    if kind == "embedding":
        from sdstudio.engine.lora import read_embedding

        vectors = read_embedding(path)
        return f"embedding ({sum(int(v.shape[0]) for v in vectors.values())} vectors)"
    if kind == "upscaler":
        from sdstudio.engine.upscale import describe_upscaler_file

        return f"upscaler ({describe_upscaler_file(path)})"
    shapes = _shapes(path)
    if kind == "lora":
        from sdstudio.engine.lora_formats import split_key

        layers = {s[0] for s in map(split_key, shapes) if s is not None}
        if not layers:
            raise _not_a(path, "a LoRA", shapes)
        return f"LoRA ({len(layers)} layers)"
    if kind == "vae":
        if not _holds(shapes, "decoder.") or _holds(shapes, "model.diffusion_model."):
            raise _not_a(path, "a VAE", shapes)
        return "VAE"
    if kind == "controlnet":
        from sdstudio.core.control import classify_keys

        found, arch = classify_keys({k: list(v) for k, v in shapes.items()})
        if found == "unknown":
            raise _not_a(path, "a ControlNet, T2I-Adapter or IP-Adapter", shapes)
        return f"{found} ({arch or 'architecture not known'})"
    if kind == "clip_vision":
        if not _holds(shapes, "vision_model.", "visual."):
            raise _not_a(path, "a CLIP image encoder", shapes)
        return "CLIP image encoder"
    if kind == "vae_approx":
        return "preview decoder"
    raise ModelError(f"unknown kind of model {kind!r}")
