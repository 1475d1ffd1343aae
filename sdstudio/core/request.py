"""GenerationRequest: one immutable value that carries everything that determines an image.

The window, the CLI and the batch runner all build one of these; the worker hands it to the
engine; the PNG metadata is derived from it and parsing that metadata gives it back.

Images (init image, mask) travel as file paths so the request stays a small, hashable,
serialisable value; the window saves pasted or painted images to the data folder first.
"""

from __future__ import annotations

import dataclasses
import re
import secrets
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from sdstudio.core.control import (
    ControlUnit,
    ControlUnitsKey,
    active_units,
    parse_units,
    units_problem,
)
from sdstudio.core.errors import RequestError
from sdstudio.core.fields import (
    IMAGE_MODES,
    INPAINT_ONLY,
    TXT2IMG_ONLY,
    FieldSpec,
    InfotextKey,
    Mode,
    Ui,
    field_map,
    num,
    request_fields,
    spec,
)
from sdstudio.core.hires import USE_SAME_SAMPLER, USE_SAME_SCHEDULER, request_target, runs_hires
from sdstudio.core.infotext_keys import (
    DENOISING_STRENGTH,
    EmphasisKey,
    FlagWordsKey,
    HiresEnableKey,
    HiresKey,
    HiresResizeKey,
    HiresSamplerKey,
    HiresScheduleKey,
    ImageStrengthKey,
    RngKey,
    SamplerKey,
    ScheduleKey,
    SeedResizeKey,
    SizeKey,
    WhenKey,
)
from sdstudio.core.outpaint import (
    MASKED_CONTENT,
    OutpaintKey,
    normalize_masked_content,
    outpaints,
    size_problem,
)
from sdstudio.core.outpaint import STEP as OUTPAINT_STEP
from sdstudio.core.sampler_names import (
    SAMPLER_NAMES,
    SCHEDULE_TYPES,
    normalize_sampler,
    normalize_schedule,
    schedule_problem,
    split_combined,
)
from sdstudio.core.tokens import strip_lora_tags
from sdstudio.core.upscalers import LATENT_UPSCALE_DEFAULT
from sdstudio.core.upscalers import MAX_SCALE as UPSCALE_MAX
from sdstudio.core.upscalers import MIN_SCALE as UPSCALE_MIN

__all__ = ["FIELD_NAMES", "MAX_SEED", "SAMPLER_NAMES", "GenerationInfo", "GenerationRequest",
           "LoraSpec", "Mode", "request_spec"]

RESIZE_MODES: tuple[str, ...] = ("resize", "crop", "fill")
# A1111's emphasis modes (modules/sd_emphasis.py): Original multiplies each token's embedding
# by its weight and restores the chunk's mean; No norm skips the mean; Ignore parses the
# syntax away without weights; None keeps the brackets as text.
EMPHASIS_MODES: tuple[str, ...] = ("Original", "No norm", "Ignore", "None")

MAX_SIDE = 8192  # pixels per side
MAX_PIXELS = 4096 * 4096  # per image; refused before anything is allocated
MAX_STEPS = 1000
MAX_BATCH_SIZE = 64
MAX_BATCH_COUNT = 10000
MAX_SEED = 2**32 - 1

_LORA_TAG = re.compile(r"<lora:([^:>]+)(?::([^:>]*))?(?::[^>]*)?>")
_SIZE_KEY = SizeKey()
_SEED_RESIZE_KEY = SeedResizeKey()
_HIRES_RESIZE_KEY = HiresResizeKey()


def _normalize_hires_sampler(name: str) -> str:
    """"" and "use same sampler" (A1111's API sends None) = the first pass's sampler."""
    text = name.strip()
    if text.lower() in ("", "none", USE_SAME_SAMPLER.lower()):
        return USE_SAME_SAMPLER
    return normalize_sampler(text)


def _normalize_hires_schedule(name: str) -> str:
    text = name.strip()
    if text.lower() in ("", "none", USE_SAME_SCHEDULER.lower()):
        return USE_SAME_SCHEDULER
    return normalize_schedule(text)


@dataclass(frozen=True)
class LoraSpec:
    """A LoRA to apply: a name (resolved in the LoRA folders) or a path, and its weight."""

    name: str
    weight: float = 1.0


