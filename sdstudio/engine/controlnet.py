"""ControlNet units in a pass: the models loaded safely, the control images prepared, the
residuals added to every UNet evaluation as A1111's ControlNet extension adds them.

* :func:`load_controlnet` reads a ControlNet from a single file in the original layout
  (lllyasviel's ``control_v11p_sd15_*.pth`` / ``.safetensors``: ``control_model.input_blocks...``
  or the same keys without the prefix, converted with diffusers' own
  ``convert_controlnet_checkpoint``), a diffusers-layout single file
  (``diffusion_pytorch_model.safetensors``) or a diffusers folder (``config.json`` beside the
  weights). Weights go through :mod:`sdstudio.engine.checkpoint` (safetensors, or
  ``torch.load(weights_only=True)``): a hostile pickle is refused as checkpoints are. The
  model's shape comes from the loaded UNet's config and the file's own tensors (no config is
  downloaded); its architecture (cross-attention width 768 / 1024 / 2048, SDXL's
  ``add_embedding``) is checked against the loaded model first: a mismatch is one line.
* :func:`load_adapter` reads a T2I-Adapter in diffusers' layout (a folder with its
  ``config.json``, or a single file of a full adapter, whose shape is read from its tensors);
  TencentARC's original ``t2iadapter_*.pth`` layout is refused with one line. Its features
  (computed once per pass size: they do not depend on the step) go to the UNet as
  ``down_intrablock_additional_residuals``, with the extension's soft weights (0.25, 0.62,
  0.825, 1.0) for the two non-balanced modes.
* :class:`ControlNetSet` keeps the loaded ControlNets between requests (the same files: no
  reload) and drops the ones no unit uses any more; it goes with the loaded checkpoint.
* :class:`ControlConditioning` is one request's part, a pass extra (``Engine._call``): around
  each pipeline call a forward pre-hook on the UNet runs every active unit's ControlNet on the
  same input and adds its residuals (``down_block_additional_residuals`` /
  ``mid_block_additional_residual``), so every sampler, txt2img, img2img, inpaint and the
  hires fix's second pass get them. A unit is active while ``start <= i / n <= end`` for the
  pass's UNet evaluation ``i`` of ``n`` (the extension's guidance window); weight 0 runs
  nothing. Control modes as the extension (``hook.py``): "Balanced" scales every residual by
  the weight; "My prompt is more important" is its soft injection, residual ``k`` of 13
  scaled by ``weight * 0.825 ** (12 - k)`` (SDXL's 10: the first 10 of those); "ControlNet
  is more important" is soft injection plus cfg injection: no control on the unconditional
  half of the guidance batch.
* Control images: the unit's image (or the init image), for "Only masked" inpainting cropped
  like the source, through the preprocessor (``core/preprocessors.py``; Pixel Perfect picks
  its resolution from the image and the target), then fitted to the pass's size with the
  unit's resize mode; the hires pass refits the same detected map to the target size.
"""

from __future__ import annotations

import contextlib
import inspect
import os
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from sdstudio.core import control
from sdstudio.core.control import ControlModel, ControlUnit
from sdstudio.core.errors import ModelError, RequestError
from sdstudio.core.request import GenerationRequest
from sdstudio.core.settings import EngineSettings
from sdstudio.engine import checkpoint, ip_adapter
from sdstudio.engine import images as img
from sdstudio.engine.ip_adapter import active_at

_FAMILIES = {768: "SD 1.x", 1024: "SD 2.x", 2048: "SDXL"}
_RESIZE = {"Just Resize": "resize", "Crop and Resize": "crop", "Resize and Fill": "fill"}
SOFT_BASE = 0.825  # the extension's soft injection: 0.825 ** (12 - k)
ADAPTER_SOFT = (0.25, 0.62, 0.825, 1.0)  # its T2I-Adapter soft injection, per level


def family(width: int | None) -> str:
    if width is None:
        return "unknown architecture"
    return _FAMILIES.get(width, f"cross-attention width {width}")


