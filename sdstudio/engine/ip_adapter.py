"""IP-Adapter: a reference image as a prompt (SD 1.x and SDXL), through diffusers' adapter
attention.

A request's IP-Adapter units are Control units (``core/control.py``) whose model is an
IP-Adapter file: module ``ip-adapter_clip_sd15`` / ``ip-adapter_clip_sdxl`` /
``ip-adapter_clip_sdxl_plus_vith`` / ``ip-adapter_clip_h`` / ``ip-adapter_clip_g`` as A1111's
ControlNet extension names them, weight = the adapter's scale, guidance start / end = the
fraction of the pass's model evaluations during which it applies (A1111's ControlNet
extension: active while ``start <= step / steps <= end``; outside it the scale is 0).

How it runs:

* :func:`read_adapter` loads an adapter file safely (safetensors with the ``image_proj.`` /
  ``ip_adapter.`` prefixes, or a PyTorch ``.bin`` holding ``{"image_proj": ..., "ip_adapter":
  ...}`` through ``torch.load(weights_only=True)`` only) and tells the variant from the keys:
  plain (``ip-adapter_sd15``, ``_light``, ``_vit-G``, ``ip-adapter_sdxl``, ``_vit-h``), Plus
  and Plus-face (a resampler with ``latents``), full-face (``proj.3``). Face ID adapters need
  InsightFace face embeddings and are refused with one line.
* :func:`check_fits` compares the adapter's shapes with the loaded UNet (cross-attention width
  768 for SD 1.x, 1024 SD 2.x, 2048 SDXL, one ``to_k_ip`` / ``to_v_ip`` pair per
  cross-attention layer): an SD 1.5 adapter on an SDXL model is refused with one line.
* :class:`IPAdapterSet` puts the adapters into the UNet with diffusers'
  ``_load_ip_adapter_weights`` (given the state dicts loaded here: diffusers never opens or
  unpickles a file), one adapter per unit, and keeps them and their CLIP image encoders
  (:mod:`sdstudio.engine.clip_vision`, local folders only) loaded while the next requests use
  the same files; :meth:`IPAdapterSet.unload` restores the UNet's own attention.
* :class:`IPConditioning` is one request's part: the reference images' embeddings (encoded
  once per image and encoder, with the unconditional ones for classifier-free guidance) for
  the pipeline's ``ip_adapter_image_embeds``, and :meth:`IPConditioning.active`, which around
  each pipeline call re-installs the adapter attention (attention slicing replaces every
  processor) and sets each adapter's scale before every UNet evaluation.

The runner calls it through ``Engine._apply_ip_adapters`` before the pass and wraps every
pipeline call (first pass and the hires fix's second pass) in ``active``.
"""

from __future__ import annotations

import contextlib
import hashlib
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from PIL import Image

from sdstudio.core import control
from sdstudio.core.control import ControlModel, ControlUnit
from sdstudio.core.errors import ModelError, RequestError
from sdstudio.core.request import GenerationRequest
from sdstudio.core.settings import EngineSettings
from sdstudio.engine import checkpoint, clip_vision
from sdstudio.engine import device as devices

#: A1111's ControlNet extension's IP-Adapter preprocessors (CLIP vision encoders). The encoder
#: actually used is the one whose width the adapter's weights need (see clip_vision).
IP_MODULES = ("ip-adapter_clip_sd15", "ip-adapter_clip_sdxl", "ip-adapter_clip_sdxl_plus_vith",
              "ip-adapter_clip_h", "ip-adapter_clip_g", "ip-adapter-auto")
ADAPTER_SUFFIXES = (".safetensors", ".bin", ".pth", ".pt")
_FAMILIES = {768: "SD 1.x", 1024: "SD 2.x", 2048: "SDXL"}
_EMBED_CACHE = 16  # reference images kept encoded


def is_ip_module(module: str) -> bool:
    return module.strip().lower() in IP_MODULES


