"""Request and engine options: argparse options <-> ``GenerationRequest`` / ``EngineSettings``.

Unset options are ``None`` and keep the request's (or the settings') values.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sdstudio.core.control import ControlUnit, parse_unit_option
from sdstudio.core.errors import RequestError
from sdstudio.core.fields import ALL_MODES, TXT2IMG_ONLY, FieldSpec
from sdstudio.core.outpaint import outpaint_option
from sdstudio.core.request import FIELDS, GenerationRequest, LoraSpec
from sdstudio.core.settings import MAX_CACHED_CHECKPOINTS
from sdstudio.core.threads import MAX_CPU_THREADS

if TYPE_CHECKING:
    from sdstudio.core.settings import EngineSettings, Settings

MODEL_SUFFIXES = (".safetensors", ".ckpt", ".pt", ".pth", ".bin", ".sft")
_GROUPS = ("image", "hires fix (text to image)", "img2img and inpaint", "model",
           "control (ControlNet, T2I-Adapter, IP-Adapter)")


def _group(spec: FieldSpec) -> str:
    if spec.kind == "units":
        return _GROUPS[4]
    if spec.kind in ("model", "loras"):
        return "model"
    if spec.modes == TXT2IMG_ONLY:
        return "hires fix (text to image)"
    if spec.modes != ALL_MODES or spec.kind == "path":
        return "img2img and inpaint"
    return "image"


_LISTED_CHOICES = 8  # up to this many choices argparse lists in the usage; more: in the help


def _help(spec: FieldSpec) -> str:
    text = spec.help or spec.label
    if spec.kind == "choice" and len(spec.choices) > _LISTED_CHOICES:
        text += f"; one of: {', '.join(spec.choices)}"
    if spec.default not in (None, "", ()) and spec.kind != "bool":
        default = spec.default if spec.kind == "choice" else spec.display(spec.default)
        text += f" (default {default})"
    return text.replace("%", "%%")


def _argument(spec: FieldSpec) -> dict[str, Any]:
    """argparse keywords for a field's option; unset options are None."""
    kw: dict[str, Any] = {"dest": spec.name, "default": None, "help": _help(spec)}
    metavar = spec.metavar or {"int": "N", "float": "X", "text": "TEXT", "path": "FILE",
                               "model": "PATH|NAME"}.get(spec.kind)
    if metavar:
        kw["metavar"] = metavar
    if spec.kind == "int":
        kw["type"] = int
    elif spec.kind == "float":
        kw["type"] = float
    elif spec.kind == "bool":
        kw["action"] = argparse.BooleanOptionalAction
    elif spec.kind == "choice":
        kw["type"] = spec.coerce  # "Crop" -> "crop", "GPU" -> "device", "euler_a" -> "Euler a"
        if len(spec.choices) <= _LISTED_CHOICES:
            kw["choices"] = spec.choices
    elif spec.kind == "loras":
        kw["action"] = "append"
        kw["type"] = parse_lora
    elif spec.kind == "units":
        kw["action"] = "append"
        kw["type"] = parse_control
    return kw


def add_request_arguments(parser: argparse.ArgumentParser, *, prompt_required: bool,
                          line_defaults: bool = False) -> None:
    """Every GenerationRequest field with a CLI option (the field table's ``cli``); unset
    options keep the request defaults. ``line_defaults``: for ``batch``, where the options
    are the defaults of every prompt-list line and the prompt comes from the list."""
    if line_defaults:
        group = parser.add_argument_group("defaults for every line (a line's own value wins)")
        groups = dict.fromkeys(_GROUPS, group)
    else:
        groups = {name: parser.add_argument_group(name) for name in _GROUPS}
    for spec in FIELDS:
        if not spec.options or (line_defaults and spec.name == "prompt"):
            continue
        kw = _argument(spec)
        if spec.name == "prompt":
            kw["required"] = prompt_required
        groups[_group(spec)].add_argument(*spec.options, **kw)
    groups["img2img and inpaint"].add_argument(
        "--outpaint", default=None, metavar="SIDE=PX,...",
        help="extend the init image: left=128,top=0,right=64,bottom=0 (multiples of 8; "
        "the same as --outpaint-left ... --outpaint-bottom, which win where both are given)")