# ------------------------------------------------------------------------------ loading
def _cross_width(state: Mapping[str, Any]) -> int | None:
    for name, tensor in state.items():
        if name.endswith("attn2.to_k.weight") and tensor.dim() == 2:
            return int(tensor.shape[1])
    return None


def is_original_layout(state: Mapping[str, Any]) -> bool:
    return any(k.endswith("input_hint_block.0.weight") for k in state)


def to_diffusers_layout(state: Mapping[str, torch.Tensor], layers_per_block: int
                        ) -> dict[str, torch.Tensor]:
    """An original-layout ControlNet's tensors in diffusers' names (diffusers' conversion:
    ``control_model.`` prefix or none)."""
    from diffusers.loaders.single_file_utils import convert_controlnet_checkpoint

    converted = convert_controlnet_checkpoint(dict(state), {"layers_per_block": layers_per_block})
    return {k: v for k, v in converted.items() if v is not None}


def _transformer_layers(state: Mapping[str, Any], blocks: int, default: Any) -> Any:
    """Transformer layers per down block from the tensor names (SDXL ControlNets differ)."""
    counts = []
    for i in range(blocks):
        found = [int(k.split(".")[5]) for k in state
                 if k.startswith(f"down_blocks.{i}.attentions.0.transformer_blocks.")]
        counts.append(max(found) + 1 if found else None)
    if all(c is None for c in counts):
        return default
    base = default if isinstance(default, int) else 1
    filled = [c if c is not None else (default[i] if isinstance(default, (list, tuple))
                                       else base) for i, c in enumerate(counts)]
    return filled[0] if len(set(filled)) == 1 and isinstance(default, int) else tuple(filled)


def _embedding_channels(state: Mapping[str, torch.Tensor]) -> tuple[int, ...]:
    first = state["controlnet_cond_embedding.conv_in.weight"]
    channels = [int(first.shape[0])]
    k = 1
    while f"controlnet_cond_embedding.blocks.{k}.weight" in state:
        channels.append(int(state[f"controlnet_cond_embedding.blocks.{k}.weight"].shape[0]))
        k += 2
    return tuple(channels)


def _init_keys() -> set[str]:
    from diffusers import ControlNetModel

    return set(inspect.signature(ControlNetModel.__init__).parameters) - {"self"}


def controlnet_config(state: Mapping[str, torch.Tensor], unet_config: Mapping[str, Any]
                      ) -> dict[str, Any]:
    """The ControlNetModel config of diffusers-layout ``state`` on the loaded UNet's config
    (the shapes a ControlNet shares with its UNet), with what the file says itself: input
    and hint channels, the hint embedding's widths, transformer layers per block."""
    keys = _init_keys()
    config = {k: v for k, v in unet_config.items() if k in keys}
    config["in_channels"] = int(state["conv_in.weight"].shape[1])
    config["conditioning_channels"] = int(
        state["controlnet_cond_embedding.conv_in.weight"].shape[1])
    config["conditioning_embedding_out_channels"] = _embedding_channels(state)
    blocks = len(config.get("block_out_channels", ()))
    config["transformer_layers_per_block"] = _transformer_layers(
        state, blocks, config.get("transformer_layers_per_block", 1))
    return config


def _folder_config(folder: Path) -> dict[str, Any]:
    data = checkpoint.read_config_json(folder / "config.json")
    keys = _init_keys()
    out: dict[str, Any] = {}
    for key, value in data.items():
        if key not in keys:
            continue
        if isinstance(value, list):
            if not all(isinstance(v, (int, float, str, bool)) or v is None for v in value):
                raise ModelError(f"{folder.name}/config.json: {key} is not a plain list")
            value = tuple(value)
        elif not (isinstance(value, (int, float, str, bool)) or value is None):
            raise ModelError(f"{folder.name}/config.json: {key} is not a plain value")
        out[key] = value
    return out