def family(cross_dim: int) -> str:
    """The model family a cross-attention width means ("SD 1.x (cross-attention 768)")."""
    name = _FAMILIES.get(cross_dim)
    return f"{name} (cross-attention {cross_dim})" if name else f"cross-attention {cross_dim}"


@dataclass(frozen=True)
class AdapterWeights:
    """One IP-Adapter file's tensors, split as diffusers takes them, and what they need."""

    path: Path
    variant: str  # "plain", "plus" (Plus / Plus-face) or "full-face"
    image_proj: Mapping[str, torch.Tensor]
    ip_adapter: Mapping[str, torch.Tensor]
    cross_dim: int
    input_width: int  # the image encoder's projection (plain) or hidden width
    projected: bool  # plain: the projected embedding; else the penultimate hidden states

    @property
    def name(self) -> str:
        return self.path.stem


def _refuse(path: Path, reason: str) -> ModelError:
    return ModelError(f"IP-Adapter {path.name}: {reason}", details=str(path))


def _split(path: Path, obj: Any) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    if not isinstance(obj, Mapping):
        raise _refuse(path, f"it holds a {type(obj).__name__}, not a dictionary of tensors")
    proj: dict[str, torch.Tensor] = {}
    attn: dict[str, torch.Tensor] = {}
    for part, target in (("image_proj", proj), ("ip_adapter", attn)):
        nested = obj.get(part)
        if isinstance(nested, Mapping):  # the .bin layout: {"image_proj": {...}, ...}
            for key, value in nested.items():
                if isinstance(value, torch.Tensor):
                    target[str(key)] = value
    for key, value in obj.items():  # the safetensors layout: "image_proj.proj.weight", ...
        if isinstance(value, torch.Tensor) and isinstance(key, str):
            head, _, rest = key.partition(".")
            if head == "image_proj" and rest:
                proj[rest] = value
            elif head == "ip_adapter" and rest:
                attn[rest] = value
    if not proj or not attn:
        raise _refuse(path, "not an IP-Adapter (no image_proj / ip_adapter weights)")
    return proj, attn


def read_adapter(path: str | Path) -> AdapterWeights:
    """An IP-Adapter file, loaded safely; ModelError (one line) for anything else."""
    path = Path(path)
    obj = checkpoint.load_object(path)
    proj, attn = _split(path, obj)
    try:
        if "perceiver_resampler.proj_in.weight" in proj or (
                "norm.weight" in proj and "proj.0.weight" in proj and "proj.3.weight" not in proj):
            raise _refuse(path, "Face ID IP-Adapters need InsightFace face embeddings, which "
                                "SD Studio does not compute")
        if "proj.weight" in proj and "norm.weight" in proj:
            cross = int(proj["norm.weight"].shape[0])
            if int(proj["proj.weight"].shape[0]) != 4 * cross:
                raise _refuse(path, "its image projection does not make 4 tokens")
            variant, width, projected = "plain", int(proj["proj.weight"].shape[1]), True
        elif "proj.3.weight" in proj and "proj.0.weight" in proj:
            cross = int(proj["proj.3.weight"].shape[0])
            variant, width, projected = "full-face", int(proj["proj.0.weight"].shape[1]), False
        elif {"latents", "proj_in.weight", "proj_out.weight"} <= set(proj):
            cross = int(proj["proj_out.weight"].shape[0])
            q = proj.get("layers.0.0.to_q.weight", proj.get("layers.0.attn.to_q.weight"))
            if q is None or int(q.shape[0]) % 64:
                raise _refuse(path, "its resampler's attention is not in 64-wide heads")
            variant, width, projected = "plus", int(proj["proj_in.weight"].shape[1]), False
        else:
            raise _refuse(path, "an image projection SD Studio does not know")
        first = attn.get("1.to_k_ip.weight")
        if first is None or first.dim() != 2:
            raise _refuse(path, "no 1.to_k_ip weight")
    except (IndexError, AttributeError) as exc:
        raise _refuse(path, f"malformed weights ({exc})") from None
    if int(first.shape[1]) != cross:
        raise _refuse(path, f"its image tokens ({cross} wide) do not match its attention "
                            f"({int(first.shape[1])} wide)")
    return AdapterWeights(path=path, variant=variant, image_proj=proj, ip_adapter=attn,
                          cross_dim=cross, input_width=width, projected=projected)


