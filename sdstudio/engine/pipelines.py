"""One set of loaded components serving txt2img, img2img and inpaint.

The model is loaded once as a txt2img pipeline; the img2img and inpaint pipelines are made
from it with ``from_pipe``, which shares every module (no weights are copied or reloaded).

Inpainting (9-channel UNet) models run every mode through the inpaint pipeline, as
AUTOMATIC1111 does: txt2img is inpainting a blank image under a full mask (strength 1), img2img
is inpainting the init image under a full mask at the request's strength.
"""

from __future__ import annotations

import logging
from typing import Any, Protocol

import torch
from diffusers import (
    DiffusionPipeline,
    StableDiffusionImg2ImgPipeline,
    StableDiffusionInpaintPipeline,
    StableDiffusionPipeline,
    StableDiffusionXLImg2ImgPipeline,
    StableDiffusionXLInpaintPipeline,
    StableDiffusionXLPipeline,
)

from sdstudio.core.request import Mode

_CLASSES: dict[bool, dict[Mode, type[DiffusionPipeline]]] = {
    False: {
        Mode.TXT2IMG: StableDiffusionPipeline,
        Mode.IMG2IMG: StableDiffusionImg2ImgPipeline,
        Mode.INPAINT: StableDiffusionInpaintPipeline,
    },
    True: {
        Mode.TXT2IMG: StableDiffusionXLPipeline,
        Mode.IMG2IMG: StableDiffusionXLImg2ImgPipeline,
        Mode.INPAINT: StableDiffusionXLInpaintPipeline,
    },
}


class _EmptyFp32ListFilter(logging.Filter):
    """Drop diffusers' "modules that should be kept in float32: []" warning, which
    ``ModelMixin.to(dtype)`` logs on every cast even when that list is empty."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "should be kept in float32: []" not in record.getMessage()


_FILTER = _EmptyFp32ListFilter()


def install_log_filter() -> None:
    logger = logging.getLogger("diffusers.models.modeling_utils")
    if _FILTER not in logger.filters:
        logger.addFilter(_FILTER)


install_log_filter()


class PipelineSet:
    """The loaded components and the per-mode pipelines that share them."""

    def __init__(self, base: Any, arch: str) -> None:
        self.base = base
        self.arch = arch
        self.sdxl = arch.startswith("sdxl")
        self.inpaint_unet = int(base.unet.config.in_channels) == 9
        self._pipes: dict[type, Any] = {type(base): base}

    def class_for(self, mode: Mode) -> type[DiffusionPipeline]:
        effective = Mode.INPAINT if self.inpaint_unet else mode
        return _CLASSES[self.sdxl][effective]

    def get(self, mode: Mode) -> Any:
        """The pipeline for ``mode``; made with ``from_pipe`` once, then reused."""
        cls = self.class_for(mode)
        pipe = self._pipes.get(cls)
        if pipe is None:
            # dtype: from_pipe casts every shared module to it (float32 when not given),
            # which would upcast an fp16 model in place.
            pipe = cls.from_pipe(self.base, dtype=self.base.unet.dtype)
            pipe.set_progress_bar_config(disable=True)
            self._pipes[cls] = pipe
        return pipe

    @property
    def pipes(self) -> list[Any]:
        return list(self._pipes.values())

    def set_component(self, name: str, module: Any) -> None:
        """Swap a component (a VAE override, say) in every pipeline of the set."""
        for pipe in self._pipes.values():
            pipe.register_modules(**{name: module})

    def component(self, name: str) -> Any:
        return getattr(self.base, name, None)


class _HasDtype(Protocol):
    @property
    def dtype(self) -> torch.dtype: ...


def module_dtype(module: _HasDtype) -> torch.dtype:
    """``ModelMixin.dtype`` without its walk over every submodule.

    diffusers' ``dtype`` property visits all submodules looking for layerwise-casting hooks
    (which the engine never installs) before it returns the first floating parameter's dtype:
    0.3-0.6 ms per read on the tiny model, more on SD 1.5, and the engine read it 8 times per
    image. Same answer for every model the engine loads; models that keep some modules in
    fp32 (``_keep_in_fp32_modules``) still go through diffusers."""
    if getattr(module, "_keep_in_fp32_modules", None) or not isinstance(module, torch.nn.Module):
        return module.dtype
    for param in module.parameters():
        if param.is_floating_point():
            return param.dtype
    return module.dtype