def check_fits(state: Mapping[str, torch.Tensor], unet: Any, name: str, model_name: str,
               model_arch: str) -> None:
    """Refuse (one line) a ControlNet made for another architecture than the loaded UNet."""
    width = _cross_width(state)
    unet_width = int(unet.config.cross_attention_dim)
    xl = any(k.startswith(("add_embedding.", "label_emb.")) or ".label_emb." in k
             for k in state)
    unet_xl = unet.config.get("addition_embed_type") == "text_time"
    if width != unet_width or xl != unet_xl:
        what = "SDXL" if xl and width is None else family(width)
        raise RequestError("control_units", f"{name} is a ControlNet for {what}; the loaded "
                           f"model {model_name} is {model_arch} ({family(unet_width)}): "
                           "choose a ControlNet made for it")


def load_controlnet(path: Path, unet: Any, *, model_name: str, model_arch: str,
                    device: torch.device, dtype: torch.dtype) -> Any:
    """A ControlNetModel from a file or diffusers folder, checked against ``unet``."""
    from accelerate import init_empty_weights
    from diffusers import ControlNetModel

    path = Path(path)
    weights = control.model_file(path)
    if path.is_dir() and weights == path:
        raise ModelError(f"{path.name} holds no ControlNet weights "
                         "(diffusion_pytorch_model.safetensors)")
    state = checkpoint.load_state_dict(weights)
    if is_original_layout(state):
        state = {k: v for k, v in state.items() if not k.startswith(("model.", "first_stage",
                                                                      "cond_stage"))}
        lpb = int(unet.config.layers_per_block)
        state = to_diffusers_layout(state, lpb)
    if "controlnet_cond_embedding.conv_in.weight" not in state:
        raise ModelError(f"{path.name} is not a ControlNet (no hint embedding); T2I-Adapters "
                         "and other control models are not supported")
    check_fits(state, unet, path.stem, model_name, model_arch)
    config = _folder_config(path) if path.is_dir() else controlnet_config(state, unet.config)
    def build() -> Any:
        with init_empty_weights():
            return ControlNetModel(**config)

    return _built(build, state, f"{path.name} does not fit the loaded model's ControlNet "
                  "shape", assign=True, device=device, dtype=dtype)


def _built(build: Callable[[], Any], state: Mapping[str, torch.Tensor], misfit: str, *,
           assign: bool, device: torch.device, dtype: torch.dtype) -> Any:
    """``build()``'s module with ``state`` loaded, ready on ``device`` in ``dtype``; a
    ModelError starting with ``misfit`` when the weights do not fit it exactly."""
    try:
        model = build()
        missing, unexpected = model.load_state_dict(state, strict=False, assign=assign)
    except (RuntimeError, ValueError, TypeError) as exc:
        raise ModelError(f"{misfit} ({str(exc).splitlines()[0][:200]})") from None
    if missing or unexpected:
        raise ModelError(f"{misfit} ({len(missing)} weights missing, {len(unexpected)} "
                         "unexpected)")
    return model.to(device=device, dtype=dtype).eval().requires_grad_(False)


def _adapter_keys() -> set[str]:
    from diffusers import T2IAdapter

    return set(inspect.signature(T2IAdapter.__init__).parameters) - {"self"}


def adapter_config(state: Mapping[str, torch.Tensor]) -> dict[str, Any]:
    """A diffusers-layout full T2I-Adapter's config from its tensors (channels per level,
    residual blocks per level, the input channels and factor of the pixel unshuffle: 16 is
    SDXL's full adapter)."""
    levels = sorted({int(k.split(".")[2]) for k in state if k.startswith("adapter.body.")})
    if not levels or "adapter.conv_in.weight" not in state or any(
            f"adapter.body.{i}.resnets.0.block2.weight" not in state for i in levels):
        raise ModelError("not a T2I-Adapter in diffusers' layout (adapter.body.N.resnets...)")
    channels = [int(state[f"adapter.body.{i}.resnets.0.block2.weight"].shape[0])
                for i in levels]
    blocks = len({k.split(".")[4] for k in state if k.startswith("adapter.body.0.resnets.")})
    unshuffled = int(state["adapter.conv_in.weight"].shape[1])
    in_channels = 1 if unshuffled in (64, 256) else 3  # sketch adapters take one channel
    factor = round((unshuffled / in_channels) ** 0.5)
    return {"in_channels": in_channels, "channels": channels, "num_res_blocks": blocks,
            "downscale_factor": factor,  # SDXL's adapters unshuffle by 16
            "adapter_type": "full_adapter_xl" if factor == 16 else "full_adapter"}


