"""Single-file checkpoints in the original CompVis/LDM layout, loaded fully offline.

Architecture detection (:func:`detect_arch`) reads tensor *names and shapes* only (for a
safetensors file: its header, no tensor data), never the file name:

* family from the text encoder's layout: ``conditioner.embedders.1.model.*`` -> SDXL,
  ``cond_stage_model.model.*`` (OpenCLIP) -> SD 2.x, ``cond_stage_model.transformer.*`` -> SD 1.x;
  without a text encoder, from the UNet's cross-attention width (768 / 1024 / 2048);
* inpainting from the UNet's input channels (``input_blocks.0.0.weight``: 9 = inpainting,
  4 = regular, anything else refused);
* prediction type (epsilon or v): the file's shapes cannot tell. In this order: a sibling
  ``<name>.yaml`` (the A1111 convention: ``parameterization: "v"`` means v), the safetensors
  metadata (``modelspec.prediction_type``, ``ss_v_parameterization``), then, for SD 2.x only,
  AUTOMATIC1111's test: run the loaded UNet once on a constant input at t=999 and call it
  v-prediction when ``mean(out - x) < -1`` (a v model predicts ~ -x there, an epsilon model
  ~ noise). SD 1.x and SDXL default to epsilon.

Configs: the standard architectures load with the diffusers configs shipped in
``resources/model_configs/<arch>`` (no weights; tokenizer files included). Before loading, the
checkpoint's key shapes are checked against that config so a non-standard model fails with a
clear message instead of a shape error deep in diffusers. Two sources override the shipped
configs: an explicit ``config=`` folder, and configs embedded in the safetensors metadata by
``sdstudio convert`` (:data:`sdstudio.engine.ldm_layout.CONFIG_METADATA_KEY`) - that is how
custom-size (and the test suite's tiny) models written as single files round-trip exactly.

The file is opened once through :mod:`sdstudio.engine.checkpoint` (safe loading, memory-mapped:
no tensor is read until it is needed). Each component is built on the meta device from its
config; each of its weights is found through the layout table that ``sdstudio convert`` writes
files with (:mod:`sdstudio.engine.ldm_layout`), copied once from the map straight into the
dtype and onto the device the engine asks for, and assigned, so the only full-size memory is
the model itself. The components are assembled into the pipeline class named by the config's
``model_index.json`` - nothing ever reaches the network.
"""

from __future__ import annotations

import hashlib
import inspect
import math
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sdstudio.core import paths
from sdstudio.core.errors import ModelError
from sdstudio.engine import checkpoint
from sdstudio.engine.config_check import check_model_index, components, parse_embedded_config
from sdstudio.engine.ldm_layout import (
    CONFIG_METADATA_KEY,
    FUSED_QKV,
    SD1_TEXT_PREFIX,
    SD2_TEXT_PREFIX,
    SDXL_TEXT1_PREFIX,
    UNET_PREFIX,
    VAE_PREFIX,
    Placement,
    materialize_config,
    stored_names,
    text_encoder_placements,
    unet_placements,
    vae_placements,
)

if TYPE_CHECKING:
    import torch
    from diffusers import DiffusionPipeline

    from sdstudio.core.settings import EngineSettings

ProgressFn = Callable[[str, float | None], None]

CONFIG_NAMES = ("sd15", "sd15-inpaint", "sd2-512", "sd2-768-v", "sd2-inpaint", "sdxl-base",
                "sdxl-inpaint")
_CONTEXT_KEY = "model.diffusion_model.input_blocks.{i}.1.transformer_blocks.0.attn2.to_k.weight"
_IN_KEY = UNET_PREFIX + "input_blocks.0.0.weight"