def add_engine_arguments(parser: argparse.ArgumentParser) -> None:
    """Model folders, device, precision, memory mode."""
    g = parser.add_argument_group("engine")
    g.add_argument("--models-dir", action="append", default=None, metavar="DIR",
                   help="also look for models here (repeatable)")
    g.add_argument("--device", default=None, metavar="NAME", help="auto, cuda, cuda:1, mps or cpu")
    g.add_argument("--precision", default=None, choices=("auto", "fp16", "bf16", "fp32"))
    g.add_argument("--memory-mode", default=None, choices=("auto", "low", "off"),
                   help="memory savers: auto (from free memory), low (all), off")
    g.add_argument("--compile", dest="compile_unet", action="store_true", default=None,
                   help="Speed: compile the UNet with torch.compile (CUDA; the first image "
                   "of each size takes longer, later ones run faster)")
    g.add_argument("--threads", dest="cpu_threads", type=int, default=None, metavar="N",
                   help="CPU threads for torch (default: the CPUs this process may use, "
                   "fewer while other programs keep some of them busy)")
    g.add_argument("--checkpoint-cache", dest="checkpoint_cache", type=int, default=None,
                   metavar="N", help="models kept in RAM besides the one in use, for prompt "
                   "lists that switch models: 0 = none, -1 = automatic (the default: one when "
                   "memory allows)")


def parse_lora(text: str) -> LoraSpec:
    name, sep, weight = text.rpartition(":")
    if not sep or not name:
        return LoraSpec(text.strip(), 1.0)
    try:
        return LoraSpec(name.strip(), float(weight))
    except ValueError:
        raise RequestError("loras", f"--lora {text!r}: weight {weight!r} is not a number") from None


def parse_control(text: str) -> ControlUnit:
    """``--control MODEL[,KEY=VALUE...]`` (argparse reports the reason on one line)."""
    try:
        return parse_unit_option(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _control_paths(unit: ControlUnit) -> ControlUnit:
    """A unit given on the command line: its image and a model given as a path absolute."""
    model = _abs_path(unit.model) if looks_like_path(unit.model) else unit.model
    return unit.replace(model=model, image=_abs_path(unit.image) if unit.image else None)


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
    if getattr(args, "outpaint", None) is not None:
        changes.update(outpaint_option(args.outpaint))
    for spec in FIELDS:
        value = getattr(args, spec.name, None)
        if value is None:
            continue
        if spec.kind == "loras":
            value = tuple(value)
        elif spec.kind == "units":
            value = tuple(_control_paths(u) for u in value)
        elif value and (spec.kind == "path"
                        or (spec.kind == "model" and looks_like_path(value))):
            value = _abs_path(value)
        changes[spec.name] = value
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
    if getattr(args, "compile_unet", None):
        changes["compile_unet"] = True
    if getattr(args, "cpu_threads", None) is not None:
        if not 1 <= args.cpu_threads <= MAX_CPU_THREADS:
            raise RequestError("cpu_threads", f"--threads {args.cpu_threads}: give 1 to "
                               f"{MAX_CPU_THREADS} threads")
        changes["cpu_threads"] = args.cpu_threads
    if getattr(args, "checkpoint_cache", None) is not None:
        if not -1 <= args.checkpoint_cache <= MAX_CACHED_CHECKPOINTS:
            raise RequestError("checkpoint_cache", f"--checkpoint-cache "
                               f"{args.checkpoint_cache}: give -1 (automatic) to "
                               f"{MAX_CACHED_CHECKPOINTS}")
        changes["checkpoint_cache"] = args.checkpoint_cache
    return eng.replace(**changes)