def _cross_attention(unet: Any) -> list[tuple[str, Any]]:
    """(processor name, Attention module) of the UNet's cross-attention layers, in the order
    diffusers numbers an adapter's ``to_k_ip`` weights (1, 3, 5, ...)."""
    out = []
    for name in unet.attn_processors:
        if (name.endswith("attn1.processor") or "motion_modules" in name
                or name.startswith("encoder_hid_proj.")):
            continue
        out.append((name, unet.get_submodule(name[: -len(".processor")])))
    return out


def _unet_cross_dim(unet: Any) -> int:
    dim = unet.config.cross_attention_dim
    return int(dim[0] if isinstance(dim, (list, tuple)) else dim)


def check_fits(adapter: AdapterWeights, unet: Any, model_name: str) -> None:
    """RequestError (one line) unless ``adapter`` was made for this UNet's architecture."""
    unet_dim = _unet_cross_dim(unet)
    field_name = "control_units"
    if adapter.cross_dim != unet_dim:
        raise RequestError(field_name, f"IP-Adapter {adapter.name} is for "
                           f"{family(adapter.cross_dim)}; {model_name} is "
                           f"{family(unet_dim)}: choose an adapter made for this model")
    layers = _cross_attention(unet)
    for index, (_name, attn) in enumerate(layers):
        key = f"{2 * index + 1}.to_k_ip.weight"
        expected = (int(attn.to_q.in_features), unet_dim)
        for part in (key, key.replace("to_k_ip", "to_v_ip")):
            tensor = adapter.ip_adapter.get(part)
            if tensor is None or tuple(tensor.shape) != expected:
                raise RequestError(field_name, f"{adapter.name} does not fit {model_name}'s "
                                   f"UNet ({len(layers)} cross-attention layers; {part} "
                                   f"{'missing' if tensor is None else tuple(tensor.shape)}, "
                                   f"expected {expected})")
    if f"{2 * len(layers) + 1}.to_k_ip.weight" in adapter.ip_adapter:
        raise RequestError(field_name, f"{adapter.name} has more attention layers than "
                           f"{model_name}'s UNet ({len(layers)})")


# ------------------------------------------------------------------------- the loaded set
def _stamp(path: Path) -> tuple[str, int, int]:
    stat = path.stat()
    return str(path.resolve()), stat.st_mtime_ns, stat.st_size


def _plain_processor() -> Any:
    from diffusers.models.attention_processor import AttnProcessor2_0

    return AttnProcessor2_0()


def _is_ip_processor(processor: Any) -> bool:
    from diffusers.models.attention_processor import (
        IPAdapterAttnProcessor,
        IPAdapterAttnProcessor2_0,
    )

    return isinstance(processor, (IPAdapterAttnProcessor, IPAdapterAttnProcessor2_0))