def _size(name: str) -> dict[str, FieldSpec]:
    return spec("int", name.capitalize(), help=f"{name} in pixels (a multiple of 8)",
                minimum=64, maximum=MAX_SIDE, multiple_of=8, bounds_style="limits",
                cli=(f"--{name}", f"-{name[0].upper()}"), metavar="PX", infotext=_SIZE_KEY,
                ui=Ui("sampling", label="Si&ze" if name == "width" else "",
                      inline=name == "height", widget="size", step=64))


_OUTPAINT_KEY = OutpaintKey()


def _outpaint(side: str) -> dict[str, FieldSpec]:
    return spec("int", f"Outpaint {side}", help=f"extend the image by this many pixels on the "
                f"{side} (a multiple of 8; 0 = not)", noun=f"outpaint {side}", minimum=0,
                maximum=MAX_SIDE, multiple_of=OUTPAINT_STEP, metavar="PX", modes=INPAINT_ONLY,
                infotext=_OUTPAINT_KEY, persist=False,
                ui=Ui("inpaint", side if side in ("right", "bottom") else "",
                      inline=side in ("right", "bottom"), step=OUTPAINT_STEP * 8,
                      suffix=" px"))


@dataclass(frozen=True)
class GenerationRequest:
    """Every field is declared once, with its :class:`~sdstudio.core.fields.FieldSpec`."""

    prompt: str = field(metadata=spec(
        "text", "Prompt", help="what to draw (<lora:name:weight> tags allowed)",
        cli=("--prompt", "-p"), metavar="TEXT", ui=Ui("prompt", "&Prompt", widget="prompt")))
    negative_prompt: str = field(default="", metadata=spec(
        "text", "Negative prompt", help="what to avoid", cli=("--negative-prompt", "-n"),
        metavar="TEXT", aliases=("negative",),
        ui=Ui("prompt", "&Negative prompt", widget="prompt")))
    sampler: str = field(default="Euler a", metadata=spec(
        "choice", "Sampler", help="the sampling method (AUTOMATIC1111 names)",
        choices=SAMPLER_NAMES, normalize=normalize_sampler,
        choice_message="unknown sampler {value!r}; choose one of: {choices}", metavar="NAME",
        aliases=("sampler_name", "sampler_index"),
        infotext=SamplerKey(), ui=Ui("sampling", "S&ampler")))
    schedule_type: str = field(default="Automatic", metadata=spec(
        "choice", "Schedule type", help="the noise schedule the sampler steps along "
        "(Automatic = the sampler's own default, as in AUTOMATIC1111)",
        choices=SCHEDULE_TYPES, normalize=normalize_schedule,
        choice_message="unknown schedule type {value!r}; choose one of: {choices}",
        metavar="NAME", aliases=("scheduler", "schedule"), infotext=ScheduleKey(),
        ui=Ui("sampling", "Schedule t&ype")))
    width: int = field(default=512, metadata=_size("width"))
    height: int = field(default=512, metadata=_size("height"))
    steps: int = field(default=20, metadata=spec(
        "int", "Steps", help="denoising steps", minimum=1, maximum=MAX_STEPS,
        cli=("--steps", "-s"), metavar="N", infotext=InfotextKey("Steps"),
        ui=Ui("sampling", "S&teps")))
    cfg_scale: float = field(default=7.0, metadata=spec(
        "float", "CFG scale", help="classifier-free guidance: how strongly the image follows "
        "the prompt", noun="CFG scale", minimum=0, maximum=100, cli=("--cfg-scale", "-c"),
        metavar="X", aliases=("cfg",), infotext=InfotextKey("CFG scale"),
        ui=Ui("sampling", "&CFG", inline=True, step=0.5, decimals=1)))
    seed: int = field(default=-1, metadata=spec(
        "int", "Seed", help="-1 picks a new random seed for every run", minimum=0,
        maximum=MAX_SEED, special=-1, special_meaning="random", metavar="N",
        infotext=InfotextKey("Seed"), ui=Ui("sampling", "S&eed", widget="seed")))
    variation_seed: int = field(default=-1, metadata=spec(
        "int", "Variation seed", help="a second seed whose noise is blended in by the "
        "variation strength (-1 = random)", minimum=0, maximum=MAX_SEED, special=-1,
        special_meaning="random", metavar="N", aliases=("subseed",),
        infotext=WhenKey("Variation seed", lambda r: r.variation_strength > 0),
        ui=Ui("advanced", "Variation see&d")))
    variation_strength: float = field(default=0.0, metadata=spec(
        "float", "Variation strength", help="how much of the variation seed's noise is "
        "blended in: 0 = none, 1 = only the variation seed", minimum=0.0, maximum=1.0,
        metavar="X", aliases=("subseed_strength",),
        infotext=InfotextKey("Variation seed strength", omit_default=True),
        ui=Ui("advanced", "Variation strength", step=0.05, decimals=2)))
    seed_resize_from_w: int = field(default=0, metadata=spec(
        "int", "Seed resize from width", help="make the noise as at this width, so a seed "
        "keeps its picture at another size (0 = off; needs both sides)",
        noun="seed resize width", minimum=0, maximum=MAX_SIDE,
        metavar="PX", infotext=_SEED_RESIZE_KEY,
        ui=Ui("advanced", "Seed resize from", step=64, suffix=" px")))
    seed_resize_from_h: int = field(default=0, metadata=spec(
        "int", "Seed resize from height", help="the height for --seed-resize-from-w "
        "(0 = off)", noun="seed resize height", minimum=0, maximum=MAX_SIDE, metavar="PX",
        infotext=_SEED_RESIZE_KEY, ui=Ui("advanced", "×", inline=True, step=64, suffix=" px")))
    batch_size: int = field(default=1, metadata=spec(
        "int", "Images per run", help="images made together in one run (uses more memory)",
        minimum=1, maximum=MAX_BATCH_SIZE, cli=("--batch-size", "-b"), metavar="N",
        ui=Ui("sampling", "&Images")))
    batch_count: int = field(default=1, metadata=spec(
        "int", "Number of runs", help="runs made one after the other", minimum=1,
        maximum=MAX_BATCH_COUNT, metavar="N", aliases=("n_iter",),
        ui=Ui("sampling", "R&uns", inline=True)))
    strength: float = field(default=0.75, metadata=spec(
        "float", "Denoising strength", help="how much the source image changes: 0 keeps it, "
        "1 ignores it", minimum=0.0, maximum=1.0, metavar="X", modes=IMAGE_MODES,
        aliases=("denoising_strength",),
        infotext=ImageStrengthKey(IMAGE_MODES),
        ui=Ui("image", "St&rength", step=0.05, decimals=2)))
    init_image: str | None = field(default=None, metadata=spec(
        "path", "Init image", help="source image (img2img, inpaint)", cli=("--init-image", "-i"),
        metavar="FILE", aliases=("init", "image", "init_images"), ui=Ui("external"),
        persist=False))
    mask: str | None = field(default=None, metadata=spec(
        "path", "Mask", help="inpaint mask (white = repaint); needs an init image",
        metavar="FILE", aliases=("mask_image",), ui=Ui("external"), persist=False))
    mask_blur: int = field(default=4, metadata=spec(
        "int", "Mask blur", help="soften the mask's edge by this many pixels", minimum=0,
        maximum=256, metavar="PX", modes=INPAINT_ONLY,
        infotext=InfotextKey("Mask blur", modes=INPAINT_ONLY),
        ui=Ui("inpaint", "Mask &blur", suffix=" px")))
    inpaint_only_masked: bool = field(default=False, metadata=spec(
        "bool", "Only masked area", help="inpaint the masked area's bounding box at full "
        "resolution, then paste it back", modes=INPAINT_ONLY, aliases=("inpaint_full_res",),
        infotext=FlagWordsKey("Inpaint area", "Only masked", "Whole picture", INPAINT_ONLY),
        ui=Ui("inpaint", "Only mas&ked area")))
    inpaint_padding: int = field(default=32, metadata=spec(
        "int", "Padding", help="pixels of context around the masked area", noun="inpaint "
        "padding", minimum=0, maximum=1024, metavar="PX", modes=INPAINT_ONLY,
        aliases=("inpaint_full_res_padding",),
        infotext=WhenKey("Masked area padding", lambda r: r.inpaint_only_masked, INPAINT_ONLY),
        ui=Ui("inpaint", "Padding", inline=True, suffix=" px")))
    masked_content: str = field(default="original", metadata=spec(
        "choice", "Masked content", help="what the masked area starts from, as AUTOMATIC1111: "
        "fill (the surrounding colours, blurred), original (the image as it is), latent noise, "
        "latent nothing", choices=MASKED_CONTENT, normalize=normalize_masked_content,
        modes=INPAINT_ONLY, aliases=("inpainting_fill",),
        infotext=InfotextKey("Masked content", modes=INPAINT_ONLY, omit_default=True),
        ui=Ui("inpaint", "Masked content")))
    outpaint_left: int = field(default=0, metadata=_outpaint("left"))
    outpaint_right: int = field(default=0, metadata=_outpaint("right"))
    outpaint_top: int = field(default=0, metadata=_outpaint("top"))
    outpaint_bottom: int = field(default=0, metadata=_outpaint("bottom"))
    resize_mode: str = field(default="resize", metadata=spec(
        "choice", "Resize mode", help="how the source image fits the size: resize (stretch), "
        "crop, fill", choices=RESIZE_MODES, modes=IMAGE_MODES, ui=Ui("external")))
    model: str = field(default="", metadata=spec(
        "model", "Model", help="model folder or file, or a name in the model folders "
        "(default: the configured model, else the untrained demo model)",
        cli=("--model", "-m"), metavar="PATH|NAME",
        aliases=("sd_model", "sd_model_checkpoint", "checkpoint"), ui=Ui("external"),
        persist=False))
    vae: str = field(default="", metadata=spec(
        "model", "VAE", help="a separate VAE file or name in the VAE folders (default: the "
        "model's own)", noun="VAE", metavar="PATH|NAME",
        ui=Ui("advanced", "VAE", widget="file-choice")))
    loras: tuple[LoraSpec, ...] = field(default=(), metadata=spec(
        "loras", "LoRAs", help="apply a LoRA (repeatable), besides the <lora:name:w> tags in "
        "the prompt", noun="loras", cli=("--lora",), metavar="NAME:WEIGHT", aliases=("lora",),
        ui=Ui("external"), persist=False))
    clip_skip: int = field(default=1, metadata=spec(
        "int", "Clip skip", help="stop at this CLIP layer from the end (1 = the last)",
        minimum=1, maximum=12, metavar="N", infotext=InfotextKey("Clip skip",
                                                                   omit_default=True),
        ui=Ui("advanced", "C&lip skip")))
    emphasis: str = field(default="Original", metadata=spec(
        "choice", "Emphasis", help="how (word:1.2) weights apply, as AUTOMATIC1111: Original "
        "(weights, then the mean restored), No norm (weights only), Ignore (no weights), None "
        "(brackets are plain text)", choices=EMPHASIS_MODES,
        infotext=EmphasisKey(), ui=Ui("advanced", "Emphasis")))
    rng: str = field(default="cpu", metadata=spec(
        "choice", "RNG", help="where the initial noise is drawn: cpu (the same image on every "
        "device, as A1111's CPU setting) or device (the GPU's generator)", noun="rng",
        choices=("cpu", "device"), choice_labels=("CPU", "GPU"), infotext=RngKey(),
        ui=Ui("advanced", "RNG")))
    # the hires fix (A1111's txt2img enable_hr ...): see core/hires.py and engine/hires.py
    hires: bool = field(default=False, metadata=spec(
        "bool", "Hires fix", help="make the image at its width x height, upscale it, then "
        "refine it at the larger size with an image-to-image pass (text to image only)",
        noun="hires fix", aliases=("enable_hr",), modes=TXT2IMG_ONLY,
        infotext=HiresEnableKey(), ui=Ui("hires", "Enable")))
    hires_upscaler: str = field(default=LATENT_UPSCALE_DEFAULT, metadata=spec(
        "text", "Hires upscaler", help="how the first image is enlarged: a latent mode "
        "(Latent, Latent (nearest), ...), Lanczos, Nearest or an upscaler model's name",
        metavar="NAME", aliases=("hr_upscaler",), modes=TXT2IMG_ONLY,
        infotext=HiresKey("Hires upscaler"), ui=Ui("hires", "Up&scaler", widget="upscaler")))
    hires_scale: float = field(default=2.0, metadata=spec(
        "float", "Hires upscale", help="upscale by this factor (when no resize is given)",
        noun="hires upscale", minimum=UPSCALE_MIN, maximum=UPSCALE_MAX, metavar="X",
        aliases=("hr_scale",), modes=TXT2IMG_ONLY,
        infotext=HiresKey("Hires upscale", lambda r: not (r.hires_resize_x
                                                          or r.hires_resize_y)),
        ui=Ui("hires", "Upscale by", step=0.05, decimals=2)))
    hires_resize_x: int = field(default=0, metadata=spec(
        "int", "Hires resize width", help="resize to this width instead of by the factor "
        "(0 = from the height and the aspect, or the factor)", noun="hires resize width",
        minimum=0, maximum=MAX_SIDE, metavar="PX", aliases=("hr_resize_x",),
        modes=TXT2IMG_ONLY, infotext=_HIRES_RESIZE_KEY,
        ui=Ui("hires", "Resize to", step=64, suffix=" px")))
    hires_resize_y: int = field(default=0, metadata=spec(
        "int", "Hires resize height", help="resize to this height (0 = from the width and "
        "the aspect, or the factor)", noun="hires resize height", minimum=0,
        maximum=MAX_SIDE, metavar="PX", aliases=("hr_resize_y",), modes=TXT2IMG_ONLY,
        infotext=_HIRES_RESIZE_KEY, ui=Ui("hires", "×", inline=True, step=64, suffix=" px")))
    hires_steps: int = field(default=0, metadata=spec(
        "int", "Hires steps", help="steps of the second pass (0 = as many as the first)",
        noun="hires steps", minimum=0, maximum=MAX_STEPS, metavar="N",
        aliases=("hr_second_pass_steps",), modes=TXT2IMG_ONLY,
        infotext=HiresKey("Hires steps", lambda r: r.hires_steps != 0),
        ui=Ui("hires", "Hires steps")))
    hires_denoising: float = field(default=0.7, metadata=spec(
        "float", "Hires denoising strength", help="how much the second pass changes the "
        "upscaled image: low keeps it, high redraws it", noun="hires denoising strength",
        minimum=0.01, maximum=1.0, metavar="X", aliases=("hr_denoising_strength",),
        modes=TXT2IMG_ONLY, infotext=HiresKey(DENOISING_STRENGTH),
        ui=Ui("hires", "Denoising", step=0.05, decimals=2)))
    hires_sampler: str = field(default=USE_SAME_SAMPLER, metadata=spec(
        "choice", "Hires sampler", help="the second pass's sampler (Use same sampler = "
        "the first pass's)", choices=(USE_SAME_SAMPLER, *SAMPLER_NAMES),
        normalize=_normalize_hires_sampler,
        choice_message="unknown hires sampler {value!r}; choose one of: {choices}",
        metavar="NAME", aliases=("hr_sampler_name", "hr_sampler"), modes=TXT2IMG_ONLY,
        infotext=HiresSamplerKey(), ui=Ui("hires", "Hires sampler")))
    hires_schedule_type: str = field(default=USE_SAME_SCHEDULER, metadata=spec(
        "choice", "Hires schedule type", help="the second pass's schedule type (Use same "
        "scheduler = the first pass's)", choices=(USE_SAME_SCHEDULER, *SCHEDULE_TYPES),
        normalize=_normalize_hires_schedule,
        choice_message="unknown hires schedule type {value!r}; choose one of: {choices}",
        metavar="NAME", aliases=("hr_scheduler",), modes=TXT2IMG_ONLY,
        infotext=HiresScheduleKey(), ui=Ui("hires", "Hires schedule")))
    hires_prompt: str = field(default="", metadata=spec(
        "text", "Hires prompt", help="the second pass's prompt (empty = the prompt)",
        metavar="TEXT", aliases=("hr_prompt",), modes=TXT2IMG_ONLY,
        infotext=HiresKey("Hires prompt", lambda r: r.hires_prompt not in ("", r.prompt)),
        ui=Ui("hires", "Hires prompt", widget="line")))
    hires_negative_prompt: str = field(default="", metadata=spec(
        "text", "Hires negative prompt", help="the second pass's negative prompt (empty = "
        "the negative prompt)", metavar="TEXT", aliases=("hr_negative_prompt",),
        modes=TXT2IMG_ONLY, infotext=HiresKey(
            "Hires negative prompt",
            lambda r: r.hires_negative_prompt not in ("", r.negative_prompt)),
        ui=Ui("hires", "Hires negative", widget="line")))

    # ControlNet / T2I-Adapter / IP-Adapter units (core/control.py; engine/controlnet.py)
    control_units: tuple[ControlUnit, ...] = field(default=(), metadata=spec(
        "units", "Control units", help="a ControlNet, T2I-Adapter or IP-Adapter unit "
        "(repeatable): the model's name in the ControlNet folders or its file, then "
        "settings: image=FILE (default: the init image), module=none|canny|..., weight=1 "
        "(0-2), start=0, end=1 (fractions of the steps), mode=balanced|prompt|controlnet, "
        "resize=crop|resize|fill, pixel-perfect, res=512, threshold-a=X, threshold-b=X; "
        "for example --control control_v11p_sd15_canny,image=edges.png,weight=0.8",
        noun="control units", cli=("--control",), metavar="MODEL[,KEY=VALUE...]",
        aliases=("control", "controlnet", "controlnet_units"), infotext=ControlUnitsKey(),
        ui=Ui("external"), persist=False, check=units_problem, parse=parse_units))

    def __post_init__(self) -> None:
        # an older combined name ("DPM++ 2M Karras") is the sampler plus its schedule type
        pair = split_combined(self.sampler)
        if pair is not None and self.schedule_type in ("Automatic", pair[1]):
            object.__setattr__(self, "sampler", pair[0])
            object.__setattr__(self, "schedule_type", pair[1])
        pair = split_combined(self.hires_sampler)
        if pair is not None and self.hires_schedule_type in (USE_SAME_SCHEDULER, pair[1]):
            object.__setattr__(self, "hires_sampler", pair[0])
            object.__setattr__(self, "hires_schedule_type", pair[1])

    # ----------------------------------------------------------------------------- derived
    @property
    def mode(self) -> Mode:
        if self.init_image and (self.mask or outpaints(self)):
            return Mode.INPAINT
        if self.init_image:
            return Mode.IMG2IMG
        return Mode.TXT2IMG

    @property
    def image_count(self) -> int:
        return self.batch_size * self.batch_count

    def seeds(self, first_seed: int) -> list[int]:
        """Seeds of every image, in order: A1111's convention of seed + image index; with a
        variation strength every image keeps the seed and the variation seed counts up."""
        step = 0 if self.variation_strength > 0 else 1
        return [(first_seed + i * step) % (MAX_SEED + 1) for i in range(self.image_count)]

    def variation_seeds(self, first_seed: int | None = None) -> list[int]:
        """Variation seeds of every image, in order: the first + image index (as A1111); the
        first is ``first_seed``, else the request's, else (-1) a random one."""
        first = self.variation_seed if first_seed is None else first_seed
        if first < 0:
            first = secrets.randbelow(MAX_SEED + 1) if self.variation_strength > 0 else 0
        return [(first + i) % (MAX_SEED + 1) for i in range(self.image_count)]

    def image_request(self, seed: int, variation_seed: int) -> GenerationRequest:
        """The request of one image of this one: its own seed (and variation seed, when one
        was used), one image per run."""
        extra = {"variation_seed": variation_seed} if self.variation_strength > 0 else {}
        return self.replace(seed=seed, batch_size=1, batch_count=1, **extra)

    def prompt_loras(self) -> tuple[str, tuple[LoraSpec, ...]]:
        """The prompt with ``<lora:name:weight>`` tags removed, and every LoRA to apply."""
        found: list[LoraSpec] = []
        for m in _LORA_TAG.finditer(self.prompt):
            weight_text = (m.group(2) or "1").strip()
            try:
                weight = float(weight_text)
            except ValueError as exc:
                raise RequestError(
                    "prompt", f"LoRA tag {m.group(0)!r}: weight {weight_text!r} is not a number"
                ) from exc
            name = m.group(1).strip()
            if not is_plain_name(name):
                raise RequestError(
                    "prompt", f"LoRA tag {m.group(0)!r}: give the LoRA's name in your LoRA "
                    "folders, not a path")
            found.append(LoraSpec(name, weight))
        return strip_lora_tags(self.prompt), (*self.loras, *found)

    def prompt_with_lora_tags(self) -> str:
        """The prompt with ``loras`` (the LoRAs given apart from it) as ``<lora:name:w>``
        tags after it: the same LoRAs, as infotext and the window carry them."""
        tags = "".join(f" <lora:{lo.name}:{num(lo.weight)}>" for lo in self.loras)
        if not tags:
            return self.prompt
        return self.prompt + tags if self.prompt else tags.strip()

    def replace(self, **changes: Any) -> GenerationRequest:
        return dataclasses.replace(self, **changes)

    # ------------------------------------------------------------------------ validation
    def validated(self) -> GenerationRequest:
        """Return this request if every value is usable, else raise RequestError naming the
        field. Cheap: never touches files or allocates images."""
        for s in request_fields(type(self)):
            problem = s.problem(getattr(self, s.name))
            if problem:
                raise RequestError(s.name, problem)
        _check(
            self.width * self.height <= MAX_PIXELS,
            "width",
            f"size {self.width}x{self.height} is too large "
            f"(at most {MAX_PIXELS // 1_000_000} megapixels)",
        )
        if runs_hires(self):
            self._check_hires()
        if split_combined(self.sampler) is not None:  # left combined: another schedule given
            raise RequestError("schedule_type", f"sampler {self.sampler} already names its "
                               f"schedule type; schedule type {self.schedule_type} conflicts")
        schedule = schedule_problem(self.sampler, self.schedule_type)
        _check(schedule is None, "schedule_type", schedule or "")
        _check(
            self.mask is None or bool(self.init_image),
            "mask",
            "a mask needs an init image to inpaint",
        )
        outpaint = size_problem(self, MAX_PIXELS, MAX_SIDE)
        _check(outpaint is None, "outpaint_left", outpaint or "")
        for i, unit in active_units(self.control_units):
            _check(unit.image is not None or bool(self.init_image), "control_units",
                   f"control unit {i + 1} ({unit.model}) needs a control image "
                   "(image=FILE): in text to image there is no init image to use")
        self.prompt_loras()  # raises on a malformed LoRA tag
        return self

    def _check_hires(self) -> None:
        target = request_target(self)
        field_name = "hires_resize_x" if self.hires_resize_x or self.hires_resize_y \
            else "hires_scale"
        _check(min(target.width, target.height) >= 64, field_name,
               f"the hires target {target.width}x{target.height} is too small (at least 64 "
               "pixels a side)")
        _check(max(target.width, target.height) <= MAX_SIDE
               and target.width * target.height <= MAX_PIXELS, field_name,
               f"the hires target {target.width}x{target.height} is too large (at most "
               f"{MAX_PIXELS // 1_000_000} megapixels, {MAX_SIDE} pixels a side)")
        sampler = self.sampler if self.hires_sampler == USE_SAME_SAMPLER else self.hires_sampler
        schedule = (self.schedule_type if self.hires_schedule_type == USE_SAME_SCHEDULER
                    else self.hires_schedule_type)
        problem = schedule_problem(sampler, schedule)
        _check(problem is None, "hires_schedule_type", f"hires pass: {problem}")

    # --------------------------------------------------------------------- serialisation
    def to_dict(self) -> dict[str, Any]:
        """Every field, JSON-ready (LoRAs as ``{"name", "weight"}`` objects)."""
        data = {s.name: getattr(self, s.name) for s in request_fields(type(self))}
        data["loras"] = [{"name": lo.name, "weight": lo.weight} for lo in self.loras]
        data["control_units"] = [u.to_dict() for u in self.control_units]
        return data

    def changed_dict(self) -> dict[str, Any]:
        """Only the fields whose value differs from the default, as in :meth:`to_dict`."""
        data = self.to_dict()
        return {s.name: data[s.name] for s in request_fields(type(self))
                if s.name == "prompt" or getattr(self, s.name) != s.default}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> GenerationRequest:
        """Build a request from a mapping (JSON, CSV row...). Unknown keys raise RequestError;
        values are converted to the field's type where that is lossless."""
        if "prompt" not in data:
            raise RequestError("prompt", "a request needs a prompt")
        known = field_map(cls)
        kwargs: dict[str, Any] = {}
        for key, value in data.items():
            s = known.get(key)
            if s is None:
                raise RequestError(key, f"unknown request field {key!r}")
            kwargs[key] = _coerce(s, value)
        return cls(**kwargs)