def load_adapter(path: Path, unet: Any, *, model_name: str, model_arch: str,
                 device: torch.device, dtype: torch.dtype) -> Any:
    """A T2IAdapter from a diffusers folder or a diffusers-layout single file (read
    safely), checked against ``unet``: its feature widths must be the UNet's."""
    from diffusers import T2IAdapter

    path = Path(path)
    weights = control.model_file(path)
    state = checkpoint.load_state_dict(weights)
    if not any(k.startswith("adapter.") for k in state):
        raise ModelError(f"{path.name}: T2I-Adapters in TencentARC's original layout are "
                         "not supported; use the diffusers version of the adapter")
    if path.is_dir():
        data = checkpoint.read_config_json(path / "config.json")
        config = {k: (list(v) if isinstance(v, list) else v) for k, v in data.items()
                  if k in _adapter_keys() and isinstance(v, (int, str, list))}
    else:
        try:
            config = adapter_config(state)
        except ModelError as exc:
            raise ModelError(f"{path.name}: {exc}") from None
    channels = config.get("channels", [])
    widths = [int(c) for c in channels] if isinstance(channels, list) else []
    xl = config.get("adapter_type") == "full_adapter_xl"
    unet_xl = unet.config.get("addition_embed_type") == "text_time"
    if xl != unet_xl or (not xl and widths != [int(c) for c in unet.config.block_out_channels]):
        what = "SDXL" if xl else f"a UNet with channels {widths}"
        raise RequestError("control_units", f"{path.stem} is a T2I-Adapter for {what}; the "
                           f"loaded model {model_name} is {model_arch}: choose an adapter "
                           "made for it")
    return _built(lambda: T2IAdapter(**config), state,
                  f"{path.name} does not fit its T2I-Adapter shape", assign=False,
                  device=device, dtype=dtype)


def _stamp(path: Path) -> tuple[str, int, int]:
    weights = control.model_file(path)
    st = os.stat(weights)
    return str(path.resolve()), st.st_size, st.st_mtime_ns


@dataclass
class ControlNetSet:
    """The ControlNets kept loaded for the loaded checkpoint, by file."""

    unet: Any
    models: dict[tuple[str, int, int], Any] = field(default_factory=dict)

    @property
    def nbytes(self) -> int:
        return sum(p.numel() * p.element_size() for m in self.models.values()
                   for p in m.parameters())

    def get(self, paths: Sequence[Path], *, model_name: str, model_arch: str,
            device: torch.device, dtype: torch.dtype,
            kinds: Sequence[str] = ()) -> list[Any]:
        """The models of ``paths`` (loaded once; ``kinds``: "controlnet" or "t2i-adapter"
        per path); models no path names are freed."""
        stamps = [_stamp(p) for p in paths]
        for stamp in list(self.models):
            if stamp not in stamps:
                del self.models[stamp]
        out = []
        kinds = list(kinds) or ["controlnet"] * len(paths)
        for path, stamp, kind in zip(paths, stamps, kinds, strict=True):
            model = self.models.get(stamp)
            if model is None:
                load = load_adapter if kind == "t2i-adapter" else load_controlnet
                model = load(path, self.unet, model_name=model_name,
                             model_arch=model_arch, device=device, dtype=dtype)
                self.models[stamp] = model
            out.append(model)
        return out


# ------------------------------------------------------------------------- control images
def fit(image: Image.Image, width: int, height: int, resize_mode: str) -> Image.Image:
    """``image`` at ``width`` x ``height`` by the extension's resize mode."""
    return img.fit_image(image, width, height, _RESIZE.get(resize_mode, "crop"))