@dataclass(frozen=True)
class ArchInfo:
    family: str  # "sd1", "sd2", "sdxl"
    inpaint: bool
    prediction: str | None  # "epsilon", "v_prediction", or None = decide after loading (SD2)
    prediction_source: str  # "yaml", "metadata", "default", "undetermined", "config"
    context_dim: int | None
    unet_width: int | None

    @property
    def config_name(self) -> str:
        """The shipped config folder for this architecture."""
        if self.family == "sd1":
            return "sd15-inpaint" if self.inpaint else "sd15"
        if self.family == "sdxl":
            return "sdxl-inpaint" if self.inpaint else "sdxl-base"
        if self.inpaint:
            return "sd2-inpaint"
        return "sd2-768-v" if self.prediction == "v_prediction" else "sd2-512"

    @property
    def label(self) -> str:
        """Short architecture name for lists and metadata (``sd1``, ``sd2-v``, ``sdxl-inpaint``)."""
        name = self.family
        if self.prediction == "v_prediction":
            name += "-v"
        return name + ("-inpaint" if self.inpaint else "")


def configs_root() -> Path:
    return paths.resources_dir() / "model_configs"


def _has_prefix(shapes: Mapping[str, Any], prefix: str) -> bool:
    return any(k.startswith(prefix) for k in shapes)


def _context_dim(shapes: Mapping[str, tuple[int, ...]]) -> int | None:
    for i in range(1, 12):
        shape = shapes.get(_CONTEXT_KEY.format(i=i))
        if shape is not None and len(shape) == 2:
            return int(shape[1])
    for key, shape in shapes.items():
        if key.startswith(UNET_PREFIX) and key.endswith("attn2.to_k.weight") and len(shape) == 2:
            return int(shape[1])
    return None


def _what_else(shapes: Mapping[str, Any]) -> str:
    keys = list(shapes)
    if any(k.startswith(("lora_unet_", "lora_te", "lora_down", "lora.")) or ".lora_" in k
           for k in keys):
        return "it is a LoRA; put it in a LoRA folder and use <lora:name:weight> in the prompt"
    if any(k.startswith(("encoder.", "decoder.")) for k in keys) and not _has_prefix(
        shapes, UNET_PREFIX
    ):
        return "it is a VAE; choose it as the model's VAE"
    if any(k.startswith(("double_blocks.", "joint_blocks.", "model.diffusion_model.double_blocks"))
           for k in keys):
        return "it is a Flux / SD3-style model, which SD Studio does not run"
    if "string_to_param" in keys or "emb_params" in keys or len(keys) <= 2:
        return "it looks like a textual-inversion embedding; put it in an embeddings folder"
    return "it has no Stable Diffusion UNet (model.diffusion_model.*)"


def _yaml_prediction(path: Path) -> str | None:
    for candidate in (path.with_suffix(".yaml"), path.with_suffix(".yml")):
        try:
            text = candidate.read_text(encoding="utf-8", errors="replace")
        except OSError:
            continue
        m = re.search(r"^\s*parameterization\s*:\s*[\"']?(\w+)", text, re.MULTILINE)
        if m:
            return "v_prediction" if m.group(1).lower() == "v" else "epsilon"
        return "epsilon"  # an LDM yaml without the key means the default, eps
    return None


def _metadata_prediction(metadata: Mapping[str, str]) -> str | None:
    value = (metadata.get("modelspec.prediction_type") or "").lower()
    if value in ("v", "v_prediction", "v-prediction"):
        return "v_prediction"
    if value in ("epsilon", "eps"):
        return "epsilon"
    if (metadata.get("ss_v_parameterization") or "").lower() == "true":
        return "v_prediction"
    arch = (metadata.get("modelspec.architecture") or "").lower()
    if arch.endswith("-v") or "768-v" in arch:
        return "v_prediction"
    return None