@dataclass
class IPAdapterSet:
    """IP-Adapters loaded into one UNet (one per unit, in unit order) and their encoders."""

    unet: Any
    key: tuple[tuple[str, int, int], ...]
    adapters: list[AdapterWeights]
    encoders: dict[str, Any]  # encoder path -> CLIPVisionModelWithProjection
    adapter_encoder: list[str]  # per adapter, its encoder's path
    processors: dict[str, Any]  # cross-attention name -> IP-Adapter attention processor
    embeds: dict[tuple[str, str, bool], tuple[torch.Tensor, torch.Tensor]] = field(
        default_factory=dict)

    @classmethod
    def load(cls, unet: Any, adapters: Sequence[AdapterWeights],
             encoders: Mapping[str, Any], adapter_encoder: Sequence[str]) -> IPAdapterSet:
        """Put ``adapters`` into ``unet`` (diffusers' adapter attention and image projection
        layers), keeping the UNet's own self-attention processors (attention slicing)."""
        current = dict(unet.attn_processors)
        # diffusers rebuilds every processor from its class: plain ones for the load
        unet.set_attn_processor({name: _plain_processor() for name in current})
        state_dicts = [{"image_proj": dict(a.image_proj), "ip_adapter": dict(a.ip_adapter)}
                       for a in adapters]
        try:
            unet._load_ip_adapter_weights(state_dicts, low_cpu_mem_usage=True)
        except Exception as exc:
            unet.encoder_hid_proj = None
            unet.config.encoder_hid_dim_type = None
            unet.set_attn_processor(current)
            if devices.is_out_of_memory(exc):
                raise
            names = ", ".join(a.name for a in adapters)
            first = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else ""
            raise ModelError(f"IP-Adapter {names}: its weights do not load "
                             f"({type(exc).__name__}: {first})", details=str(exc)) from None
        loaded = dict(unet.attn_processors)  # the Plus resampler brings attention of its own
        processors = {n: p for n, p in loaded.items() if _is_ip_processor(p)}
        unet.set_attn_processor({n: processors.get(n, current.get(n, p))
                                 for n, p in loaded.items()})
        key = tuple(_stamp(a.path) for a in adapters)
        return cls(unet=unet, key=key, adapters=list(adapters), encoders=dict(encoders),
                   adapter_encoder=list(adapter_encoder), processors=processors)

    @property
    def nbytes(self) -> int:
        """Adapter weights (at the UNet's precision) plus the image encoders."""
        size = next(self.unet.parameters()).element_size()
        weights = sum(sum(t.numel() for part in (a.image_proj, a.ip_adapter)
                          for t in part.values()) for a in self.adapters) * size
        return weights + sum(clip_vision.module_bytes(e) for e in self.encoders.values())

    def install(self) -> None:
        """The adapter attention back on every cross-attention layer that lost it (attention
        slicing on or off replaces all processors); self-attention is left as it is."""
        current = self.unet.attn_processors
        if all(current.get(n) is p for n, p in self.processors.items()):
            return
        self.unet.set_attn_processor({n: self.processors.get(n, p) for n, p in current.items()})

    def unload(self) -> None:
        """The UNet's own attention again (sliced where its self-attention is sliced), no
        image projection; the encoders are released."""
        from diffusers.models.attention_processor import SlicedAttnProcessor

        procs = dict(self.unet.attn_processors)
        for name, proc in procs.items():
            if _is_ip_processor(proc):
                sibling = procs.get(name.replace("attn2.processor", "attn1.processor"))
                procs[name] = (SlicedAttnProcessor(sibling.slice_size)
                               if isinstance(sibling, SlicedAttnProcessor) else _plain_processor())
        self.unet.set_attn_processor(procs)
        self.unet.encoder_hid_proj = None
        self.unet.config.encoder_hid_dim_type = None
        self.encoders.clear()
        self.embeds.clear()
        self.processors.clear()

    def encode(self, index: int, image: Image.Image, device: torch.device
               ) -> tuple[torch.Tensor, torch.Tensor]:
        """(cond, uncond) image features for adapter ``index``, cached per image content."""
        adapter = self.adapters[index]
        encoder_key = self.adapter_encoder[index]
        digest = hashlib.sha1(image.tobytes() + repr((image.size, image.mode)).encode()
                              ).hexdigest()
        key = (digest, encoder_key, adapter.projected)
        if key not in self.embeds:
            encoder = self.encoders[encoder_key]
            home = next(encoder.parameters()).device
            moved = home != device
            if moved:  # offloaded model: the encoder visits the device for its one call
                encoder.to(device)
            try:
                cond, uncond = clip_vision.encode(encoder, image, hidden=not adapter.projected)
            finally:
                if moved:
                    encoder.to(home)
            if len(self.embeds) >= _EMBED_CACHE:
                self.embeds.pop(next(iter(self.embeds)))
            self.embeds[key] = (cond, uncond)
        return self.embeds[key]


