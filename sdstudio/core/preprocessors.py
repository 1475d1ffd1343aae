"""ControlNet preprocessors that need no model weights, as A1111's ControlNet extension
(Mikubill/sd-webui-controlnet) names and computes them, and the table of every preprocessor
name the extension knows (the ones that need weights are listed so that infotext naming them
parses and the window can say "use a ready-made control image").

``preprocess(module, image, ...)`` turns a person's image into the control image a ControlNet
was trained on: RGB, white lines on black for the edge detectors. Pure numpy/PIL plus OpenCV
(imported on first use: the window's start-up does not pay for it), no torch, no Qt: the engine
calls it before a pass and the window calls it off the GUI thread for the Preview button.

How each one computes (the extension's, same functions and defaults):

- ``canny``: the image resized so its short side is the resolution (cubic up, area down),
  edge-padded to a multiple of 64, ``cv2.Canny(low, high)`` on the RGB image, padding removed.
- ``invert``: 255 - the image (a white-background line drawing becomes white lines on black).
- ``lineart_standard``: the image minus its Gaussian blur (sigma 6), darkest channel, scaled by
  the median line strength: dark lines of a drawing or photo as white on black.
- ``scribble_xdog``: difference of Gaussians (sigma 0.5 and 5) thresholded (XDoG Threshold);
  the extension's 8-bit arithmetic wraps for differences of 128 and more (some of the
  strongest edges drop out), SD Studio's does not.
- ``threshold``: white where every channel is above the binarization threshold.
- ``blur_gaussian``: a Gaussian blur (Sigma) for tile and blur models.
- ``tile_resample``: the image down-sampled by the rate (1 = unchanged; < 1.1 is unchanged).
- ``shuffle``: the content shuffled by a smooth random flow (cubic-interpolated noise with a
  256-pixel period, ``cv2.remap``); SD Studio seeds it (``seed``), so the same image and seed
  give the same control image.
- ``recolor_luminance`` / ``recolor_intensity``: the lightness (L of Lab) or value (V of HSV)
  with a gamma; the extension converts with OpenCV's BGR order, and so does this.
- ``t2ia_color_grid``: the image reduced to (resolution / 64) squares of colour.
- ``inpaint_global_harmonious`` / ``inpaint_only``: the image unchanged with the mask attached:
  RGBA whose alpha is 0 where the mask is painted (white). :func:`control_hint` gives the
  array the inpaint ControlNet takes, the masked pixels at -1 (what the extension passes);
  :func:`display_image` shows them black. Both give the same control image; the extension's
  ``inpaint_only`` also keeps the unmasked pixels, which SD Studio's inpaint does anyway.
- ``softedge_sdstudio``: SD Studio's own soft edge (the extension's soft edges, HED / PiDiNet /
  TEED, are networks that need weights): the Sobel gradient magnitude of the blurred grey
  image, normalised by its 99th percentile and softened: a grey-scale edge map without weights.
  Its name says it is not one of the extension's.
- ``none``: the image as it is (a ready-made depth map, pose image, scribble or line drawing).

Module names are the names the extension shows and writes in infotext; its internal names
("inpaint", "hed", "depth" ...) and labels ("invert (from white bg & black line)") are
accepted too (:func:`find_preprocessor`).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
from PIL import Image

from sdstudio.core.errors import RequestError

RESOLUTION_MIN = 64
RESOLUTION_MAX = 2048
DEFAULT_RESOLUTION = 512
# the largest image a preprocessor works on (after resizing to the resolution): a very long
# narrow image resized by its short side could otherwise need gigabytes
MAX_WORK_PIXELS = 4096 * 4096
IP_ADAPTER = "ip-adapter"
CONTROL = "control"


@dataclass(frozen=True)
class Slider:
    """One of a preprocessor's two parameters (the extension's "slider_1" / "slider_2",
    written in infotext as Threshold A / B)."""

    label: str
    default: float
    minimum: float
    maximum: float
    step: float = 1.0


@dataclass(frozen=True)
class Preprocessor:
    """One entry of the table. ``needs_weights``: computed by a network SD Studio does not
    ship (use a ready-made control image with module "none"); ``kind`` "ip-adapter": no pixel
    preprocessing, the engine encodes the reference image with a CLIP image encoder;
    ``resolution``: whether the Resolution (processor_res) applies; ``needs_mask``: uses the
    inpaint mask; ``model_filters``: words in the file names of the models it goes with
    (the extension's filters), for suggesting a model."""

    name: str
    label: str
    kind: str = CONTROL
    needs_weights: bool = False
    resolution: bool = True
    threshold_a: Slider | None = None
    threshold_b: Slider | None = None
    needs_mask: bool = False
    model_filters: tuple[str, ...] = ()
    aliases: tuple[str, ...] = ()

    @property
    def runnable(self) -> bool:
        """Whether :func:`preprocess` computes it here."""
        return self.name in _RUN

    def thresholds(self, threshold_a: float = -1.0,
                   threshold_b: float = -1.0) -> tuple[float, float]:
        """The two parameters with -1 (or any negative value) replaced by the defaults."""
        a = self.threshold_a.default if self.threshold_a and threshold_a < 0 else threshold_a
        b = self.threshold_b.default if self.threshold_b and threshold_b < 0 else threshold_b
        return float(a), float(b)


def _p(name: str, label: str = "", **kw: Any) -> Preprocessor:
    return Preprocessor(name=name, label=label or name, **kw)


def _weights(name: str, *filters: str, aliases: tuple[str, ...] = (),
             a: Slider | None = None, b: Slider | None = None) -> Preprocessor:
    return _p(name, needs_weights=True, model_filters=filters, aliases=aliases,
              threshold_a=a, threshold_b=b)


_GAMMA = Slider("Gamma Correction", 1.0, 0.1, 2.0, 0.001)
_INPAINT = ("inpaint",)
_TILE = ("tile", "blur")
_LINEART = ("lineart",)
_SCRIBBLE = ("scribble", "sketch")

PREPROCESSOR_LIST: tuple[Preprocessor, ...] = (
    _p("none"),
    _p("canny", threshold_a=Slider("Low Threshold", 100, 0, 256),
       threshold_b=Slider("High Threshold", 200, 0, 256), model_filters=("canny",)),
    _p("invert", "invert (from white bg & black line)", resolution=False,
       model_filters=("canny", "lineart", "scribble", "sketch", "mlsd")),
    _p("lineart_standard", "lineart_standard (from white bg & black line)",
       model_filters=_LINEART),
    _p("softedge_sdstudio", "softedge_sdstudio (SD Studio's, no weights)",
       threshold_a=Slider("Smoothing", 1.5, 0.5, 8.0, 0.1), model_filters=("softedge",)),
    _p("scribble_xdog", threshold_a=Slider("XDoG Threshold", 32, 1, 64),
       model_filters=_SCRIBBLE),
    _p("threshold", threshold_a=Slider("Binarization Threshold", 127, 0, 255)),
    _p("blur_gaussian", threshold_a=Slider("Sigma", 9.0, 0.01, 64.0, 0.01),
       model_filters=_TILE),
    _p("tile_resample", resolution=False,
       threshold_a=Slider("Down Sampling Rate", 1.0, 1.0, 8.0, 0.01), model_filters=_TILE),
    _p("inpaint_only", resolution=False, needs_mask=True, model_filters=_INPAINT),
    _p("inpaint_global_harmonious", resolution=False, needs_mask=True,
       model_filters=_INPAINT, aliases=("inpaint",)),
    _p("shuffle", model_filters=("shuffle",)),
    _p("recolor_luminance", resolution=False, threshold_a=_GAMMA, model_filters=("recolor",)),
    _p("recolor_intensity", resolution=False, threshold_a=_GAMMA, model_filters=("recolor",)),
    _p("t2ia_color_grid", model_filters=("t2i-adapter", "t2iadapter", "color"),
       aliases=("color",)),
    # IP-Adapter: the reference image goes to the CLIP image encoder as it is
    _p("ip-adapter_clip_sd15", "ip-adapter_clip_h", kind=IP_ADAPTER, resolution=False,
       model_filters=("ip-adapter", "ip_adapter", "ipadapter"), aliases=("ip-adapter_clip_h",)),
    _p("ip-adapter_clip_sdxl", "ip-adapter_clip_g", kind=IP_ADAPTER, resolution=False,
       model_filters=("ip-adapter", "ip_adapter", "ipadapter"), aliases=("ip-adapter_clip_g",)),
    _p("ip-adapter_clip_sdxl_plus_vith", kind=IP_ADAPTER, resolution=False,
       model_filters=("ip-adapter", "ip_adapter", "ipadapter")),
    # computed by networks SD Studio does not ship: use a ready-made control image
    _weights("depth_midas", "depth", aliases=("depth",)),
    _weights("depth_zoe", "depth"),
    _weights("depth_leres", "depth", a=Slider("Remove Near %", 0, 0, 100, 0.1),
             b=Slider("Remove Background %", 0, 0, 100, 0.1)),
    _weights("depth_leres++", "depth", a=Slider("Remove Near %", 0, 0, 100, 0.1),
             b=Slider("Remove Background %", 0, 0, 100, 0.1)),
    _weights("depth_anything", "depth"),
    _weights("depth_hand_refiner", "depth"),
    _weights("normal_bae", "normal"),
    _weights("normal_midas", "normal", aliases=("normal_map",),
             a=Slider("Normal Background Threshold", 0.4, 0.0, 1.0, 0.01)),
    _weights("openpose", "openpose"),
    _weights("openpose_face", "openpose"),
    _weights("openpose_faceonly", "openpose"),
    _weights("openpose_full", "openpose"),
    _weights("openpose_hand", "openpose"),
    _weights("dw_openpose_full", "openpose"),
    _weights("animal_openpose", "openpose"),
    _weights("densepose", "openpose"),
    _weights("densepose_parula", "openpose"),
    _weights("softedge_hed", "softedge", aliases=("hed",)),
    _weights("softedge_hedsafe", "softedge", aliases=("hed_safe",)),
    _weights("softedge_pidinet", "softedge", aliases=("pidinet",)),
    _weights("softedge_pidisafe", "softedge", aliases=("pidinet_safe",)),
    _weights("softedge_teed", "softedge", aliases=("te_hed",),
             a=Slider("Safe Steps", 2, 0, 10)),
    _weights("scribble_hed", *_SCRIBBLE),
    _weights("scribble_pidinet", *_SCRIBBLE, aliases=("pidinet_scribble",)),
    _weights("t2ia_sketch_pidi", "t2i-adapter", "sketch", aliases=("pidinet_sketch",)),
    _weights("lineart_realistic", *_LINEART, aliases=("lineart",)),
    _weights("lineart_coarse", *_LINEART),
    _weights("lineart_anime", *_LINEART),
    _weights("lineart_anime_denoise", *_LINEART),
    _weights("mlsd", "mlsd", a=Slider("MLSD Value Threshold", 0.1, 0.01, 2.0, 0.01),
             b=Slider("MLSD Distance Threshold", 0.1, 0.01, 20.0, 0.01)),
    _weights("seg_ofade20k", "seg", aliases=("oneformer_ade20k",)),
    _weights("seg_ofcoco", "seg", aliases=("oneformer_coco",)),
    _weights("seg_ufade20k", "seg", aliases=("segmentation",)),
    _weights("seg_anime_face", "seg", aliases=("anime_face_segment",)),
    _weights("mediapipe_face", "mediapipe_face", a=Slider("Max Faces", 1, 1, 10),
             b=Slider("Min Face Confidence", 0.5, 0.01, 1.0, 0.01)),
    _weights("inpaint_only+lama", *_INPAINT),
    _weights("t2ia_style_clipvision", "t2i-adapter", "style", aliases=("clip_vision",)),
    _weights("ip-adapter_face_id", "ip-adapter", "faceid"),
    _weights("ip-adapter_face_id_plus", "ip-adapter", "faceid"),
)
PREPROCESSORS: dict[str, Preprocessor] = {p.name: p for p in PREPROCESSOR_LIST}
_LOOKUP: dict[str, Preprocessor] = {}
for _entry in PREPROCESSOR_LIST:
    for _key in (_entry.name, _entry.label, *_entry.aliases):
        _LOOKUP.setdefault(_key, _entry)
        _LOOKUP.setdefault(_key.lower(), _entry)
NEEDS_WEIGHTS_HINT = "use a ready-made control image (preprocessor none)"


def find_preprocessor(module: str) -> Preprocessor | None:
    """The table's entry for a module name as the extension writes it (name, label or its
    internal name, any case); None for a name it does not know."""
    text = module.strip()
    return _LOOKUP.get(text) or _LOOKUP.get(text.lower())


def canonical_module(module: str) -> str:
    """The name SD Studio stores and writes for ``module`` ("inpaint" -> "inpaint_global_
    harmonious"); RequestError for an unknown one."""
    entry = find_preprocessor(module)
    if entry is None:
        raise RequestError("control_units", f"unknown ControlNet preprocessor: {module!r}")
    return entry.name


def pixel_perfect_resolution(image_size: tuple[int, int], target_size: tuple[int, int],
                             resize_mode: str) -> int:
    """The resolution "Pixel Perfect" picks, as the extension does: the control image's
    short side scaled as the resize mode scales it onto the target (width, height) -
    by the larger factor for "Just Resize" / "Crop and Resize", the smaller for "Resize
    and Fill"."""
    raw_w, raw_h = image_size
    target_w, target_h = target_size
    k0, k1 = target_h / raw_h, target_w / raw_w
    k = min(k0, k1) if resize_mode == "Resize and Fill" else max(k0, k1)
    return int(np.round(k * min(raw_h, raw_w)))


def preprocess(module: str, image: Image.Image, *, resolution: int = DEFAULT_RESOLUTION,
               threshold_a: float = -1.0, threshold_b: float = -1.0,
               mask: Image.Image | None = None, seed: int = 0) -> Image.Image:
    """The control image ``module`` makes of ``image``: RGB (RGBA for the inpaint modules,
    alpha 0 where masked). ``resolution`` is the extension's processor resolution (the short
    side worked at); thresholds of -1 take the module's defaults; ``mask``: the inpaint mask
    (white = repaint), needed by the inpaint modules; ``seed`` draws shuffle's flow.
    RequestError (field "control_units") for an unknown module, one that needs weights, an
    IP-Adapter module, a missing mask or values out of range."""
    entry = find_preprocessor(module)
    if entry is None:
        raise RequestError("control_units", f"unknown ControlNet preprocessor: {module!r}")
    if entry.kind == IP_ADAPTER:
        raise RequestError("control_units", f"{entry.name} is an IP-Adapter module: the "
                           "reference image is used as it is, with no preprocessing")
    run = _RUN.get(entry.name)
    if run is None:
        raise RequestError("control_units", f"preprocessor {entry.name} needs model weights "
                           f"SD Studio does not have: {NEEDS_WEIGHTS_HINT}")
    if entry.resolution and not RESOLUTION_MIN <= resolution <= RESOLUTION_MAX:
        raise RequestError("control_units", f"preprocessor resolution must be "
                           f"{RESOLUTION_MIN}-{RESOLUTION_MAX}, not {resolution}")
    a, b = entry.thresholds(threshold_a, threshold_b)
    for slider, value in ((entry.threshold_a, a), (entry.threshold_b, b)):
        if slider and not slider.minimum <= value <= slider.maximum:
            raise RequestError("control_units", f"{entry.name}: {slider.label} must be "
                               f"{slider.minimum:g}-{slider.maximum:g}, not {value:g}")
    if entry.needs_mask:
        return _inpaint(image, mask, entry.name)
    out = run(_Args(_rgb(image), int(resolution), a, b, seed))
    return Image.fromarray(_hwc3(out), "RGB")


def control_hint(image: Image.Image) -> np.ndarray:
    """The float array (height, width, 3) in [0, 1] a ControlNet takes for a control image;
    an RGBA image's pixels with alpha < 128 (the inpaint modules' masked area) are -1, as the
    extension and the inpaint ControlNet's training mark them."""
    rgb = np.asarray(image.convert("RGB"), dtype=np.float32) / 255.0
    if image.mode == "RGBA":
        masked = np.asarray(image.getchannel("A")) < 128
        rgb[masked] = -1.0
    return rgb


def display_image(image: Image.Image) -> Image.Image:
    """What a control image looks like for a person: RGB, the inpaint modules' masked area
    black."""
    if image.mode != "RGBA":
        return image.convert("RGB")
    rgb = np.array(image.convert("RGB"))
    rgb[np.asarray(image.getchannel("A")) < 128] = 0
    return Image.fromarray(rgb, "RGB")


# --- the computations -------------------------------------------------------------------


@dataclass(frozen=True)
class _Args:
    img: np.ndarray  # uint8 (H, W, 3)
    res: int
    a: float
    b: float
    seed: int


def _cv2() -> Any:
    import cv2  # first use only: 0.3 s of import the window's start-up does not pay

    return cv2


def _rgb(image: Image.Image) -> np.ndarray:
    """uint8 (H, W, 3): transparency over white, as the extension's HWC3 does."""
    if image.mode in ("RGBA", "LA") or (image.mode == "P" and "transparency" in image.info):
        rgba = np.asarray(image.convert("RGBA"), dtype=np.float32)
        alpha = rgba[:, :, 3:4] / 255.0
        out = rgba[:, :, :3] * alpha + 255.0 * (1.0 - alpha)
        return np.ascontiguousarray(out.clip(0, 255).round().astype(np.uint8))
    return np.ascontiguousarray(np.asarray(image.convert("RGB"), dtype=np.uint8))


def _hwc3(x: np.ndarray) -> np.ndarray:
    if x.ndim == 2:
        x = x[:, :, None]
    if x.shape[2] == 1:
        x = np.concatenate([x, x, x], axis=2)
    return np.ascontiguousarray(x.astype(np.uint8))


def _pad64(x: int) -> int:
    return int(math.ceil(x / 64.0) * 64 - x)


def _resize_with_pad(img: np.ndarray, res: int) -> tuple[np.ndarray, Callable[
        [np.ndarray], np.ndarray]]:
    """The extension's resize_image_with_pad: short side to ``res`` (cubic up, area down),
    edge padding to a multiple of 64; returns the padded image and the crop that undoes it."""
    cv2 = _cv2()
    h, w = img.shape[:2]
    k = res / min(h, w)
    th, tw = int(np.round(h * k)), int(np.round(w * k))
    if th * tw > MAX_WORK_PIXELS:
        raise RequestError("control_units", f"the control image is too long and narrow for "
                           f"resolution {res} ({tw}x{th} pixels)")
    interpolation = cv2.INTER_CUBIC if k > 1 else cv2.INTER_AREA
    resized = cv2.resize(img, (tw, th), interpolation=interpolation)
    padded = np.pad(resized, [[0, _pad64(th)], [0, _pad64(tw)], [0, 0]], mode="edge")

    def remove_pad(x: np.ndarray) -> np.ndarray:
        return np.ascontiguousarray(x[:th, :tw])

    return np.ascontiguousarray(padded), remove_pad


def _canny(p: _Args) -> np.ndarray:
    img, remove_pad = _resize_with_pad(p.img, p.res)
    return remove_pad(_cv2().Canny(img, int(p.a), int(p.b)))


def _invert(p: _Args) -> np.ndarray:
    return 255 - p.img


def _lineart_standard(p: _Args) -> np.ndarray:
    img, remove_pad = _resize_with_pad(p.img, p.res)
    x = img.astype(np.float32)
    g = _cv2().GaussianBlur(x, (0, 0), 6.0)
    intensity = np.min(g - x, axis=2).clip(0, 255)
    strong = intensity[intensity > 8]
    intensity /= max(16.0, float(np.median(strong))) if strong.size else 16.0
    intensity *= 127
    return remove_pad(intensity.clip(0, 255).astype(np.uint8))


def _softedge_sdstudio(p: _Args) -> np.ndarray:
    cv2 = _cv2()
    img, remove_pad = _resize_with_pad(p.img, p.res)
    grey = cv2.cvtColor(img, cv2.COLOR_RGB2GRAY).astype(np.float32)
    grey = cv2.GaussianBlur(grey, (0, 0), p.a)
    gx = cv2.Sobel(grey, cv2.CV_32F, 1, 0, ksize=3)
    gy = cv2.Sobel(grey, cv2.CV_32F, 0, 1, ksize=3)
    magnitude = np.sqrt(gx * gx + gy * gy)
    top = float(np.percentile(magnitude, 99))
    if top <= 1e-3:
        return remove_pad(np.zeros(grey.shape, np.uint8))
    soft = cv2.GaussianBlur((magnitude / top).clip(0, 1), (0, 0), p.a / 2)
    return remove_pad((np.sqrt(soft.clip(0, 1)) * 255.0).round().astype(np.uint8))


def _scribble_xdog(p: _Args) -> np.ndarray:
    cv2 = _cv2()
    img, remove_pad = _resize_with_pad(p.img, p.res)
    g1 = cv2.GaussianBlur(img.astype(np.float32), (0, 0), 0.5)
    g2 = cv2.GaussianBlur(img.astype(np.float32), (0, 0), 5.0)
    dog = (255 - np.min(g2 - g1, axis=2)).clip(0, 255).astype(np.uint8)
    result = np.zeros(img.shape[:2], np.uint8)
    result[2 * (255 - dog.astype(np.int32)) > p.a] = 255
    return remove_pad(result)


def _threshold(p: _Args) -> np.ndarray:
    img, remove_pad = _resize_with_pad(p.img, p.res)
    result = np.zeros(img.shape[:2], np.uint8)
    result[np.min(img, axis=2) > p.a] = 255
    return remove_pad(result)


def _blur_gaussian(p: _Args) -> np.ndarray:
    img, remove_pad = _resize_with_pad(p.img, p.res)
    return _cv2().GaussianBlur(remove_pad(img), (0, 0), p.a)


def _tile_resample(p: _Args) -> np.ndarray:
    if p.a < 1.1:
        return p.img
    h, w = p.img.shape[:2]
    size = (max(1, int(w / p.a)), max(1, int(h / p.a)))
    return _cv2().resize(p.img, size, interpolation=_cv2().INTER_AREA)


def _noise_disk(rng: np.random.RandomState, h: int, w: int, f: int) -> np.ndarray:
    """Smooth noise in [0, 1]: uniform noise on a grid of period ``f``, cubic-interpolated."""
    noise = rng.uniform(0.0, 1.0, size=(h // f + 2, w // f + 2))
    noise = _cv2().resize(noise, (w + 2 * f, h + 2 * f), interpolation=_cv2().INTER_CUBIC)
    noise = noise[f:f + h, f:f + w]
    noise = noise - noise.min()
    top = float(noise.max())
    return noise / top if top > 0 else noise


def _shuffle(p: _Args) -> np.ndarray:
    img, remove_pad = _resize_with_pad(p.img, p.res)
    img = remove_pad(img)
    h, w = img.shape[:2]
    rng = np.random.RandomState(p.seed & 0xFFFFFFFF)
    x = _noise_disk(rng, h, w, 256) * float(w - 1)
    y = _noise_disk(rng, h, w, 256) * float(h - 1)
    flow = np.stack([x, y], axis=2).astype(np.float32)
    return _cv2().remap(img, flow, None, _cv2().INTER_LINEAR)


def _recolor(conversion: str, channel: int) -> Callable[[_Args], np.ndarray]:
    def run(p: _Args) -> np.ndarray:
        cv2 = _cv2()
        values = cv2.cvtColor(p.img, getattr(cv2, conversion))[:, :, channel]
        result = (values.astype(np.float32) / 255.0) ** p.a
        return (result * 255.0).clip(0, 255).astype(np.uint8)

    return run


def _color_grid(p: _Args) -> np.ndarray:
    cv2 = _cv2()
    cells = max(1, p.res // 64)
    small = cv2.resize(p.img, (cells, cells), interpolation=cv2.INTER_CUBIC)
    return cv2.resize(small, (p.res, p.res), interpolation=cv2.INTER_NEAREST)


def _none(p: _Args) -> np.ndarray:
    return p.img


def _inpaint(image: Image.Image, mask: Image.Image | None, name: str) -> Image.Image:
    if mask is None:
        if image.mode != "RGBA":
            raise RequestError("control_units", f"{name} needs an inpaint mask: paint one "
                               "on the Inpaint tab")
        return image.copy()
    grey = mask.convert("L")
    if grey.size != image.size:
        grey = grey.resize(image.size, Image.Resampling.BILINEAR)
    keep = np.where(np.asarray(grey) > 127, 0, 255).astype(np.uint8)
    rgba = np.dstack([_rgb(image), keep])
    return Image.fromarray(rgba, "RGBA")


_RUN: dict[str, Callable[[_Args], np.ndarray]] = {
    "none": _none,
    "canny": _canny,
    "invert": _invert,
    "lineart_standard": _lineart_standard,
    "softedge_sdstudio": _softedge_sdstudio,
    "scribble_xdog": _scribble_xdog,
    "threshold": _threshold,
    "blur_gaussian": _blur_gaussian,
    "tile_resample": _tile_resample,
    "inpaint_only": _none,
    "inpaint_global_harmonious": _none,
    "shuffle": _shuffle,
    "recolor_luminance": _recolor("COLOR_BGR2LAB", 0),
    "recolor_intensity": _recolor("COLOR_BGR2HSV", 2),
    "t2ia_color_grid": _color_grid,
}
