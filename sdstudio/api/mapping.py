"""AUTOMATIC1111's API JSON -> SD Studio requests, and A1111-shaped answers.

Pure Python (PIL allowed): no Qt, no torch. Request fields come from the field table
(``core.request.FIELDS``): a JSON key is a field's name or one of its ``aliases`` (A1111's
names: ``sampler_name``, ``n_iter``, ``subseed``, ``denoising_strength``, ...), so a field
that declares an A1111 alias is accepted here without code in this module. What is special
to the API is only:

* A1111's own defaults where they differ from SD Studio's (``steps`` 50, sampler Euler,
  ``inpaint_full_res`` true with padding 0, ``seed_resize_from_*`` -1 = off);
* values A1111 codes differently (``resize_mode`` 0-3, ``inpainting_mask_invert``,
  ``mask_blur_x``/``_y``, base64 ``init_images`` and ``mask``);
* the ControlNet extension's ``alwayson_scripts.controlnet.args`` (its unit objects, a
  base64 ``image``) as ``control_units``;
* A1111 keys SD Studio has no field for: accepted when they carry the neutral value A1111
  clients send by default (``restore_faces`` false, ``tiling`` false, ``eta`` 1, ...),
  refused with 422 when they ask for something SD Studio cannot do;
* names (model, VAE, LoRA) are plain names in SD Studio's folders, never paths; file
  fields are never taken from JSON (images come as base64 and are saved to the inputs folder).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import io
import json
import math
import secrets
import tempfile
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from PIL import Image, ImageOps

from sdstudio.core import paths
from sdstudio.core.control import ControlUnit, split_title, unit_from
from sdstudio.core.errors import ImageInputError, RequestError, SDStudioError
from sdstudio.core.fields import IMAGE_MODES, FieldSpec, Mode
from sdstudio.core.files import write_atomic
from sdstudio.core.images import MAX_INPUT_PIXELS, open_image
from sdstudio.core.request import (
    FIELDS,
    MAX_SEED,
    RESIZE_MODES,
    GenerationInfo,
    GenerationRequest,
    _coerce,
    is_plain_name,
)

MAX_BODY_BYTES = 64 * 1024 * 1024  # a request with a few base64 images of 4096x4096
# base64 of an image larger than this is refused before it is decoded
MAX_IMAGE_BYTES = 48 * 1024 * 1024


class ApiError(SDStudioError):
    """An answer other than 200: ``status`` and A1111's ``detail`` line."""

    def __init__(self, status: int, detail: str) -> None:
        super().__init__(detail)
        self.status = status
        self.detail = detail


def refuse(detail: str) -> ApiError:
    return ApiError(422, detail)


# ----------------------------------------------------------------------------- the table
def _keys() -> dict[str, list[FieldSpec]]:
    table: dict[str, list[FieldSpec]] = {}
    for s in FIELDS:
        for key in (s.name, *s.aliases):
            table.setdefault(key, []).append(s)
    return table


_KEYS = _keys()

# A1111's defaults where SD Studio's differ (modules/processing.py, modules/api/models.py):
# steps 50; sampler_index "Euler" is the sampler when sampler_name is not given;
# inpaint_full_res True and inpaint_full_res_padding 0.
A1111_DEFAULTS: dict[str, Any] = {
    "steps": 50, "sampler": "Euler", "inpaint_only_masked": True, "inpaint_padding": 0,
}