def detect_arch(
    shapes: Mapping[str, tuple[int, ...]],
    metadata: Mapping[str, str] | None = None,
    *,
    path: Path | None = None,
) -> ArchInfo:
    """The architecture of an LDM-layout checkpoint from its tensor names and shapes."""
    metadata = metadata or {}
    name = path.name if path else "checkpoint"
    if not _has_prefix(shapes, UNET_PREFIX):
        raise ModelError(f"{name} is not a Stable Diffusion checkpoint: {_what_else(shapes)}")
    in_shape = shapes.get(_IN_KEY)
    if in_shape is None or len(in_shape) != 4:
        raise ModelError(f"{name}: the UNet has no input convolution ({_IN_KEY})")
    in_channels = int(in_shape[1])
    if in_channels not in (4, 9):
        raise ModelError(
            f"{name}: UNet with {in_channels} input channels (4 = regular, 9 = inpainting) "
            "is not supported (instruct-pix2pix / depth models are not)"
        )
    context = _context_dim(shapes)
    if _has_prefix(shapes, "conditioner.embedders.1.model."):
        family = "sdxl"
    elif _has_prefix(shapes, "conditioner.embedders.0.model."):
        raise ModelError(f"{name} is an SDXL refiner, which SD Studio does not run on its own")
    elif _has_prefix(shapes, SD2_TEXT_PREFIX):
        family = "sd2"
    elif _has_prefix(shapes, SD1_TEXT_PREFIX):
        family = "sd1"
    elif context in (768, 1024, 2048):
        family = {768: "sd1", 1024: "sd2", 2048: "sdxl"}[context]
    else:
        raise ModelError(f"{name}: cannot tell the architecture (no known text encoder)")
    prediction, source = None, "undetermined"
    if path is not None and (found := _yaml_prediction(path)):
        prediction, source = found, "yaml"
    elif found := _metadata_prediction(metadata):
        prediction, source = found, "metadata"
    elif family != "sd2" or in_channels == 9:
        prediction, source = "epsilon", "default"
    return ArchInfo(family, in_channels == 9, prediction, source, context, int(in_shape[0]))


# ----------------------------------------------------------------------------- configs
def _expected_shapes(config: Path) -> dict[str, int]:
    """A few shapes the checkpoint must have to fit ``config`` (cheap sanity check)."""
    unet = checkpoint.read_config_json(config / "unet" / "config.json")
    vae = checkpoint.read_config_json(config / "vae" / "config.json")
    expect = {
        "UNet width": int(unet["block_out_channels"][0]),
        "UNet cross-attention width": int(unet["cross_attention_dim"]),
        "VAE width": int(vae["block_out_channels"][0]),
    }
    te = config / "text_encoder" / "config.json"
    if te.is_file():
        expect["text encoder width"] = int(checkpoint.read_config_json(te)["hidden_size"])
    return expect


def _actual_shapes(shapes: Mapping[str, tuple[int, ...]], family: str) -> dict[str, int]:
    actual: dict[str, int] = {}
    if (s := shapes.get(_IN_KEY)) is not None:
        actual["UNet width"] = int(s[0])
    if (c := _context_dim(shapes)) is not None:
        actual["UNet cross-attention width"] = c
    if (s := shapes.get(VAE_PREFIX + "encoder.conv_in.weight")) is not None:
        actual["VAE width"] = int(s[0])
    te_key = {
        "sd1": SD1_TEXT_PREFIX + "text_model.embeddings.token_embedding.weight",
        "sd2": SD2_TEXT_PREFIX + "token_embedding.weight",
        "sdxl": SDXL_TEXT1_PREFIX + "text_model.embeddings.token_embedding.weight",
    }[family]
    if (s := shapes.get(te_key)) is not None:
        actual["text encoder width"] = int(s[1])
    return actual


def check_fits(shapes: Mapping[str, tuple[int, ...]], arch: ArchInfo, config: Path,
               name: str) -> None:
    expected = _expected_shapes(config)
    actual = _actual_shapes(shapes, arch.family)
    wrong = [f"{k} {actual[k]} (expected {v})" for k, v in expected.items()
             if k in actual and actual[k] != v]
    if wrong:
        raise ModelError(
            f"{name}: its sizes do not match the standard {arch.label} architecture: "
            + ", ".join(wrong)
            + ". Load it as a diffusers folder, or convert it with its diffusers config."
        )