def unit_source(unit: ControlUnit, index: int, request: GenerationRequest,
                job: img.InpaintJob | None) -> Image.Image:
    """The unit's image (else the init image), read with the safe loader; for "Only masked"
    inpainting, cropped to the region the source is (fitted to the source's size first)."""
    if unit.image:
        source = img.load_image(unit.image, f"control unit {index + 1}'s image", "RGB")
    elif request.init_image:
        source = img.load_image(request.init_image, "init image", "RGB")
    else:
        raise RequestError("control_units", f"control unit {index + 1} needs a control image")
    if job is not None and job.box is not None:
        if source.size != job.source.size:
            source = fit(source, job.source.width, job.source.height, unit.resize_mode)
        source = source.crop(job.box)
    return source


def detect(unit: ControlUnit, source: Image.Image, size: tuple[int, int],
           mask: Image.Image | None) -> Image.Image:
    """The preprocessor's control image of ``source`` (the inpaint modules: fitted to
    ``size`` first, with the pass's mask); "none" gives the image as it is."""
    from sdstudio.core import preprocessors

    if unit.module == "none":
        return source
    entry = preprocessors.find_preprocessor(unit.module)
    if entry is not None and entry.needs_mask:
        source = fit(source, size[0], size[1], unit.resize_mode)
    if unit.pixel_perfect:
        resolution = preprocessors.pixel_perfect_resolution(source.size, size,
                                                            unit.resize_mode)
    else:
        resolution = unit.processor_res if unit.processor_res > 0 else 512
    resolution = max(preprocessors.RESOLUTION_MIN,
                     min(preprocessors.RESOLUTION_MAX, resolution))
    return preprocessors.preprocess(unit.module, source, resolution=resolution,
                                    threshold_a=unit.threshold_a,
                                    threshold_b=unit.threshold_b, mask=mask)


def hint_tensor(image: Image.Image) -> torch.Tensor:
    """(1, 3, H, W) float in [0, 1] (-1 where an inpaint module masked), as a ControlNet
    takes its hint."""
    from sdstudio.core.preprocessors import control_hint

    array = control_hint(image)
    return torch.from_numpy(np.ascontiguousarray(array.transpose(2, 0, 1)))[None]


# ------------------------------------------------------------------------------ the pass
def soft_scales(count: int, weight: float) -> list[float]:
    """The extension's soft injection weights of ``count`` residuals (13 for SD 1.x/2.x, the
    first 10 for SDXL)."""
    return [weight * SOFT_BASE ** float(12 - k) for k in range(13)][:count] + \
        [weight] * max(0, count - 13)


@dataclass
class ActiveUnit:
    """One ControlNet unit of a request, ready to run."""

    index: int
    unit: ControlUnit
    model: Any
    detected: Image.Image  # the preprocessor's output, refitted per pass size
    hints: dict[tuple[int, int], torch.Tensor] = field(default_factory=dict)
    kind: str = "controlnet"  # or "t2i-adapter"
    features: dict[tuple[int, int], list[torch.Tensor]] = field(default_factory=dict)

    @property
    def adapter(self) -> bool:
        return self.kind == "t2i-adapter"

    @property
    def soft(self) -> bool:
        return self.unit.control_mode != control.CONTROL_MODES[0]

    @property
    def cfg_injection(self) -> bool:
        return self.unit.control_mode == control.CONTROL_MODES[2]

    def hint(self, width: int, height: int, rows: int, device: torch.device,
             dtype: torch.dtype) -> torch.Tensor:
        hint = self.hints.get((width, height))
        if hint is None:
            hint = hint_tensor(fit(self.detected, width, height, self.unit.resize_mode)
                               if self.detected.size != (width, height) else self.detected)
            self.hints[(width, height)] = hint
        return hint.to(device=device, dtype=dtype).expand(rows, -1, -1, -1)

    def scales(self, count: int) -> list[float]:
        weight = float(self.unit.weight)
        if self.adapter and self.soft:  # the extension's T2I-Adapter soft weights
            return [weight * x for x in ADAPTER_SOFT][:count] + [weight] * max(0, count - 4)
        return soft_scales(count, weight) if self.soft else [weight] * count

    def adapter_features(self, width: int, height: int, device: torch.device,
                         dtype: torch.dtype) -> list[torch.Tensor]:
        """The adapter's features of the hint at this pass size (computed once: they do
        not depend on the step)."""
        found = self.features.get((width, height))
        if found is None:
            hint = self.hint(width, height, 1, device, dtype)
            if int(self.model.config.in_channels) == 1:  # sketch adapters: one channel
                hint = hint.mean(dim=1, keepdim=True)
            found = [f.detach() for f in self.model(hint)]
            self.features[(width, height)] = found
        return found