# The request JSON A1111 answers with (``parameters``): every field of its request model
# with its default, the request's own values over them.
_COMMON_PARAMETERS: dict[str, Any] = {
    "prompt": "", "negative_prompt": "", "styles": None, "seed": -1, "subseed": -1,
    "subseed_strength": 0, "seed_resize_from_h": -1, "seed_resize_from_w": -1,
    "sampler_name": None, "scheduler": None, "batch_size": 1, "n_iter": 1, "steps": 50,
    "cfg_scale": 7.0, "width": 512, "height": 512, "restore_faces": None, "tiling": None,
    "do_not_save_samples": False, "do_not_save_grid": False, "eta": None,
    "denoising_strength": 0.75, "s_min_uncond": None, "s_churn": None, "s_tmax": None,
    "s_tmin": None, "s_noise": None, "override_settings": None,
    "override_settings_restore_afterwards": True, "refiner_checkpoint": None,
    "refiner_switch_at": None, "disable_extra_networks": False, "comments": None,
    "sampler_index": "Euler", "script_name": None, "script_args": [], "send_images": True,
    "save_images": False, "alwayson_scripts": {}, "force_task_id": None, "infotext": None,
}
TXT2IMG_PARAMETERS: dict[str, Any] = {
    **_COMMON_PARAMETERS, "enable_hr": False, "firstphase_width": 0, "firstphase_height": 0,
    "hr_scale": 2.0, "hr_upscaler": None, "hr_second_pass_steps": 0, "hr_resize_x": 0,
    "hr_resize_y": 0, "hr_checkpoint_name": None, "hr_sampler_name": None,
    "hr_scheduler": None, "hr_prompt": "", "hr_negative_prompt": "",
}
IMG2IMG_PARAMETERS: dict[str, Any] = {
    **_COMMON_PARAMETERS, "init_images": None, "resize_mode": 0, "image_cfg_scale": None,
    "mask": None, "mask_blur_x": 4, "mask_blur_y": 4, "mask_blur": None, "inpainting_fill": 0,
    "inpaint_full_res": True, "inpaint_full_res_padding": 0, "inpainting_mask_invert": 0,
    "initial_noise_multiplier": None, "latent_mask": None, "include_init_images": False,
}


def _empty(value: Any) -> bool:
    return value is None or value == "" or value == [] or value == {}


def _is(*neutral: Any) -> Callable[[Any], bool]:
    return lambda value: value is None or any(value == n for n in neutral)


# A1111 keys without an SD Studio field: the values that change nothing (what clients send
# by default). Anything else is refused: SD Studio cannot do it.
NEUTRAL: dict[str, Callable[[Any], bool]] = {
    "restore_faces": _is(False), "tiling": _is(False),
    "eta": _is(1.0), "s_churn": _is(0), "s_tmin": _is(0), "s_tmax": _is(0, math.inf),
    "s_noise": _is(1.0), "s_min_uncond": _is(0), "initial_noise_multiplier": _is(1.0),
    "refiner_checkpoint": _empty, "refiner_switch_at": _is(0, 1.0),
    "disable_extra_networks": _is(False), "token_merging_ratio": _is(0),
    "script_name": _empty, "script_args": _empty, "infotext": _empty, "latent_mask": _empty,
    "enable_hr": _is(False), "inpainting_fill": _is(0, 1),
}
# Accepted and ignored: A1111 ignores them too here, or they only steer A1111's own saving
# and answers (``save_images`` and ``send_images`` are read by the caller).
IGNORED = frozenset({
    "do_not_save_samples", "do_not_save_grid", "override_settings_restore_afterwards",
    "firstphase_width", "firstphase_height", "image_cfg_scale", "force_task_id", "comments",
    "include_init_images", "send_images", "save_images", "outpath_samples", "outpath_grids",
    "do_not_reload_embeddings", "user",
})
# Hires-fix keys A1111 reads only with enable_hr: ignored while hires fix is off.
HIRES_ONLY = frozenset({
    "hr_scale", "hr_upscaler", "hr_second_pass_steps", "hr_resize_x", "hr_resize_y",
    "hr_checkpoint_name", "hr_sampler_name", "hr_scheduler", "hr_prompt",
    "hr_negative_prompt", "hr_cfg", "hr_additional_modules", "hr_distilled_cfg",
})
# File fields never come from JSON: images come as base64 (init_images, mask)
# (control units name image files too: alwayson_scripts.controlnet carries them as base64)
_PATH_FIELDS = frozenset(s.name for s in FIELDS if s.kind in ("path", "units"))
_TXT2IMG_DENOISE = "hr_denoising_strength"  # the hires field's name for it, when there is one
_SAME = (0, "Use same sampler", "Use same checkpoint", "Use same scheduler")
RESIZE_CODES = {0: "resize", 1: "crop", 2: "fill"}  # A1111's resize_mode numbers


@dataclass
class ApiOptions:
    """The A1111 options (``/sdapi/v1/options``) SD Studio honours for API requests."""

    sd_model_checkpoint: str = ""  # "" = SD Studio's configured model
    sd_vae: str = "Automatic"  # "Automatic" / "None" = the model's own
    CLIP_stop_at_last_layers: int = 1

    def as_request_fields(self) -> dict[str, Any]:
        return {"model": self.sd_model_checkpoint,
                "vae": "" if self.sd_vae in ("Automatic", "None", "") else self.sd_vae,
                "clip_skip": self.CLIP_stop_at_last_layers}