def _config_from_metadata(metadata: Mapping[str, str], where: str) -> Path | None:
    raw = metadata.get(CONFIG_METADATA_KEY)
    if not raw:
        return None
    data = parse_embedded_config(raw, where)  # untrusted: checked whole, or ModelError
    digest = hashlib.sha256(raw.encode("utf-8")).hexdigest()[:16]
    dest = paths.cache_dir() / "single_file_configs" / digest
    if not (dest / "model_index.json").is_file():
        import shutil
        import tempfile

        dest.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{digest}-", dir=dest.parent))
        try:
            materialize_config(data, tmp, where)
            try:
                tmp.replace(dest)
            except OSError:  # another process materialized it first
                shutil.rmtree(tmp, ignore_errors=True)
        finally:
            if tmp.exists():
                shutil.rmtree(tmp, ignore_errors=True)
    return dest


# ----------------------------------------------------------------------------- loading
def is_v_prediction(unet: Any) -> bool:
    """AUTOMATIC1111's test for SD 2.x checkpoints (see the module docstring)."""
    import torch

    param = next(unet.parameters())
    ctx_dim = int(unet.config.cross_attention_dim)
    with torch.no_grad():
        x = torch.full((1, unet.config.in_channels, 8, 8), 0.5, device=param.device,
                       dtype=param.dtype)
        cond = torch.full((1, 2, ctx_dim), 0.5, device=param.device, dtype=param.dtype)
        t = torch.tensor([999], device=param.device)
        out = unet(x, t, encoder_hidden_states=cond).sample
        return float((out - x).float().mean()) < -1.0


def _component_classes(index: Mapping[str, Any]) -> dict[str, tuple[str, str]]:
    """(library, class) of each component of a checked model_index."""
    return {k: (index[k][0], index[k][1]) for k in components(index)}


def _stored(tensors: Mapping[str, torch.Tensor], placement: Placement) -> torch.Tensor | None:
    """The weight at ``placement`` as a view on the file's tensor (no copy): a third of a
    fused q/k/v, transposed, or as it is."""
    for stored in stored_names(placement):
        tensor = tensors.get(stored)
        if tensor is not None:
            break
    else:
        return None
    how = placement[1]
    if how in FUSED_QKV:
        return tensor.chunk(3, dim=0)[FUSED_QKV.index(how)]
    if how == "T":
        return tensor.T
    return tensor


def _fit(value: torch.Tensor, shape: tuple[int, ...]) -> torch.Tensor | None:
    """``value`` in ``shape``: as it is, or a linear weight stored as a 1x1 convolution (or
    the other way round), which only differ by trailing 1s."""
    if tuple(value.shape) == shape:
        return value
    if value.numel() == math.prod(shape) and [d for d in value.shape if d != 1] == [
            d for d in shape if d != 1]:
        return value.reshape(shape)
    return None


def _build_empty(lib: str, cls: Any, config_dir: Path, name: str) -> Any:
    """The component's modules from its config, on the meta device (no memory)."""
    from accelerate import init_empty_weights

    if lib == "diffusers":
        config = cls.load_config(str(config_dir / name), local_files_only=True)
        with init_empty_weights():
            return cls.from_config(config)
    config = cls.config_class.from_pretrained(str(config_dir / name), local_files_only=True)
    with init_empty_weights():
        return cls(config)


def _placements(name: str, family: str, keys: list[str], model: Any) -> dict[str, Placement]:
    if name == "unet":
        return unet_placements(keys, model.config)
    if name == "vae":
        return vae_placements(keys, model.config)
    return text_encoder_placements(name, family, keys)


