"""Request and engine options: argparse options <-> ``GenerationRequest`` / ``EngineSettings``.

Unset options are ``None`` and keep the request's (or the settings') values.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sdstudio.core.errors import RequestError
from sdstudio.core.request import (
    FIELD_NAMES,
    RESIZE_MODES,
    SAMPLER_NAMES,
    GenerationRequest,
    LoraSpec,
)

if TYPE_CHECKING:
    from sdstudio.core.settings import EngineSettings, Settings

MODEL_SUFFIXES = (".safetensors", ".ckpt", ".pt", ".pth", ".bin", ".sft")


def add_request_arguments(parser: argparse.ArgumentParser, *, prompt_required: bool) -> None:
    """Every GenerationRequest field as an option; unset options keep the request defaults."""
    g = parser.add_argument_group("image")
    g.add_argument("--prompt", "-p", required=prompt_required, default=None, metavar="TEXT",
                   help="what to draw (<lora:name:weight> tags allowed)")
    g.add_argument("--negative-prompt", "-n", default=None, metavar="TEXT", help="what to avoid")
    g.add_argument("--width", "-W", type=int, default=None, metavar="PX",
                   help="multiple of 8 (default 512)")
    g.add_argument("--height", "-H", type=int, default=None, metavar="PX",
                   help="multiple of 8 (default 512)")
    g.add_argument("--steps", "-s", type=int, default=None, metavar="N",
                   help="denoising steps (default 20)")
    g.add_argument("--cfg-scale", "-c", type=float, default=None, metavar="X",
                   help="guidance (default 7)")
    g.add_argument("--seed", type=int, default=None, metavar="N", help="-1 = random (default)")
    g.add_argument("--sampler", default=None, metavar="NAME",
                   help=f"one of: {', '.join(SAMPLER_NAMES)} (default Euler a)")
    g.add_argument("--batch-size", "-b", type=int, default=None, metavar="N", help="images per run")
    g.add_argument("--batch-count", type=int, default=None, metavar="N", help="number of runs")
    g.add_argument("--rng", choices=("cpu", "device"), default=None,
                   help="where initial noise is drawn (cpu: same image on every device)")
    g = parser.add_argument_group("img2img and inpaint")
    g.add_argument("--init-image", "-i", default=None, metavar="FILE", help="source image")
    g.add_argument("--strength", type=float, default=None, metavar="X",
                   help="denoising strength 0..1")
    g.add_argument("--mask", default=None, metavar="FILE", help="inpaint mask (white = repaint)")
    g.add_argument("--mask-blur", type=int, default=None, metavar="PX", help="pixels (default 4)")
    g.add_argument("--inpaint-only-masked", action="store_true", default=None,
                   help="work on the masked area at full resolution")
    g.add_argument("--inpaint-padding", type=int, default=None, metavar="PX",
                   help="pixels around the mask")
    g.add_argument("--resize-mode", default=None, choices=RESIZE_MODES,
                   help="how the source image fits the size (default resize)")
    g = parser.add_argument_group("model")
    g.add_argument("--model", "-m", default=None, metavar="PATH|NAME",
                   help="model folder or file, or a name in the model folders "
                        "(default: the configured model, else the untrained demo model)")
    g.add_argument("--vae", default=None, metavar="PATH|NAME", help="separate VAE")
    g.add_argument("--lora", action="append", default=None, metavar="NAME:WEIGHT",
                   help="apply a LoRA (repeatable)")
    g.add_argument("--clip-skip", type=int, default=None, metavar="N",
                   help="1 = last CLIP layer (default)")


def add_engine_arguments(parser: argparse.ArgumentParser) -> None:
    """Model folders, device, precision, memory mode."""
    g = parser.add_argument_group("engine")
    g.add_argument("--models-dir", action="append", default=None, metavar="DIR",
                   help="also look for models here (repeatable)")
    g.add_argument("--device", default=None, metavar="NAME", help="auto, cuda, cuda:1, mps or cpu")
    g.add_argument("--precision", default=None, choices=("auto", "fp16", "bf16", "fp32"))
    g.add_argument("--memory-mode", default=None, choices=("auto", "low", "off"),
                   help="memory savers: auto (from free memory), low (all), off")


def normalize_sampler(name: str) -> str:
    """Accept "euler_a", "dpmpp_2m_karras", "DPM++ 2M Karras"...; unknown names pass through
    (validation then lists the choices)."""
    def key(text: str) -> str:
        return "".join(c for c in text.lower().replace("++", "pp") if c.isalnum())

    wanted = key(name)
    for known in SAMPLER_NAMES:
        if key(known) == wanted:
            return known
    return name


def parse_lora(text: str) -> LoraSpec:
    name, sep, weight = text.rpartition(":")
    if not sep or not name:
        return LoraSpec(text.strip(), 1.0)
    try:
        return LoraSpec(name.strip(), float(weight))
    except ValueError:
        raise RequestError("loras", f"--lora {text!r}: weight {weight!r} is not a number") from None


def _abs_path(value: str) -> str:
    return str(Path(value).expanduser().absolute())


def looks_like_path(model: str) -> bool:
    """A model given as a file system path rather than a name or a hub id."""
    p = Path(model).expanduser()
    return (
        p.is_absolute()
        or model.startswith((".", "~"))
        or p.suffix.lower() in MODEL_SUFFIXES
        or p.exists()
    )


def request_from_args(
    args: argparse.Namespace, base: GenerationRequest | None = None
) -> GenerationRequest:
    """The request the options describe: set options override ``base`` (or the defaults).
    Not validated: call ``.validated()``."""
    changes: dict[str, Any] = {}
    for name in FIELD_NAMES:
        value = getattr(args, name, None)
        if value is None:
            continue
        if name == "loras":
            continue
        changes[name] = value
    if getattr(args, "lora", None):
        changes["loras"] = tuple(parse_lora(t) for t in args.lora)
    if isinstance(changes.get("sampler"), str):
        changes["sampler"] = normalize_sampler(changes["sampler"])
    for name in ("init_image", "mask"):
        if changes.get(name):
            changes[name] = _abs_path(changes[name])
    for name in ("model", "vae"):
        value = changes.get(name)
        if value and looks_like_path(value):
            changes[name] = _abs_path(value)
    if base is not None:
        return base.replace(**changes)
    if "prompt" not in changes:
        raise RequestError("prompt", "a prompt is needed (--prompt)")
    return GenerationRequest(**changes)


def engine_settings_from_args(args: argparse.Namespace, settings: Settings) -> EngineSettings:
    eng = settings.engine
    changes: dict[str, Any] = {}
    if getattr(args, "models_dir", None):
        changes["model_dirs"] = (*eng.model_dirs, *(_abs_path(d) for d in args.models_dir))
    for name in ("device", "precision", "memory_mode"):
        value = getattr(args, name, None)
        if value:
            changes[name] = value
    return eng.replace(**changes)