OPTION_FIELDS = {"sd_model_checkpoint": "model", "sd_vae": "vae",
                 "CLIP_stop_at_last_layers": "clip_skip"}


@dataclass
class ParsedCall:
    """One txt2img / img2img call: the request, and what steers the answer."""

    request: GenerationRequest
    save_images: bool
    send_images: bool
    parameters: dict[str, Any]
    run_requests: list[GenerationRequest] = field(default_factory=list)


# ----------------------------------------------------------------------------- parsing
def parse_call(body: Any, kind: str, options: ApiOptions,
               known_names: Callable[[str, str], bool],
               styles: Callable[[], Sequence[Any]] | None = None) -> ParsedCall:
    """``body`` (the JSON of ``/sdapi/v1/{kind}``) as a validated request. ``known_names(kind,
    name)`` says whether a model / vae / lora name exists in SD Studio's folders.
    Raises ApiError (422) with one line naming the field."""
    if not isinstance(body, Mapping):
        raise refuse("the request body must be a JSON object")
    data = dict(body)
    values: dict[str, Any] = dict(A1111_DEFAULTS)
    values.update({k: v for k, v in options.as_request_fields().items() if v not in ("", None)})
    explicit: set[str] = set()

    overrides = data.get("override_settings") or {}
    if not isinstance(overrides, Mapping):
        raise refuse("override_settings must be an object")
    for key, value in overrides.items():
        target = OPTION_FIELDS.get(str(key))
        if target is None:
            raise refuse(f"override_settings: SD Studio does not support the option {key!r}")
        if target == "vae" and value in ("Automatic", "None"):
            value = ""
        values[target] = value

    hires = bool(data.get("enable_hr"))
    if kind == "img2img":
        _images_into(data, values)
    for key in ("init_images", "mask", "override_settings", "resize_mode",
                "inpainting_mask_invert", "mask_blur_x", "mask_blur_y", "styles",
                "alwayson_scripts", "sampler_index"):
        data.pop(key, None)  # handled here
    sampler_index = body.get("sampler_index")
    if not data.get("sampler_name") and sampler_index:
        values["sampler"] = sampler_index
    if kind == "img2img":
        _img2img_codes(body, values)
    scripts = body.get("alwayson_scripts")
    units = _control_units(scripts)
    if units:
        values["control_units"] = units
    _check_scripts(scripts)
    _apply_styles(body.get("styles"), data, styles)

    if kind == "txt2img" and "denoising_strength" in data and _TXT2IMG_DENOISE in _KEYS:
        # A1111's txt2img denoising_strength is the hires pass's
        data.setdefault(_TXT2IMG_DENOISE, data.pop("denoising_strength"))
    for key, value in data.items():
        specs = _KEYS.get(key)
        if specs:
            s = _pick(specs, kind)
            if s is None:
                continue
            if s.name in _PATH_FIELDS:
                raise refuse(f"{key}: files are sent as base64 images (init_images, mask), "
                             "not as paths")
            if value is None:
                continue  # A1111's "not given"
            if s.name in ("seed_resize_from_w", "seed_resize_from_h") and _number(value) < 0:
                value = 0  # A1111's -1 = off
            values[s.name] = value
            explicit.add(s.name)
        elif key in IGNORED or (key in HIRES_ONLY and not hires):
            continue
        elif key in NEUTRAL:
            if not NEUTRAL[key](value):
                raise refuse(f"{key}: SD Studio cannot do {key}={json.dumps(value)}; "
                             "leave it at its default")
        elif key in HIRES_ONLY and not _empty(value) and value not in _SAME:
            raise refuse(f"{key}: SD Studio cannot do {key}={json.dumps(value)}")
        # other keys: ignored, as A1111's request model ignores keys it does not know
    request = _build(values)
    _check_names(request, known_names)
    parameters = dict(TXT2IMG_PARAMETERS if kind == "txt2img" else IMG2IMG_PARAMETERS)
    parameters.update(body)
    if kind == "img2img" and not body.get("include_init_images"):
        parameters["init_images"] = None
        parameters["mask"] = None
    save = body.get("save_images", False)
    send = body.get("send_images", True)
    if not isinstance(save, bool) or not isinstance(send, bool):
        raise refuse("save_images and send_images must be true or false")
    return ParsedCall(request, save, send, parameters, run_requests(request))


