"""Separate VAE files, LoRAs and textual-inversion embeddings on a loaded pipeline.

* :func:`apply_loras` changes the model's weights in place as AUTOMATIC1111 1.10's Lora
  extension does: kohya / A1111 LoRA (``lora_unet_*``, ``lora_te_*``, SDXL ``lora_te1_*`` /
  ``lora_te2_*``, UNet layers under diffusers or LDM names), LoCon convolutions (1x1, 3x3,
  Tucker ``lora_mid``), LyCORIS LoHa and LoKr, DoRA (``dora_scale``), full ``diff`` and norm
  layers, and the diffusers / PEFT LoRA layouts; the formats and the math are in
  :mod:`sdstudio.engine.lora_formats`. The original weight of every changed layer is kept
  (on the CPU) and copied back when the LoRAs change or are dropped, so dropping
  ``<lora:...>`` from the prompt gives the original model back bit for bit. A file is read
  and checked against the model in full before any weight changes; one that cannot be
  applied is refused by name. A weight of 0 is recorded but changes nothing.
* :func:`load_vae`: an A1111 VAE file (LDM ``encoder.*``/``decoder.*``, optionally under
  ``first_stage_model.``), a diffusers-format VAE file, or a diffusers VAE folder.
* :func:`apply_embeddings`: every embedding file in ``settings.embedding_dirs`` becomes a token
  named after the file (A1111 ``string_to_param`` ``.pt``, ``emb_params`` safetensors,
  diffusers ``{token: tensor}``, SDXL ``clip_l``/``clip_g``), through ``load_textual_inversion``.

Every file is read through :mod:`sdstudio.engine.checkpoint` (format from the bytes; pickles
only with ``weights_only=True``). Hashes are A1111's (:mod:`sdstudio.engine.hashing`): a LoRA's
is 12 hex digits of the "addnet" hash (or kohya's ``sshs_model_hash`` metadata, which A1111
1.10 prefers), as ``GenerationInfo.lora_hashes`` expects; :func:`embedding_hashes` gives
"TI hashes".
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sdstudio.core import paths
from sdstudio.core.errors import ModelError, describe_error
from sdstudio.core.request import LoraSpec
from sdstudio.engine import checkpoint, hashing, lora_formats
from sdstudio.engine.single_file import configs_root

if TYPE_CHECKING:
    import torch
    from diffusers import AutoencoderKL

    from sdstudio.core.settings import EngineSettings

LORA_SUFFIXES = (".safetensors", ".ckpt", ".pt", ".pth", ".bin")
EMBEDDING_SUFFIXES = (".safetensors", ".pt", ".bin")
VAE_SUFFIXES = (".safetensors", ".ckpt", ".pt", ".pth")
MAX_EMBEDDING_BYTES = 32 * 1024 * 1024  # embeddings are kilobytes: larger files are not read
MAX_EMBEDDING_VECTORS = 75  # one prompt chunk
_STATE_ATTR = "_sdstudio_loras"  # the pipeline's _LoraState
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


# -------------------------------------------------------------------------------- LoRA
@dataclass
class _Network:
    """One parsed LoRA file (kept while it is requested, re-read when the file changes)."""

    stamp: tuple[int, int]  # (size, mtime_ns)
    short_hash: str
    layers: list[lora_formats.Layer]


@dataclass
class _LoraState:
    """What :func:`apply_loras` did to one pipeline: the parsed files, what is applied (in
    order: resolved path, stamp, weight) and every changed layer's original weight and bias
    (on the CPU), from which removal restores it bit for bit."""

    networks: dict[str, _Network] = field(default_factory=dict)
    applied: tuple[tuple[str, tuple[int, int], float], ...] = ()
    backups: dict[int, tuple[Any, torch.Tensor, torch.Tensor | None]] = field(
        default_factory=dict)
    modules: dict[str, tuple[str, Any]] | None = None


def _lora_state(pipe: Any) -> _LoraState:
    state = getattr(pipe, _STATE_ATTR, None)
    if not isinstance(state, _LoraState):
        state = _LoraState()
        setattr(pipe, _STATE_ATTR, state)
    return state


def _clip_name(name: str) -> str:
    """transformers >= 5.6 flattens CLIPTextModel; LoRA files keep ``text_model.``."""
    return name if name.startswith(("text_model.", "text_projection")) else "text_model." + name


def _module_table(pipe: Any) -> dict[str, tuple[str, Any]]:
    """Every layer a LoRA may change, under each name LoRA files use for it: kohya's
    ``lora_unet_<diffusers or LDM name>`` / ``lora_te_`` / ``lora_te1_`` / ``lora_te2_`` (dots
    as underscores), and the diffusers ``unet.`` / ``text_encoder.`` / ``text_encoder_2.``
    names. Value: (``unet:<name>`` / ``te1:<name>`` / ``te2:<name>``, module)."""
    import torch

    from sdstudio.engine.convert import unet_to_ldm
    from sdstudio.engine.ldm_layout import UNET_PREFIX

    kinds = (torch.nn.Linear, torch.nn.Conv2d, torch.nn.GroupNorm, torch.nn.LayerNorm)
    table: dict[str, tuple[str, Any]] = {}

    def add(names: Iterable[str], target: str, module: Any) -> None:
        for name in names:
            table.setdefault(name, (target, module))

    unet = pipe.unet
    unet_modules = {n: m for n, m in unet.named_modules()
                    if isinstance(m, kinds) and getattr(m, "weight", None) is not None}
    for name, module in unet_modules.items():
        flat = name.replace(".", "_")
        add((f"lora_unet_{flat}", f"unet.{name}", name), f"unet:{name}", module)
    try:  # kohya's SDXL files (and some SD1 ones) name UNet layers as the LDM checkpoint does
        keys = list(unet.state_dict())
        for ldm, key in unet_to_ldm({k: k for k in keys}, unet.config).items():
            name = str(key).rpartition(".")[0]
            if name in unet_modules:
                flat = ldm[len(UNET_PREFIX):].rpartition(".")[0].replace(".", "_")
                add((f"lora_unet_{flat}",), f"unet:{name}", unet_modules[name])
    except ModelError:
        pass  # a UNet without an LDM layout: its LoRAs use the diffusers names
    te2 = getattr(pipe, "text_encoder_2", None)
    encoders = [("te1", pipe.text_encoder, ("lora_te1_",) if te2 is not None
                 else ("lora_te_", "lora_te1_"), "text_encoder.")]
    if te2 is not None:
        encoders.append(("te2", te2, ("lora_te2_",), "text_encoder_2."))
    for tag, encoder, prefixes, dotted in encoders:
        if encoder is None:
            continue
        for name, module in encoder.named_modules():
            if not isinstance(module, kinds) or getattr(module, "weight", None) is None:
                continue
            full = _clip_name(name)
            names = [p + full.replace(".", "_") for p in prefixes]
            add((*names, dotted + full, dotted + name), f"{tag}:{full}", module)
    return table


def _real_tensor(module: Any, name: str) -> torch.Tensor | None:
    """The tensor holding ``module.<name>``: the parameter itself, or, while accelerate's
    sequential CPU offload has moved it to the meta device, the CPU copy its hook keeps."""
    tensor = getattr(module, name, None)
    if tensor is None:
        return None
    if tensor.device.type != "meta":
        return tensor.data
    weights = getattr(getattr(module, "_hf_hook", None), "weights_map", None)
    if weights is not None and name in weights:
        return weights[name]
    raise ModelError("a LoRA cannot be applied while the model's weights are offloaded "
                     "to the meta device without a copy")


def _restore(state: _LoraState) -> None:
    import torch

    with torch.no_grad():
        for module, weight, bias in state.backups.values():
            target = _real_tensor(module, "weight")
            assert target is not None
            target.copy_(weight)
            if bias is not None:
                real_bias = _real_tensor(module, "bias")
                assert real_bias is not None
                real_bias.copy_(bias)
    state.backups.clear()
    state.applied = ()


def _apply_network(state: _LoraState, network: _Network, weight: float) -> None:
    """Add ``network`` at ``weight`` to the current weights, each layer's original kept
    first (A1111: each network's change is computed on the weights the earlier ones left)."""
    import torch

    assert state.modules is not None
    with torch.no_grad():
        for layer in network.layers:
            module = state.modules[layer.key][1]
            real = _real_tensor(module, "weight")
            real_bias = _real_tensor(module, "bias")
            assert real is not None
            if id(module) not in state.backups:
                state.backups[id(module)] = (
                    module, real.detach().to("cpu", copy=True),
                    None if real_bias is None else real_bias.detach().to("cpu", copy=True))
            delta, bias = lora_formats.layer_delta(layer, real, weight, real_bias is not None)
            real.copy_((real.to(delta.dtype) + delta).to(real.dtype))
            if bias is not None and real_bias is not None:
                real_bias.copy_((real_bias.to(bias.dtype) + bias).to(real_bias.dtype))


def _read_network(path: Path, stamp: tuple[int, int],
                  modules: Mapping[str, tuple[str, Any]]) -> _Network:
    tensors = checkpoint.load_state_dict(path)
    metadata: dict[str, str] = {}
    if checkpoint.detect_format(path) == "safetensors":
        metadata = checkpoint.read_safetensors_header(path).metadata
    layers = lora_formats.parse(path.name, tensors, modules)
    lora_formats.check_fits(path.name, layers, modules)
    digest = hashing.a1111_lora_hash(path, lora_formats.metadata_hash(metadata))
    return _Network(stamp, digest, layers)


def apply_loras(
    pipe: Any, specs: tuple[LoraSpec, ...], settings: EngineSettings | None = None
) -> dict[str, str]:
    """Make exactly ``specs`` applied to ``pipe``'s weights (see :mod:`lora_formats` for the
    formats and the math), in order, each at its weight; ``()`` restores the original
    weights bit for bit. Every file is read and checked against the model before any weight
    changes: a LoRA that cannot be applied is refused (ModelError) and the model is left as
    it was. A weight of 0 is checked and recorded but changes nothing.

    Returns ``{name as written: A1111's 12-digit short hash}`` for "Lora hashes"."""
    dirs = paths.search_dirs("lora", settings)
    state = _lora_state(pipe)
    resolved: list[tuple[LoraSpec, Path, tuple[int, int]]] = []
    for spec in specs:
        path = find_file(spec.name, dirs, LORA_SUFFIXES)
        if path is None:
            where = ", ".join(dirs) if dirs else "no LoRA folder is configured"
            raise ModelError(f"LoRA {spec.name!r} not found ({where})")
        if not math.isfinite(spec.weight):
            raise ModelError(f"LoRA {spec.name!r}: weight {spec.weight} is not a number")
        st = path.stat()
        resolved.append((spec, path, (st.st_size, st.st_mtime_ns)))
    if resolved and state.modules is None:
        state.modules = _module_table(pipe)
    wanted_files = {str(path) for _, path, _ in resolved}
    networks = {k: v for k, v in state.networks.items() if k in wanted_files}
    hashes: dict[str, str] = {}
    for spec, path, stamp in resolved:
        known = networks.get(str(path))
        if known is None or known.stamp != stamp:
            assert state.modules is not None
            networks[str(path)] = _read_network(path, stamp, state.modules)
        hashes[spec.name] = networks[str(path)].short_hash
    state.networks = networks
    wanted = tuple((str(path), stamp, float(spec.weight))
                   for spec, path, stamp in resolved if spec.weight != 0.0)
    if wanted == state.applied:
        return hashes
    _restore(state)
    try:
        for path_key, _stamp, weight in wanted:
            _apply_network(state, networks[path_key], weight)
    except BaseException:
        _restore(state)  # never left half applied
        raise
    state.applied = wanted
    return hashes


def active_loras(pipe: Any) -> list[str]:
    """The LoRA files applied to ``pipe`` now, in order (resolved paths)."""
    return [path for path, _stamp, _weight in _lora_state(pipe).applied]


def embedding_hashes(pipe: Any, texts: Iterable[str]) -> dict[str, str]:
    """A1111's "TI hashes": ``{embedding name: first 12 hex digits of its file's sha256}``
    for the embeddings :func:`apply_embeddings` loaded whose token the pipeline's tokenizer
    finds in ``texts`` (prompt, then negative prompt), in order of first use."""
    loaded: dict[str, str] = getattr(pipe, _EMB_ATTR, None) or {}
    if not loaded:
        return {}
    tokenizer = pipe.tokenizer
    by_id: dict[int, str] = {}
    for token in loaded:
        token_id = tokenizer.convert_tokens_to_ids(token)
        if isinstance(token_id, int) and token_id != tokenizer.unk_token_id:
            by_id[token_id] = token
    used: dict[str, str] = {}
    for text in texts:
        if not text:
            continue
        for token_id in tokenizer(text, add_special_tokens=False).input_ids:
            name = by_id.get(int(token_id))
            if name is not None and name not in used:
                used[name] = hashing.a1111_embedding_hash(loaded[name])
    return used


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
        dirs = paths.search_dirs("vae", settings)
        found = find_file(str(path), dirs, VAE_SUFFIXES)
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
    dirs = paths.search_dirs("embedding", settings)
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
