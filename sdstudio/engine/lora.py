"""Separate VAE files, LoRAs and textual-inversion embeddings on a loaded pipeline.

* :func:`apply_loras` uses diffusers' adapter API (PEFT): each LoRA file is loaded once as a
  named adapter (kohya / A1111 ``lora_unet_*`` / ``lora_te*_*`` keys with ``alpha``, or the
  diffusers / PEFT layout), then ``set_adapters`` activates exactly the requested ones with
  their weights. Adapters no longer requested are deleted, and with none requested the LoRA
  layers are removed altogether (``unload_lora_weights``): nothing is ever fused into the base
  weights, so dropping ``<lora:...>`` from the prompt gives the original model back bit for bit.
  A weight of 0 keeps the LoRA out of the active set (recorded, no effect).
* :func:`load_vae`: an A1111 VAE file (LDM ``encoder.*``/``decoder.*``, optionally under
  ``first_stage_model.``), a diffusers-format VAE file, or a diffusers VAE folder.
* :func:`apply_embeddings`: every embedding file in ``settings.embedding_dirs`` becomes a token
  named after the file (A1111 ``string_to_param`` ``.pt``, ``emb_params`` safetensors,
  diffusers ``{token: tensor}``, SDXL ``clip_l``/``clip_g``), through ``load_textual_inversion``.

Every file is read through :mod:`sdstudio.engine.checkpoint` (format from the bytes; pickles
only with ``weights_only=True``). Hashes: first 10 hex digits of the file's sha256 (what
Civitai calls AutoV2), as ``GenerationInfo.lora_hashes`` expects.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sdstudio.core.errors import ModelError, describe_error
from sdstudio.core.request import LoraSpec
from sdstudio.engine import checkpoint, hashing
from sdstudio.engine.single_file import configs_root

if TYPE_CHECKING:
    import torch
    from diffusers import AutoencoderKL

    from sdstudio.core.settings import EngineSettings

LORA_SUFFIXES = (".safetensors", ".ckpt", ".pt", ".pth", ".bin")
EMBEDDING_SUFFIXES = (".safetensors", ".pt", ".bin")
MAX_EMBEDDING_BYTES = 32 * 1024 * 1024  # embeddings are kilobytes: larger files are not read
MAX_EMBEDDING_VECTORS = 75  # one prompt chunk
_STATE_ATTR = "_sdstudio_loras"  # adapter name -> (path, mtime_ns) on the pipeline
_EMB_ATTR = "_sdstudio_embeddings"  # token -> path


# ------------------------------------------------------------------------------ finding
def find_file(name: str, dirs: Iterable[str], suffixes: tuple[str, ...]) -> Path | None:
    """``name`` as a path, or a file in ``dirs`` (recursively) whose stem, name or relative
    path without suffix equals ``name`` (case-insensitive as a fallback)."""
    direct = Path(name).expanduser()
    if direct.is_file():
        return direct.resolve()
    wanted = name.replace("\\", "/").strip()
    loose: Path | None = None
    for folder in dirs:
        base = Path(folder).expanduser()
        if not base.is_dir():
            continue
        for file in sorted(base.rglob("*")):
            if not file.is_file() or file.suffix.lower() not in suffixes:
                continue
            rel = file.relative_to(base).as_posix()
            rel_stem = rel[: -len(file.suffix)]
            if wanted in (file.stem, file.name, rel, rel_stem):
                return file.resolve()
            if loose is None and wanted.lower() in (file.stem.lower(), rel_stem.lower()):
                loose = file.resolve()
    return loose


def short_hash(path: Path) -> str:
    return hashing.file_sha256(path)[:10]


# -------------------------------------------------------------------------------- LoRA
def _adapter_name(name: str, path: Path) -> str:
    base = re.sub(r"[^0-9A-Za-z_]", "_", Path(name).stem or "lora")[:40]
    return f"{base}_{short_hash(path)[:6]}"


def _lora_state(pipe: Any) -> dict[str, tuple[str, int]]:
    state = getattr(pipe, _STATE_ATTR, None)
    if state is None:
        state = {}
        setattr(pipe, _STATE_ATTR, state)
    return state


def _load_lora_file(pipe: Any, adapter: str, path: Path) -> None:
    tensors = checkpoint.load_state_dict(path)
    if not any("lora" in k or k.endswith(".alpha") for k in tensors):
        raise ModelError(f"{path.name} is not a LoRA (no lora_* weights)")
    try:
        pipe.load_lora_weights(tensors, adapter_name=adapter)
    except ModelError:
        raise
    except Exception as exc:
        raise ModelError(
            f"LoRA {path.name} does not fit this model ({type(exc).__name__}: "
            f"{str(exc).splitlines()[0][:200] if str(exc) else ''})"
        ) from exc


def apply_loras(
    pipe: Any, specs: tuple[LoraSpec, ...], settings: EngineSettings | None = None
) -> dict[str, str]:
    """Make exactly ``specs`` active on ``pipe`` (see the module docstring).

    Returns ``{name: short hash}`` for the metadata (``Lora hashes``)."""
    dirs = tuple(settings.lora_dirs) if settings is not None else ()
    loaded = _lora_state(pipe)
    hashes: dict[str, str] = {}
    weights: dict[str, float] = {}
    for spec in specs:
        path = find_file(spec.name, dirs, LORA_SUFFIXES)
        if path is None:
            where = ", ".join(dirs) if dirs else "no LoRA folder is configured"
            raise ModelError(f"LoRA {spec.name!r} not found ({where})")
        if not math.isfinite(spec.weight):
            raise ModelError(f"LoRA {spec.name!r}: weight {spec.weight} is not a number")
        hashes[spec.name] = short_hash(path)
        adapter = _adapter_name(spec.name, path)
        mtime = path.stat().st_mtime_ns
        if adapter in loaded and loaded[adapter] != (str(path), mtime):
            pipe.delete_adapters([adapter])
            del loaded[adapter]
        if adapter not in loaded:
            _load_lora_file(pipe, adapter, path)
            loaded[adapter] = (str(path), mtime)
        weights[adapter] = weights.get(adapter, 0.0) + float(spec.weight)

    stale = [a for a in loaded if a not in weights]
    if stale:
        pipe.delete_adapters(stale)
        for adapter in stale:
            del loaded[adapter]
    active = {a: w for a, w in weights.items() if w != 0.0}
    if not loaded:
        if hasattr(pipe, "unload_lora_weights"):
            pipe.unload_lora_weights()
    elif active:
        pipe.set_adapters(list(active), adapter_weights=list(active.values()))
    else:  # LoRAs named, all at weight 0: keep them loaded, compute nothing
        pipe.disable_lora()
    if active:
        pipe.enable_lora()
    return hashes


def active_loras(pipe: Any) -> list[str]:
    return list(_lora_state(pipe))


# --------------------------------------------------------------------------------- VAE
def _vae_config_for(state: Mapping[str, torch.Tensor]) -> dict[str, Any]:
    """A diffusers AutoencoderKL config from LDM VAE weight shapes (standard SD VAE values
    when the shapes are those of the standard VAE)."""
    levels = sorted({int(k.split(".")[2]) for k in state if k.startswith("encoder.down.")})
    channels = [int(state[f"encoder.down.{i}.block.0.conv1.weight"].shape[0]) for i in levels]
    per_level = len({k.split(".")[4] for k in state if k.startswith("encoder.down.0.block.")})
    latent = int(state["decoder.conv_in.weight"].shape[1])
    base = json.loads((configs_root() / "sd15" / "vae" / "config.json").read_text("utf-8"))
    if channels == list(base["block_out_channels"]) and per_level == base["layers_per_block"]:
        return base
    groups = 32 if all(c % 32 == 0 for c in channels) else math.gcd(*channels)
    return {
        **base,
        "block_out_channels": channels,
        "down_block_types": ["DownEncoderBlock2D"] * len(channels),
        "up_block_types": ["UpDecoderBlock2D"] * len(channels),
        "layers_per_block": per_level,
        "latent_channels": latent,
        "norm_num_groups": groups,
    }


def load_vae(
    path: Path,
    *,
    device: torch.device | str = "cpu",
    dtype: torch.dtype | None = None,
    settings: EngineSettings | None = None,
    scaling_factor: float | None = None,
) -> AutoencoderKL:
    """A separate VAE (file or diffusers folder; a bare name is looked up in
    ``settings.vae_dirs``). ``scaling_factor`` (the model's own) is kept: the latent scale
    belongs to the diffusion model, not to the VAE file."""
    import torch
    from diffusers import AutoencoderKL

    ref = Path(path).expanduser()
    if not ref.exists():
        dirs = tuple(settings.vae_dirs) if settings is not None else ()
        found = find_file(str(path), dirs, (".safetensors", ".ckpt", ".pt", ".pth"))
        if found is None:
            raise ModelError(f"VAE {str(path)!r} not found")
        ref = found
    dtype = dtype or torch.float32
    extra = {"scaling_factor": scaling_factor} if scaling_factor is not None else {}
    try:
        if ref.is_dir():
            folder = ref / "vae" if (ref / "vae" / "config.json").is_file() else ref
            if not (folder / "config.json").is_file():
                raise ModelError(f"{ref} is not a VAE folder (no config.json)")
            vae = AutoencoderKL.from_pretrained(str(folder), local_files_only=True,
                                                use_safetensors=True, torch_dtype=dtype, **extra)
            return vae.to(device).eval()
        state = checkpoint.load_state_dict(ref)
        for prefix in ("first_stage_model.", "vae."):
            if any(k.startswith(prefix) for k in state):
                state = {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}
                break
        state = {k: v for k, v in state.items() if not k.startswith("model_ema.")}
        if "encoder.conv_in.weight" not in state:
            raise ModelError(f"{ref.name} is not a VAE (no encoder.conv_in weights)")
        if any(k.startswith("encoder.down_blocks.") for k in state):  # diffusers layout
            config_path = ref.with_name("config.json")
            if config_path.is_file():
                config = checkpoint.read_config_json(config_path)
            else:
                config = json.loads(
                    (configs_root() / "sd15" / "vae" / "config.json").read_text("utf-8"))
            config.update(extra)
            vae = AutoencoderKL.from_config(config)
            vae.load_state_dict(state, strict=True)
            return vae.to(device=device, dtype=dtype).eval()
        config = {**_vae_config_for(state), **extra}
        from diffusers.loaders.single_file_utils import convert_ldm_vae_checkpoint

        converted = convert_ldm_vae_checkpoint(state, config)
        vae = AutoencoderKL.from_config(config)
        missing, _unexpected = vae.load_state_dict(converted, strict=False)
        if missing:
            raise ModelError(f"{ref.name}: VAE weights missing ({', '.join(missing[:3])}...)")
        return vae.to(device=device, dtype=dtype).eval()
    except ModelError:
        raise
    except Exception as exc:
        raise ModelError(f"could not load the VAE {ref.name} ({type(exc).__name__}: "
                         f"{str(exc).splitlines()[0][:200] if str(exc) else ''})") from exc


# --------------------------------------------------------------------------- embeddings
def read_embedding(path: Path) -> dict[str, torch.Tensor]:
    """``{"": vectors}`` for one-encoder embeddings, ``{"clip_l": ..., "clip_g": ...}`` for
    SDXL ones. Vectors are ``(n_vectors, width)``: floating point, finite, at most
    :data:`MAX_EMBEDDING_VECTORS`. Refuses (ModelError) anything else, and files over
    :data:`MAX_EMBEDDING_BYTES` unread."""
    import torch

    size = path.stat().st_size
    if size > MAX_EMBEDDING_BYTES:
        raise ModelError(f"{path.name} is too large for a textual-inversion embedding "
                         f"({size / 2**20:.0f} MB; at most {MAX_EMBEDDING_BYTES // 2**20} MB): "
                         "a model file in the embeddings folder?")
    fmt = checkpoint.detect_format(path)
    if fmt == "safetensors":
        data: Any = checkpoint.load_state_dict(path)
    else:
        data = checkpoint._torch_load(path, fmt)
    if isinstance(data, torch.Tensor):
        return {"": _vectors(path, data)}
    if not isinstance(data, Mapping):
        raise ModelError(f"{path.name} is not a textual-inversion embedding")
    if "clip_l" in data and "clip_g" in data:
        return {"clip_l": _vectors(path, data["clip_l"]), "clip_g": _vectors(path, data["clip_g"])}
    if isinstance(data.get("string_to_param"), Mapping):
        tensor = next(iter(data["string_to_param"].values()))
    elif "emb_params" in data:
        tensor = data["emb_params"]
    else:
        tensors = [v for v in data.values() if isinstance(v, torch.Tensor)]
        if len(tensors) != 1:
            raise ModelError(f"{path.name} is not a textual-inversion embedding")
        tensor = tensors[0]
    return {"": _vectors(path, tensor)}


def _vectors(path: Path, tensor: Any) -> torch.Tensor:
    """``tensor`` as ``(n_vectors, width)``, checked (see :func:`read_embedding`)."""
    import torch

    if not isinstance(tensor, torch.Tensor) or tensor.ndim == 0 or tensor.numel() == 0:
        raise ModelError(f"{path.name} is not a textual-inversion embedding")
    if not tensor.is_floating_point():
        raise ModelError(f"{path.name} is not a textual-inversion embedding (its vectors are "
                         f"{str(tensor.dtype).removeprefix('torch.')}, not floating point)")
    vectors = tensor.reshape(-1, tensor.shape[-1])
    if len(vectors) > MAX_EMBEDDING_VECTORS:
        raise ModelError(f"{path.name} has {len(vectors)} vectors; a textual-inversion "
                         f"embedding has at most {MAX_EMBEDDING_VECTORS}")
    if not bool(torch.isfinite(vectors).all()):
        raise ModelError(f"{path.name}: its vectors are not finite (NaN or infinity)")
    return vectors


def apply_embeddings(pipe: Any, settings: EngineSettings | None) -> dict[str, str]:
    """Load every embedding in ``settings.embedding_dirs`` not yet loaded into ``pipe``.

    Returns ``{token: note}`` of those skipped (wrong width for this model, unreadable,
    refused by :func:`read_embedding`): one line each, for a Notice."""
    dirs = tuple(settings.embedding_dirs) if settings is not None else ()
    done: dict[str, str] = getattr(pipe, _EMB_ATTR, None) or {}
    setattr(pipe, _EMB_ATTR, done)
    skipped: dict[str, str] = {}
    te2 = getattr(pipe, "text_encoder_2", None)
    width1 = int(pipe.text_encoder.get_input_embeddings().weight.shape[1])
    for folder in dirs:
        base = Path(folder).expanduser()
        if not base.is_dir():
            continue
        for file in sorted(base.rglob("*")):
            if not file.is_file() or file.suffix.lower() not in EMBEDDING_SUFFIXES:
                continue
            token = file.stem
            if token in done:
                continue
            try:
                vectors = read_embedding(file)
                if te2 is not None:
                    if "clip_l" not in vectors:
                        skipped[token] = "not an SDXL embedding"
                        continue
                    pipe.load_textual_inversion(
                        {token: vectors["clip_l"]}, token=token,
                        text_encoder=pipe.text_encoder, tokenizer=pipe.tokenizer)
                    pipe.load_textual_inversion(
                        {token: vectors["clip_g"]}, token=token,
                        text_encoder=te2, tokenizer=pipe.tokenizer_2)
                else:
                    tensor = vectors.get("")
                    if tensor is None or int(tensor.shape[-1]) != width1:
                        skipped[token] = "made for another model family"
                        continue
                    pipe.load_textual_inversion({token: tensor}, token=token)
                done[token] = str(file)
            except Exception as exc:  # ModelError, OSError, a library's error: one line
                skipped[token] = describe_error(exc)
    return skipped