def load_component(tensors: Mapping[str, torch.Tensor], lib: str, cls: Any, config_dir: Path,
                   name: str, family: str, *, device: torch.device | str,
                   dtype: torch.dtype) -> Any:
    """One component (UNet, VAE, text encoder) from the file's tensors.

    The modules are built on the meta device; each weight is found through the layout table
    (:mod:`sdstudio.engine.ldm_layout`), copied once from the memory-mapped file straight
    into ``dtype`` on ``device``, and assigned: the only full-size memory is the model
    itself."""
    import torch

    model = _build_empty(lib, cls, config_dir, name)
    targets = model.state_dict()
    placements = _placements(name, family, list(targets), model)
    weights: dict[str, torch.Tensor] = {}
    missing: list[str] = []
    with torch.no_grad():
        for key, target in targets.items():
            if not target.is_meta:  # a buffer built with its value (none in SD models)
                weights[key] = target
                continue
            placement = placements.get(key)
            value = None if placement is None else _stored(tensors, placement)
            if value is None:
                missing.append(placement[0] if placement else key)
                continue
            fitted = _fit(value, tuple(target.shape))
            if fitted is None:
                raise ModelError(f"the checkpoint's {placement[0] if placement else key} has "
                                 f"the shape {tuple(value.shape)}; this {name} needs "
                                 f"{tuple(target.shape)}")
            out_dtype = dtype if target.is_floating_point() else target.dtype
            out = torch.empty(fitted.shape, dtype=out_dtype, device=device)
            out.copy_(fitted)
            weights[key] = out
    if missing:
        raise ModelError(f"the checkpoint lacks {name} weights ({', '.join(missing[:3])}"
                         f"{'...' if len(missing) > 3 else ''})")
    model.load_state_dict(weights, strict=True, assign=True)
    return model.eval()