FIELDS: tuple[FieldSpec, ...] = request_fields(GenerationRequest)
FIELD_NAMES: tuple[str, ...] = tuple(s.name for s in FIELDS)


def request_spec(name: str) -> FieldSpec:
    """The spec of one request field (KeyError for an unknown name)."""
    return field_map(GenerationRequest)[name]


def is_plain_name(name: str) -> bool:
    """A name to look up in SD Studio's folders ("detail", "styles/film"): not absolute, no
    drive, no ``..``, no ``~``. Names from prompts and images must be plain; only the person's
    own command line gives paths."""
    text = name.replace("\\", "/")
    parts = [p for p in text.split("/") if p]
    return bool(parts) and not (
        text.startswith(("/", "~")) or ":" in parts[0] or any(p in ("..", ".") for p in parts))


def _check(ok: bool, field_name: str, message: str) -> None:
    if not ok:
        raise RequestError(field_name, message)


def parse_loras(value: Any) -> tuple[LoraSpec, ...]:
    """LoRAs from a list of "name", "name:weight", {"name", "weight"} or a comma list."""
    if isinstance(value, str):
        value = [v for v in value.split(",") if v.strip()]
    out = []
    for item in value or ():
        try:
            if isinstance(item, LoraSpec):
                out.append(item)
            elif isinstance(item, Mapping):
                out.append(LoraSpec(str(item["name"]), float(item.get("weight", 1.0))))
            else:  # "name" or "name:weight"
                name, sep, weight = str(item).rpartition(":")
                if not sep:
                    name, weight = weight, ""
                out.append(LoraSpec(name.strip(), float(weight) if weight.strip() else 1.0))
        except (ValueError, TypeError, KeyError) as exc:
            raise RequestError("loras", f"loras: {item!r} is not a LoRA (name:weight)") from exc
    return tuple(out)