def _number(value: Any) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        raise refuse(f"{value!r} is not a number") from None


def _pick(specs: list[FieldSpec], kind: str) -> FieldSpec | None:
    """The field a key sets in this call (A1111's ``denoising_strength`` is the source
    image's strength in img2img, the hires pass's in txt2img); None: it does not matter in
    this kind of call."""
    wanted = frozenset({Mode.TXT2IMG}) if kind == "txt2img" else IMAGE_MODES
    for s in specs:
        if s.modes & wanted:
            return s
    return None


def _build(values: dict[str, Any]) -> GenerationRequest:
    kwargs: dict[str, Any] = {}
    by_name = {s.name: s for s in FIELDS}
    if "prompt" not in values:
        values["prompt"] = ""
    for name, value in values.items():
        try:
            kwargs[name] = _coerce(by_name[name], value)
        except RequestError as exc:
            raise refuse(str(exc)) from None
    try:
        return GenerationRequest(**kwargs).validated()
    except RequestError as exc:
        raise refuse(f"{exc.field}: {exc}") from None
    except (TypeError, ValueError) as exc:
        raise refuse(str(exc)) from None


def _check_names(request: GenerationRequest, known: Callable[[str, str], bool]) -> None:
    """Model, VAE and LoRA names: plain names that exist in SD Studio's folders."""
    checks = [("model", request.model), ("vae", request.vae)]
    try:
        _prompt, loras = request.prompt_loras()
    except RequestError as exc:
        raise refuse(str(exc)) from None
    checks += [("lora", lo.name) for lo in loras]
    for kind, name in checks:
        if not name:
            continue
        if not is_plain_name(name):
            raise refuse(f"{kind} {name!r}: give a name from SD Studio's {kind} folders, "
                         "not a path")
        if not known(kind, name):
            raise refuse(f"{kind} {name!r} was not found in SD Studio's {kind} folders")


def _img2img_codes(body: Mapping[str, Any], values: dict[str, Any]) -> None:
    code = body.get("resize_mode", 0)
    if code is not None:
        if code in RESIZE_MODES:
            values["resize_mode"] = code
        elif type(code) is int and code in RESIZE_CODES:
            values["resize_mode"] = RESIZE_CODES[code]
        elif code == 3:
            raise refuse("resize_mode 3 (latent upscale) is not supported; use 0, 1 or 2")
        else:
            raise refuse(f"resize_mode must be 0 (resize), 1 (crop) or 2 (fill), not {code!r}")
    blur_x, blur_y = body.get("mask_blur_x"), body.get("mask_blur_y")
    if body.get("mask_blur") is None and (blur_x is not None or blur_y is not None):
        if blur_x is not None and blur_y is not None and blur_x != blur_y:
            raise refuse("mask_blur_x and mask_blur_y differ; SD Studio blurs both ways alike")
        values["mask_blur"] = blur_x if blur_x is not None else blur_y


# the ControlNet extension's API unit keys (internal_controlnet/args.py) that SD Studio reads
_UNIT_KEYS = ("module", "model", "weight", "resize_mode", "processor_res", "threshold_a",
              "threshold_b", "guidance_start", "guidance_end", "pixel_perfect",
              "control_mode")
_MAX_API_UNITS = 8


def _control_units(scripts: Any) -> tuple[ControlUnit, ...]:
    """``alwayson_scripts.controlnet.args`` (the ControlNet extension's API: a list of unit
    objects with a base64 ``image`` / ``input_image``, or ``{"image": ..., "mask": ...}``)
    as control units; each image saved to the inputs folder. Disabled units and units
    without a model are left out, as the extension leaves them; other keys are ignored."""
    if not isinstance(scripts, Mapping):
        return ()
    entry = next((v for k, v in scripts.items() if str(k).lower() == "controlnet"), None)
    args = entry.get("args", []) if isinstance(entry, Mapping) else entry
    if _empty(args) or args == [False]:
        return ()
    if not isinstance(args, list) or len(args) > _MAX_API_UNITS:
        raise refuse(f"alwayson_scripts.controlnet.args must be a list of at most "
                     f"{_MAX_API_UNITS} units")
    units = []
    for i, raw in enumerate(args):
        what = f"controlnet unit {i}"
        if not isinstance(raw, Mapping):
            raise refuse(f"{what} must be an object")
        if raw.get("enabled", True) is False or str(raw.get("model") or "None") == "None":
            continue
        fields = {k: raw[k] for k in _UNIT_KEYS if raw.get(k) is not None}
        name, _short = split_title(str(fields["model"]))
        if not is_plain_name(name):
            raise refuse(f"{what}: give a model name from SD Studio's ControlNet folders, "
                         "not a path")
        if fields.get("processor_res") == -1:
            fields["processor_res"] = 512
        image = raw.get("image", raw.get("input_image"))
        if isinstance(image, Mapping):
            image = image.get("image")
        if image is not None:
            if not isinstance(image, str):
                raise refuse(f"{what}: image must be a base64 image")
            fields["image"] = str(save_input(decode_image(image, f"{what} image"), "control"))
        try:
            units.append(unit_from(fields))
        except (ValueError, TypeError) as exc:
            raise refuse(f"{what}: {exc}") from None
    return tuple(units)