# ----------------------------------------------------------------------- one request's part
@dataclass(frozen=True)
class ReferenceUnit:
    """An IP-Adapter unit as the engine runs it."""

    path: Path  # the adapter file
    image: Image.Image  # the reference image
    weight: float = 1.0
    start: float = 0.0
    end: float = 1.0


def active_at(start: float, end: float, index: int, total: int) -> bool:
    """A1111's ControlNet extension's guidance window: step ``index`` of ``total`` is inside
    when ``start <= index / total <= end``."""
    fraction = index / total if total > 0 else 0.0
    return start <= fraction <= end


@dataclass
class IPConditioning:
    """The embeddings and scale schedule of one request's IP-Adapter units."""

    adapters: IPAdapterSet
    units: list[ReferenceUnit]
    embeds: list[torch.Tensor]  # per adapter: (2 or 1, 1, ...) as the pipelines take them

    def pipe_kwargs(self) -> dict[str, Any]:
        return {"ip_adapter_image_embeds": list(self.embeds)}

    def scales(self, index: int, total: int) -> list[float]:
        return [u.weight if active_at(u.start, u.end, index, total) else 0.0
                for u in self.units]

    def _set_scales(self, scales: list[float]) -> None:
        for proc in self.adapters.processors.values():
            proc.scale = list(scales)

    @contextlib.contextmanager
    def active(self, pipe: Any) -> Iterator[None]:
        """During one pipeline call: the adapter attention installed and, before each UNet
        evaluation ``i`` of the pass's ``n``, each adapter's scale set from its unit."""
        self.adapters.install()
        calls = [0]

        def hook(_module: Any, _args: Any) -> None:
            total = int(getattr(pipe, "_num_timesteps", 0) or len(pipe.scheduler.timesteps))
            self._set_scales(self.scales(calls[0], total))
            calls[0] += 1

        handle = pipe.unet.register_forward_pre_hook(hook)
        try:
            yield
        finally:
            handle.remove()
            self._set_scales([u.weight for u in self.units])


def reloads(current: IPAdapterSet | None, unet: Any, units: Sequence[ReferenceUnit]) -> bool:
    """Whether :func:`prepare` will load adapters into ``unet`` for ``units`` (none loaded,
    other files, or another UNet)."""
    if not units:
        return False
    return (current is None or current.unet is not unet
            or current.key != tuple(_stamp(u.path) for u in units))


def prepare(current: IPAdapterSet | None, unet: Any, units: Sequence[ReferenceUnit], *,
            model_name: str, control_dirs: Sequence[str], device: torch.device,
            encoder_device: torch.device, dtype: torch.dtype, guidance: bool
            ) -> tuple[IPAdapterSet | None, IPConditioning | None]:
    """The adapter set for ``units`` (``current`` when it holds the same files, else the old
    one unloaded and the new one loaded) and this request's conditioning; (None, None) and
    the UNet restored when there are no units. ``device`` is where the UNet runs (the
    embeddings go there), ``encoder_device`` where the encoders are kept."""
    if not units:
        if current is not None:
            current.unload()
        return None, None
    if current is None or reloads(current, unet, units):
        if current is not None:
            current.unload()
            current = None
        current = _load_set(unet, units, model_name=model_name, control_dirs=control_dirs,
                            device=encoder_device, dtype=dtype)
    embeds = []
    for index, unit in enumerate(units):
        cond, uncond = current.encode(index, unit.image, device)
        cond, uncond = cond.unsqueeze(1), uncond.unsqueeze(1)  # one image per adapter
        both = torch.cat([uncond, cond]) if guidance else cond
        embeds.append(both.to(device=device, dtype=dtype))
    return current, IPConditioning(current, list(units), embeds)