def _coerce(s: FieldSpec, value: Any) -> Any:
    if s.kind == "loras":
        return parse_loras(value)
    try:
        return s.coerce(value)
    except ValueError as exc:
        if s.kind == "units":
            raise RequestError(s.name, str(exc)) from exc
        raise RequestError(s.name, f"{s.name}: {value!r} is not a valid value") from exc


@dataclass(frozen=True)
class GenerationInfo:
    """What the engine knows about how an image was made, beyond the request itself.
    Written into the PNG's sdstudio chunk (and partly into the A1111 infotext)."""

    model_name: str = ""
    model_sha256: str = ""  # full hex digest; A1111's "Model hash" is its first 10 digits
    model_arch: str = ""  # "sd1", "sd1-inpaint", "sd2", "sd2-v", "sdxl", "sdxl-inpaint"
    model_untrained: bool = False  # the built-in demo model
    vae_name: str = ""
    vae_sha256: str = ""
    lora_hashes: Mapping[str, str] = field(default_factory=dict)  # name -> A1111's short hash
    ti_hashes: Mapping[str, str] = field(default_factory=dict)  # embedding name -> short hash
    # a control unit's model (as the request names it) -> "name [hash8]", as the ControlNet
    # extension names it in the infotext
    control_models: Mapping[str, str] = field(default_factory=dict)
    device: str = ""
    dtype: str = ""
    memory: Mapping[str, Any] = field(default_factory=dict)  # savers chosen and why
    scheduler: Mapping[str, Any] = field(default_factory=dict)  # class name + config
    versions: Mapping[str, str] = field(default_factory=dict)
    prompt_tokens: int = 0
    negative_tokens: int = 0
    elapsed_s: float = 0.0
    notes: tuple[str, ...] = ()

    @property
    def model_hash(self) -> str:
        return self.model_sha256[:10]

    def to_dict(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        data["notes"] = list(self.notes)
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> GenerationInfo:
        known = {f.name for f in dataclasses.fields(cls)}
        kwargs = {k: v for k, v in data.items() if k in known}
        if "notes" in kwargs:
            kwargs["notes"] = tuple(kwargs["notes"])
        return cls(**kwargs)