def _check_scripts(scripts: Any) -> None:
    if _empty(scripts):
        return
    if not isinstance(scripts, Mapping):
        raise refuse("alwayson_scripts must be an object")
    for name, entry in scripts.items():
        if str(name).lower() == "controlnet":
            continue  # _control_units
        args = entry.get("args", []) if isinstance(entry, Mapping) else entry
        if _empty(args) or args == [False]:  # clients' "off" for ControlNet, ADetailer
            continue
        raise refuse(f"alwayson_scripts: SD Studio has no script {name!r}")


def _apply_styles(names: Any, data: dict[str, Any],
                  styles: Callable[[], Sequence[Any]] | None) -> None:
    """A1111's ``styles``: names from SD Studio's styles (A1111's styles.csv format),
    applied to the prompt and negative prompt in order."""
    if _empty(names):
        return
    if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
        raise refuse("styles must be a list of style names")
    from sdstudio.core.styles import apply_style

    known = {s.name: s for s in (styles() if styles is not None else ())}
    prompt = str(data.get("prompt") or "")
    negative = str(data.get("negative_prompt") or "")
    for name in names:
        style = known.get(name)
        if style is None:
            raise refuse(f"styles: no style named {name!r} in SD Studio's styles")
        prompt, negative = apply_style(style, prompt, negative)
    data["prompt"], data["negative_prompt"] = prompt, negative


# ------------------------------------------------------------------------------ images
def _images_into(body: dict[str, Any], values: dict[str, Any]) -> None:
    images = body.get("init_images")
    if not images:
        raise ApiError(404, "Init image not found")  # A1111's answer
    if not isinstance(images, list) or not all(isinstance(i, str) for i in images):
        raise refuse("init_images must be a list of base64 images")
    if len(images) > 1:
        raise refuse("init_images: SD Studio uses one source image per request")
    values["init_image"] = str(save_input(decode_image(images[0], "init image"), "init"))
    mask = body.get("mask")
    if mask:
        if not isinstance(mask, str):
            raise refuse("mask must be a base64 image")
        image = decode_image(mask, "mask")
        image = _mask_from(image)
        if body.get("inpainting_mask_invert") in (1, True):
            image = ImageOps.invert(image)
        elif body.get("inpainting_mask_invert") not in (0, False, None):
            raise refuse("inpainting_mask_invert must be 0 (inpaint masked) or 1 (not masked)")
        values["mask"] = str(save_input(image, "mask"))


def _mask_from(image: Image.Image) -> Image.Image:
    """A1111's ``create_binary_mask``: a mask with transparency is its alpha, thresholded;
    otherwise its greyscale."""
    if image.mode == "RGBA" and image.getextrema()[-1] != (255, 255):
        return image.getchannel("A").point(lambda x: 255 if x > 128 else 0)
    return image.convert("L")


def decode_image(text: str, what: str) -> Image.Image:
    """A base64 image (optionally a ``data:image/...;base64,`` URL) opened by SD Studio's
    safe loader: not an image, truncated and decompression bombs are refused (422)."""
    if text.startswith(("http://", "https://")):
        raise refuse(f"{what}: send the image itself as base64; SD Studio fetches no URLs")
    if text.startswith("data:"):
        text = text.partition(",")[2]
    if len(text) > MAX_IMAGE_BYTES * 4 // 3 + 4:
        raise ApiError(413, f"{what} is too large")
    try:
        raw = base64.b64decode(text, validate=False)
    except (binascii.Error, ValueError):
        raise refuse(f"{what} is not valid base64") from None
    folder = paths.inputs_dir()
    folder.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile(dir=folder, prefix=".api-", suffix=".img") as tmp:
        tmp.write(raw)
        tmp.flush()
        try:
            return open_image(tmp.name, what)
        except ImageInputError as exc:
            raise refuse(str(exc).replace(Path(tmp.name).name + " ", "", 1)) from None


