"""Model file conversions (``sdstudio convert IN OUT``).

* ``.ckpt``/``.pt`` (pickle) -> ``.safetensors``: read only through the safe loader
  (``torch.load(weights_only=True)``), the A1111 ``"state_dict"`` wrapper removed;
* single file -> diffusers folder: loaded as SD Studio loads it (architecture detection, shipped
  configs), then ``save_pretrained`` with safetensors;
* diffusers folder -> single file in the original CompVis/LDM layout (``model.diffusion_model.*``,
  ``first_stage_model.*``, ``cond_stage_model.transformer.*`` for SD 1.x,
  ``cond_stage_model.model.*`` (OpenCLIP) for SD 2.x, ``conditioner.embedders.0/1.*`` for SDXL).
  The inverse of diffusers' own LDM -> diffusers conversion; the test suite checks the round
  trip is exact. The file also carries the folder's diffusers configs in its safetensors
  metadata (:data:`CONFIG_METADATA_KEY`), so models whose sizes differ from the standard
  architectures (custom or tiny models) load back exactly; standard single files without that
  key load with the configs shipped in ``resources/model_configs``.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sdstudio.core.errors import ModelError
from sdstudio.engine import checkpoint, single_file
from sdstudio.engine.ldm_layout import (
    CONFIG_METADATA_KEY,
    FUSED_QKV,
    SD1_TEXT_PREFIX,
    SD2_TEXT_PREFIX,
    SDXL_TEXT1_PREFIX,
    SDXL_TEXT2_PREFIX,
    Placement,
    clip_placements,
    embedded_config,
    open_clip_placements,
    read_config,
    unet_placements,
    vae_placements,
)

if TYPE_CHECKING:
    import torch

def to_ldm(state: Mapping[str, Any], placements: Mapping[str, Placement]) -> dict[str, Any]:
    """Weights under diffusers / transformers names -> the single file's names, stored as
    the original stores them (:data:`~sdstudio.engine.ldm_layout.Placement`). Weights the
    table leaves out (``position_ids``) are not written."""
    out: dict[str, Any] = {}
    fused: dict[str, dict[str, Any]] = {}
    for key, value in state.items():
        if key not in placements:
            continue
        name, how = placements[key]
        if how == "1x1" and value.ndim == 2:
            value = value[:, :, None, None]
        elif how == "T":
            value = value.T
        elif how in FUSED_QKV:
            fused.setdefault(name, {})[how] = value
            continue
        out[name] = value
    if fused:
        import torch

        for name, parts in fused.items():
            out[name] = torch.cat([parts[p] for p in FUSED_QKV], dim=0)
    return out


def unet_to_ldm(state: Mapping[str, Any], config: Mapping[str, Any]) -> dict[str, Any]:
    """diffusers UNet2DConditionModel weights -> ``model.diffusion_model.*`` names."""
    return to_ldm(state, unet_placements(state, config))


def vae_to_ldm(state: Mapping[str, torch.Tensor], config: Mapping[str, Any]) -> dict[str, Any]:
    """diffusers AutoencoderKL weights -> ``first_stage_model.*`` names (attention weights as
    1x1 convolutions, as in the original)."""
    return to_ldm(state, vae_placements(state, config))


def clip_to_ldm(state: Mapping[str, torch.Tensor], prefix: str) -> dict[str, Any]:
    """Hugging Face CLIP text encoder -> the LDM layout (which keeps the HF names)."""
    return to_ldm(state, clip_placements(state, prefix))


def open_clip_to_ldm(state: Mapping[str, torch.Tensor], prefix: str) -> dict[str, Any]:
    """Hugging Face CLIP text encoder -> OpenCLIP names (q/k/v fused into ``in_proj``)."""
    return to_ldm(state, open_clip_placements(state, prefix))


# ----------------------------------------------------------------------------- whole models
def _component_state(folder: Path, name: str) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    files = sorted((folder / name).glob("*.safetensors"))
    if not files:
        raise ModelError(f"{folder.name}: no safetensors weights for {name}")
    state: dict[str, torch.Tensor] = {}
    for file in files:
        state.update(load_file(str(file)))
    return state


def folder_family(folder: Path) -> str:
    """"sd1", "sd2" or "sdxl" for a diffusers folder."""
    index = read_config(folder / "model_index.json")
    if "text_encoder_2" in index:
        return "sdxl"
    te = read_config(folder / "text_encoder" / "config.json")
    return "sd2" if te.get("hidden_act") == "gelu" or te.get("pad_token_id") == 0 else "sd1"


def diffusers_to_ldm(
    folder: Path, *, states: Mapping[str, Mapping[str, torch.Tensor]] | None = None
) -> dict[str, Any]:
    """All weights of a diffusers SD 1.x / 2.x / SDXL folder in the original single-file layout.

    ``states`` (component -> diffusers state dict) replaces reading the weight files, e.g. meta
    tensors of a real-size model built from a config folder.
    """
    folder = Path(folder)
    family = folder_family(folder)

    def state_of(name: str) -> Mapping[str, torch.Tensor]:
        return states[name] if states is not None else _component_state(folder, name)

    out: dict[str, Any] = {}
    out.update(unet_to_ldm(state_of("unet"), read_config(folder / "unet" / "config.json")))
    out.update(vae_to_ldm(state_of("vae"), read_config(folder / "vae" / "config.json")))
    if family == "sd1":
        out.update(clip_to_ldm(state_of("text_encoder"), SD1_TEXT_PREFIX))
    elif family == "sd2":
        out.update(open_clip_to_ldm(state_of("text_encoder"), SD2_TEXT_PREFIX))
    else:
        out.update(clip_to_ldm(state_of("text_encoder"), SDXL_TEXT1_PREFIX))
        out.update(open_clip_to_ldm(state_of("text_encoder_2"), SDXL_TEXT2_PREFIX))
    return out


def _save_safetensors(
    tensors: Mapping[str, torch.Tensor], out: Path, metadata: dict[str, str] | None = None
) -> Path:
    """Atomic: written to a temp file next to ``out``, then renamed; never overwrites."""
    from safetensors.torch import save_file

    out = Path(out)
    if out.exists():
        raise ModelError(f"{out} already exists; choose another output name")
    out.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{out.name}-", suffix=".tmp", dir=out.parent)
    os.close(fd)
    try:
        contiguous = {k: v.contiguous() for k, v in tensors.items()}
        save_file(contiguous, tmp, metadata=metadata)
        if out.exists():
            raise ModelError(f"{out} already exists; choose another output name")
        os.replace(tmp, out)
    finally:
        Path(tmp).unlink(missing_ok=True)
    return out


def folder_to_single_file(folder: Path, out: Path, *, embed_config: bool = True) -> Path:
    """A diffusers folder -> one ``.safetensors`` in the original LDM layout."""
    tensors = diffusers_to_ldm(Path(folder))
    metadata = {"format": "pt"}
    if embed_config:
        metadata[CONFIG_METADATA_KEY] = json.dumps(embedded_config(Path(folder)))
    return _save_safetensors(tensors, out, metadata)


def ckpt_to_safetensors(src: Path, out: Path) -> Path:
    """A pickle checkpoint -> safetensors, through the safe loader only. Tensors that share
    storage are copied (safetensors forbids shared storage)."""
    state = checkpoint.load_state_dict(Path(src))
    seen: set[tuple[int, int]] = set()
    clean: dict[str, Any] = {}
    for key, tensor in state.items():
        ident = (tensor.untyped_storage().data_ptr(), int(tensor.storage_offset()))
        clean[key] = tensor.clone() if ident in seen or not tensor.is_contiguous() else tensor
        seen.add(ident)
    return _save_safetensors(clean, out, {"format": "pt"})


def single_file_to_folder(src: Path, out: Path) -> Path:
    """A single-file checkpoint -> a diffusers folder (safetensors weights)."""
    import torch

    out = Path(out)
    if out.exists() and any(out.iterdir()):
        raise ModelError(f"{out} already exists and is not empty; choose another output folder")
    pipe = single_file.load_single_file(Path(src), device=torch.device("cpu"), dtype=torch.float32)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}-", suffix=".tmp", dir=out.parent))
    try:
        pipe.save_pretrained(tmp, safe_serialization=True)
        # transformers 5 saves tokenizers as tokenizer.json only; keep the plain CLIP files
        # (vocab.json, merges.txt, configs) that every other SD Studio folder has.
        config_dir = Path(getattr(pipe, "sdstudio_config_dir", ""))
        for sub in ("tokenizer", "tokenizer_2"):
            if (config_dir / sub).is_dir() and (tmp / sub).is_dir():
                shutil.rmtree(tmp / sub)
                shutil.copytree(config_dir / sub, tmp / sub)
        if out.exists():
            out.rmdir()
        os.replace(tmp, out)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return out


def convert(src: Path, out: Path, *, log: Callable[[str], None] = print) -> Path:
    """``sdstudio convert IN OUT``: chooses the conversion from what IN is (by its bytes or its
    folder layout) and what OUT names (a ``.safetensors`` file or a folder)."""
    src, out = Path(src), Path(out)
    if not src.exists():
        raise ModelError(f"Not found: {src}")
    wants_file = out.suffix.lower() == ".safetensors"
    if src.is_dir():
        if not (src / "model_index.json").is_file():
            raise ModelError(f"{src} is not a diffusers model folder (no model_index.json)")
        if not wants_file:
            raise ModelError("A diffusers folder converts to a single file: name OUT *.safetensors")
        log(f"Writing {src.name} as one single-file checkpoint (LDM layout)...")
        return folder_to_single_file(src, out)
    fmt = checkpoint.detect_format(src)
    if wants_file:
        if fmt == "safetensors":
            raise ModelError(f"{src.name} is already a safetensors file")
        log(f"Converting {src.name} to safetensors through the safe loader...")
        return ckpt_to_safetensors(src, out)
    if out.suffix:
        raise ModelError(f"Output {out.name}: name a folder (diffusers) or a .safetensors file")
    log(f"Loading {src.name} and saving it as a diffusers folder...")
    return single_file_to_folder(src, out)