def _load_set(unet: Any, units: Sequence[ReferenceUnit], *, model_name: str,
              control_dirs: Sequence[str], device: torch.device, dtype: torch.dtype
              ) -> IPAdapterSet:
    read: dict[str, AdapterWeights] = {}
    adapters = []
    for unit in units:
        key = str(unit.path.resolve())
        if key not in read:
            read[key] = read_adapter(unit.path)
            check_fits(read[key], unet, model_name)
        adapters.append(read[key])
    encoders: dict[str, Any] = {}
    adapter_encoder = []
    for adapter in adapters:
        dirs = clip_vision.clip_vision_dirs(control_dirs, adapter.path)
        found = clip_vision.find_encoder(dirs, width=adapter.input_width,
                                         projected=adapter.projected)
        if found is None:
            wanted = clip_vision.encoder_label(adapter.input_width, adapter.projected)
            raise ModelError(
                f"IP-Adapter {adapter.name} needs its CLIP image encoder, {wanted}: put it "
                f"(a folder with config.json and model.safetensors, or one .safetensors "
                f"file) in {dirs[1]}", details="\n".join(str(d) for d in dirs))
        name = str(found.path)
        if name not in encoders:
            encoders[name] = clip_vision.load_encoder(found, device=device, dtype=dtype)
        adapter_encoder.append(name)
    return IPAdapterSet.load(unet, adapters, encoders, adapter_encoder)


# ------------------------------------------------------------------- the request's units
def resolve_model(unit: ControlUnit, listed: Sequence[ControlModel]) -> ControlModel | None:
    """The control model a unit names: a file or folder path as given, else a name among
    ``listed`` (``core.control.find_control_model``); None when there is none."""
    direct = Path(unit.model).expanduser()
    if direct.exists():
        kind, arch = control.describe_file(direct)
        return control.ControlModel(direct.stem, direct, kind, arch)
    return control.find_control_model(listed, unit.model)


def _holds_adapter(path: Path) -> bool:
    """A file the listing could not tell (a pickle named otherwise) that holds image_proj /
    ip_adapter weights (read safely)."""
    try:
        obj = checkpoint.load_object(path)
    except ModelError:
        return False
    return isinstance(obj, Mapping) and {"image_proj", "ip_adapter"} <= set(obj)


def reference_units(request: GenerationRequest, settings: EngineSettings,
                    init_image: Image.Image | None
                    ) -> tuple[list[ReferenceUnit], dict[str, str]]:
    """The request's enabled IP-Adapter units (those whose model is an IP-Adapter, or whose
    module is an IP-Adapter module), with their reference images (the unit's image file,
    read with the safe loader, or the init image), and the ``name [hash]`` titles of their
    models for the infotext. Other units are the ControlNet pass's."""
    from sdstudio.engine.images import load_image

    units: list[ReferenceUnit] = []
    titles: dict[str, str] = {}
    listed: list[ControlModel] | None = None
    for index, unit in control.active_units(request.control_units):
        direct = Path(unit.model).expanduser().exists()
        if listed is None and not direct:
            listed = control.list_control_models(settings)
        model = resolve_model(unit, listed or [])
        if model is None:
            if is_ip_module(unit.module):
                raise RequestError("control_units", f"control unit {index + 1}: no IP-Adapter "
                                   f"{unit.model!r} in the ControlNet folders")
            continue  # the ControlNet pass names the missing model
        weights = control.model_file(model.path)
        if model.kind != "ip-adapter":
            if not is_ip_module(unit.module):
                continue  # a ControlNet / T2I-Adapter unit
            if not (weights.is_file() and _holds_adapter(weights)):
                raise RequestError("control_units", f"control unit {index + 1}: "
                                   f"{unit.module} needs an IP-Adapter model; {model.name} "
                                   f"is a {model.kind}")
        if unit.image:
            image = load_image(unit.image, f"control unit {index + 1}'s reference image")
        elif init_image is not None:
            image = init_image
        else:
            raise RequestError("control_units", f"control unit {index + 1} ({unit.model}) "
                               "needs a reference image (image=FILE)")
        units.append(ReferenceUnit(weights, image, weight=float(unit.weight),
                                   start=float(unit.guidance_start),
                                   end=float(unit.guidance_end)))
        titles[unit.model] = model.title
    return units, titles