def load_single_file(
    path: Path,
    *,
    device: torch.device | str = "cpu",
    dtype: torch.dtype | None = None,
    settings: EngineSettings | None = None,
    config: Path | None = None,
    on_progress: ProgressFn | None = None,
) -> DiffusionPipeline:
    """Load an LDM-layout single file as a diffusers pipeline (SD / SDXL, inpaint variants as
    detected). ``config`` (a diffusers folder; weights in it are ignored) overrides the configs.
    The pipeline's ``sdstudio_arch`` attribute holds the :class:`ArchInfo`."""
    import diffusers
    import torch
    import transformers

    del settings  # device/dtype are decided by the engine; kept for the hook's signature
    path = Path(path)
    progress = on_progress or (lambda message, fraction: None)
    dtype = dtype or torch.float32

    progress(f"Reading {path.name}", 0.0)
    fmt = checkpoint.detect_format(path)
    state: dict[str, torch.Tensor] | None = None
    if fmt == "safetensors":
        shapes, metadata = checkpoint.tensor_shapes(path)
    else:
        state = checkpoint.load_state_dict(path)
        shapes, metadata = {k: tuple(v.shape) for k, v in state.items()}, {}
    arch = detect_arch(shapes, metadata, path=path)

    source = "shipped"
    if config is not None:
        config_dir, source = Path(config), "explicit"
        if not (config_dir / "model_index.json").is_file():
            raise ModelError(f"Config folder {config_dir} has no model_index.json")
    elif (embedded := _config_from_metadata(metadata, path.name)) is not None:
        config_dir, source = embedded, "embedded"
    else:
        config_dir = configs_root() / arch.config_name
        check_fits(shapes, arch, config_dir, path.name)

    if state is None:
        progress(f"Loading the weights of {path.name}", 0.1)
        state = checkpoint.load_state_dict(path)

    index = check_model_index(checkpoint.read_config_json(config_dir / "model_index.json"),
                              path.name)  # read once; names only what SD Studio loads
    classes = _component_classes(index)
    components: dict[str, Any] = {}
    model_names: list[str] = [n for n in ("unet", "vae", "text_encoder", "text_encoder_2")
                              if n in classes]
    try:
        for i, name in enumerate(model_names):
            progress(f"Converting {name}", 0.2 + 0.7 * i / len(model_names))
            lib, cls_name = classes[name]
            cls = getattr(diffusers if lib == "diffusers" else transformers, cls_name)
            components[name] = load_component(state, lib, cls, config_dir, name, arch.family,
                                               device=device, dtype=dtype)
    except ModelError as exc:
        raise ModelError(f"{path.name}: {exc}", exc.details) from exc
    except Exception as exc:
        raise ModelError(
            f"{path.name}: could not convert the {arch.label} checkpoint "
            f"({type(exc).__name__}: {str(exc).splitlines()[0][:300] if str(exc) else ''})"
        ) from exc
    finally:
        state = None  # the file's memory map goes with the last view (no gc pass: ~0.5 s)

    scheduler_dir = config_dir
    if arch.prediction is None and source == "shipped":
        v = is_v_prediction(components["unet"])
        arch = ArchInfo(arch.family, arch.inpaint, "v_prediction" if v else "epsilon",
                        "a1111-test", arch.context_dim, arch.unet_width)
        scheduler_dir = configs_root() / arch.config_name
    elif source != "shipped":
        sched_cfg = checkpoint.read_config_json(
            config_dir / "scheduler" / "scheduler_config.json")
        arch = ArchInfo(arch.family, arch.inpaint,
                        sched_cfg.get("prediction_type", "epsilon"), "config",
                        arch.context_dim, arch.unet_width)
    for name, (_lib, cls_name) in classes.items():
        if name.startswith("tokenizer"):
            components[name] = transformers.CLIPTokenizer.from_pretrained(
                str(config_dir / name), local_files_only=True)
        elif name == "scheduler":
            components[name] = getattr(diffusers, cls_name).from_pretrained(
                str(scheduler_dir), subfolder="scheduler", local_files_only=True)
    if arch.prediction and source == "shipped" and arch.prediction_source in ("yaml", "metadata"):
        sched = components["scheduler"]
        if sched.config.get("prediction_type") != arch.prediction:
            components["scheduler"] = type(sched).from_config(
                sched.config, prediction_type=arch.prediction)

    pipe_cls = getattr(diffusers, index["_class_name"])  # one of PIPELINE_CLASSES
    accepted = inspect.signature(pipe_cls.__init__).parameters
    kwargs = {k: v for k, v in components.items() if k in accepted}
    for optional in ("safety_checker", "feature_extractor", "image_encoder"):
        if optional in accepted:
            kwargs.setdefault(optional, None)
    if "requires_safety_checker" in accepted:
        kwargs["requires_safety_checker"] = False
    if "force_zeros_for_empty_prompt" in accepted and "force_zeros_for_empty_prompt" in index:
        kwargs["force_zeros_for_empty_prompt"] = bool(index["force_zeros_for_empty_prompt"])
    if "add_watermarker" in accepted:
        kwargs["add_watermarker"] = False
    pipe = pipe_cls(**kwargs)
    pipe.set_progress_bar_config(disable=True)
    pipe.to(device)
    pipe.sdstudio_arch = arch
    pipe.sdstudio_config_source = source
    pipe.sdstudio_config_dir = config_dir
    progress(f"Loaded {path.name} ({arch.label})", 1.0)
    return pipe


def describe(path: Path) -> ArchInfo:
    """Architecture of a model file from its header (or a safe mmap load for .ckpt)."""
    shapes, metadata = checkpoint.tensor_shapes(Path(path))
    arch = detect_arch(shapes, metadata, path=Path(path))
    raw = metadata.get(CONFIG_METADATA_KEY)
    embedded = parse_embedded_config(raw, Path(path).name) if raw else {}  # or ModelError
    if embedded and arch.prediction is None:
        sched = embedded.get("scheduler", {})
        prediction = sched.get("prediction_type", "epsilon")
        if prediction not in ("epsilon", "v_prediction", "sample"):
            raise ModelError(f"{Path(path).name}: its embedded scheduler has an unknown "
                             f"prediction type {str(prediction)[:40]!r}")
        arch = ArchInfo(arch.family, arch.inpaint, prediction, "config", arch.context_dim,
                        arch.unet_width)
    return arch