@dataclass
class ControlConditioning:
    """The request's ControlNet units, attached to each pass as an extra (``Engine._call``)."""

    units: list[ActiveUnit]
    guidance: bool  # classifier-free guidance: the UNet batch is [uncond, cond]
    offloaded: bool = False  # keep the models on the CPU between calls
    calls: list[int] = field(default_factory=list)  # evaluations per pipeline call (tests)

    def pipe_kwargs(self) -> dict[str, Any]:
        return {}

    def _mark(self, rows: int, like: torch.Tensor) -> torch.Tensor | None:
        """1 on the conditional rows, 0 on the unconditional half (cfg injection)."""
        if not self.guidance or rows % 2:
            return None
        mark = torch.ones(rows, 1, 1, 1, device=like.device, dtype=like.dtype)
        mark[: rows // 2] = 0
        return mark

    def adapter_residuals(self, sample: torch.Tensor, index: int, total: int
                          ) -> list[torch.Tensor] | None:
        """The T2I-Adapter units' features for this evaluation (summed), or None."""
        rows, height, width = sample.shape[0], sample.shape[2] * 8, sample.shape[3] * 8
        out: list[torch.Tensor] | None = None
        for active in self.units:
            unit = active.unit
            if not active.adapter or unit.weight == 0 or not active_at(
                    unit.guidance_start, unit.guidance_end, index, total):
                continue
            features = active.adapter_features(width, height, sample.device, sample.dtype)
            scaled = [f.expand(rows, -1, -1, -1) * s
                      for f, s in zip(features, active.scales(len(features)), strict=True)]
            mark = self._mark(rows, sample) if active.cfg_injection else None
            if mark is not None:
                scaled = [f * mark for f in scaled]
            out = scaled if out is None else [a + b for a, b in zip(out, scaled, strict=True)]
        return out

    def residuals(self, sample: torch.Tensor, timestep: Any, kwargs: Mapping[str, Any],
                  index: int, total: int) -> tuple[list[torch.Tensor], torch.Tensor] | None:
        """The ControlNet units' residuals for this evaluation (summed), or None."""
        rows, height, width = sample.shape[0], sample.shape[2] * 8, sample.shape[3] * 8
        states = kwargs["encoder_hidden_states"]
        down: list[torch.Tensor] | None = None
        mid: torch.Tensor | None = None
        for active in self.units:
            unit = active.unit
            if active.adapter or unit.weight == 0 or not active_at(
                    unit.guidance_start, unit.guidance_end, index, total):
                continue
            model = active.model
            x = sample
            if x.shape[1] != model.config.in_channels:  # a 9-channel inpainting UNet
                x = x[:, :model.config.in_channels]
            hint = active.hint(width, height, rows, sample.device, sample.dtype)
            d, m = model(x, timestep, encoder_hidden_states=states, controlnet_cond=hint,
                         conditioning_scale=1.0, timestep_cond=kwargs.get("timestep_cond"),
                         added_cond_kwargs=kwargs.get("added_cond_kwargs"),
                         return_dict=False)
            outs = [*d, m]
            scaled = [r * s for r, s in zip(outs, active.scales(len(outs)), strict=True)]
            mark = self._mark(rows, sample) if active.cfg_injection else None
            if mark is not None:  # the unconditional half gets no control
                scaled = [r * mark for r in scaled]
            if down is None or mid is None:
                down, mid = scaled[:-1], scaled[-1]
            else:
                down = [a + b for a, b in zip(down, scaled[:-1], strict=True)]
                mid = mid + scaled[-1]
        if down is None or mid is None:
            return None
        return down, mid

    @contextlib.contextmanager
    def active(self, pipe: Any) -> Iterator[None]:
        """During one pipeline call: the residuals added to each UNet evaluation."""
        count = [0]
        device = pipe._execution_device if self.offloaded else None
        if device is not None:
            for active in self.units:
                active.model.to(device)

        def hook(_module: Any, args: tuple[Any, ...], kwargs: dict[str, Any]
                 ) -> tuple[tuple[Any, ...], dict[str, Any]]:
            total = int(getattr(pipe, "_num_timesteps", 0) or len(pipe.scheduler.timesteps))
            index = count[0]
            count[0] += 1
            sample = args[0] if args else kwargs["sample"]
            timestep = args[1] if len(args) > 1 else kwargs["timestep"]
            if "encoder_hidden_states" not in kwargs and len(args) > 2:
                kwargs = {**kwargs, "encoder_hidden_states": args[2]}
                args = args[:2]
            out = self.residuals(sample, timestep, kwargs, index, total)
            if out is not None:
                kwargs = {**kwargs, "down_block_additional_residuals": tuple(out[0]),
                          "mid_block_additional_residual": out[1]}
            features = self.adapter_residuals(sample, index, total)
            if features is not None:  # a fresh list: the UNet pops from it
                kwargs = {**kwargs, "down_intrablock_additional_residuals": list(features)}
            return args, kwargs

        handle = pipe.unet.register_forward_pre_hook(hook, with_kwargs=True)
        try:
            yield
        finally:
            handle.remove()
            self.calls.append(count[0])
            if device is not None:
                for active in self.units:
                    active.model.to("cpu")


def control_units(request: GenerationRequest, settings: EngineSettings
                  ) -> list[tuple[int, ControlUnit, ControlModel]]:
    """The request's enabled ControlNet units (not the IP-Adapter ones: engine/ip_adapter.py)
    with their models; RequestError naming the unit for a model that is not there."""
    out = []
    listed: list[ControlModel] | None = None
    for index, unit in control.active_units(request.control_units):
        if ip_adapter.is_ip_module(unit.module):
            continue
        direct = Path(unit.model).expanduser().exists()
        if listed is None and not direct:
            listed = control.list_control_models(settings)
        model = ip_adapter.resolve_model(unit, listed or [])
        if model is None:
            dirs = ", ".join(control.control_model_dirs(settings))
            raise RequestError("control_units", f"control unit {index + 1}: no control model "
                               f"{unit.model!r} in the ControlNet folders ({dirs})")
        if model.kind == "ip-adapter":
            continue
        out.append((index, unit, model))
    return out


def prepare(current: ControlNetSet | None, unet: Any, request: GenerationRequest,
            settings: EngineSettings, *, job: img.InpaintJob | None, size: tuple[int, int],
            model_name: str, model_arch: str, device: torch.device, dtype: torch.dtype,
            offloaded: bool) -> tuple[ControlNetSet | None, ControlConditioning | None,
                                      dict[str, str]]:
    """The loaded set for the request's ControlNet units (kept models reused, unused ones
    freed; None when there are none), its conditioning and the models' infotext titles."""
    units = control_units(request, settings)
    if not units:
        return None, None, {}
    if current is None or current.unet is not unet:
        current = ControlNetSet(unet)
    home = torch.device("cpu") if offloaded else device
    kinds = ["t2i-adapter" if m.kind == "t2i-adapter" else "controlnet" for _, _, m in units]
    models = current.get([m.path for _, _, m in units], model_name=model_name,
                         model_arch=model_arch, device=home, dtype=dtype, kinds=kinds)
    mask = job.mask if job is not None else None
    actives = []
    titles: dict[str, str] = {}
    for (index, unit, listed), model, kind in zip(units, models, kinds, strict=True):
        source = unit_source(unit, index, request, job)
        actives.append(ActiveUnit(index, unit, model, detect(unit, source, size, mask),
                                  kind=kind))
        titles[unit.model] = listed.title
    conditioning = ControlConditioning(actives, guidance=request.cfg_scale > 1,
                                       offloaded=offloaded)
    return current, conditioning, titles