def save_input(image: Image.Image, kind: str) -> Path:
    """Store a request's image in SD Studio's inputs folder, named by its content (the same
    pixels give the same file; written atomically, never rewritten)."""
    if image.mode not in ("RGB", "RGBA", "L"):
        image = image.convert("RGBA" if "A" in image.getbands() else "RGB")
    if kind == "mask" and image.mode != "L":
        image = image.convert("L")
    if image.width * image.height > MAX_INPUT_PIXELS:
        raise refuse(f"{kind} image is too large")
    digest = hashlib.sha256(f"{image.mode}:{image.width}x{image.height}:".encode())
    digest.update(image.tobytes())
    target = paths.inputs_dir() / f"api-{kind}-{digest.hexdigest()[:32]}.png"
    if target.is_file() and target.stat().st_size > 0:
        return target
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", compress_level=4)
    return write_atomic(target, buffer.getvalue(), prefix=f".api-{kind}-")


# ------------------------------------------------------------------------------- runs
def run_requests(request: GenerationRequest) -> list[GenerationRequest]:
    """The request as one request per run (A1111's ``n_iter``), seeds fixed: run ``r``
    makes the images ``r * batch_size ...`` of the whole, with the seeds and variation seeds
    the whole request gives them. One job per run lets ``/skip`` end one run only."""
    seed = request.seed if request.seed >= 0 else secrets.randbelow(MAX_SEED + 1)
    variation = request.variation_seeds()[0]
    seeds = request.seeds(seed)
    variations = request.variation_seeds(variation)
    out = []
    for run in range(request.batch_count):
        first = run * request.batch_size
        extra: dict[str, Any] = {"variation_seed": variations[first]} if (
            request.variation_strength > 0) else {}
        out.append(request.replace(seed=seeds[first], batch_count=1, **extra))
    return out


# ----------------------------------------------------------------------------- answers
@dataclass
class Result:
    """One image of a call: its own request (seed), how it was made, its PNG bytes."""

    request: GenerationRequest
    info: GenerationInfo | None
    png: bytes
    infotext: str


def info_json(call: ParsedCall, results: Sequence[Result], options: ApiOptions,
              model_name: str, model_hash: str) -> str:
    """A1111's ``info`` (``Processed.js()``): a JSON string."""
    r = call.request
    seeds = [x.request.seed for x in results] or [s.seed for s in call.run_requests[:1]]
    subseeds = [x.request.variation_seed for x in results] or [-1]
    first_info = results[0].info if results else None
    infotexts = [x.infotext for x in results]
    obj: dict[str, Any] = {
        "prompt": r.prompt, "all_prompts": [r.prompt] * max(1, len(results)),
        "negative_prompt": r.negative_prompt,
        "all_negative_prompts": [r.negative_prompt] * max(1, len(results)),
        "seed": seeds[0], "all_seeds": seeds, "subseed": subseeds[0],
        "all_subseeds": subseeds, "subseed_strength": r.variation_strength,
        "width": r.width, "height": r.height, "sampler_name": r.sampler,
        "cfg_scale": r.cfg_scale, "steps": r.steps, "batch_size": r.batch_size,
        "restore_faces": False, "face_restoration_model": None,
        "sd_model_name": first_info.model_name if first_info else model_name,
        "sd_model_hash": first_info.model_hash if first_info else model_hash,
        "sd_vae_name": (first_info.vae_name or None) if first_info else None,
        "sd_vae_hash": (first_info.vae_sha256[:10] or None) if first_info else None,
        "seed_resize_from_w": r.seed_resize_from_w or -1,
        "seed_resize_from_h": r.seed_resize_from_h or -1,
        "denoising_strength": r.strength if r.mode is not Mode.TXT2IMG else None,
        "extra_generation_params": {}, "index_of_first_image": 0, "infotexts": infotexts,
        "styles": call.parameters.get("styles") or [], "job_timestamp": "",
        "clip_skip": r.clip_skip, "is_using_inpainting_conditioning": False,
        "version": "SD Studio",
    }
    return json.dumps(obj)


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")
