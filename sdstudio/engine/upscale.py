"""The one place that upscales pixels: built-in resamplers and upscaler model files.

Public API::

    upscale_image(image, upscaler, scale, *, size=None, dirs=(), device=None, dtype=None,
                  tile=None, on_progress=None, cancel=None, allow_path=False) -> PIL.Image
    list_upscalers(dirs) -> list[str]          # built-ins, then the model files' names
    upscaler_dirs(settings) -> tuple[str, ...] # SD Studio's folder + settings.upscaler_dirs
    resolve_upscaler(name, dirs, allow_path=False) -> Path
    load_upscaler(path, device=None, dtype=None) -> LoadedUpscaler   # kept loaded (one at a time)
    unload_upscaler() -> None

* ``upscaler`` is a name from :mod:`sdstudio.core.upscalers` (``"None"``, ``"Lanczos"``,
  ``"Nearest"``) or an upscaler model file named as :func:`list_upscalers` lists it (its path
  relative to an upscaler folder, without the suffix; the bare file name works too). Names
  are looked up inside the upscaler folders only (:func:`~sdstudio.core.request.is_plain_name`);
  ``allow_path=True`` (the person's own command line) also accepts a path to a file.
* Size as AUTOMATIC1111's ``Upscaler.upscale``: the destination is each side times ``scale``
  rounded down to a multiple of 8; a model upscaler runs while the image is smaller than that,
  at most three times (a 4x model twice for 8x; once for a factor of 1), then a Lanczos resize
  gives the exact size.
  ``size=(w, h)`` asks for an exact size instead (A1111's ``resize_image``, what the hires fix
  uses): the factor is the larger ratio, the result is resized to ``size`` at the end.
  ``"None"`` is a plain Lanczos resize to the destination, as in A1111.
* Model files (``.pth``/``.pt`` through the checkpoints' safe ``weights_only`` loader, a hostile
  pickle refused in the same words; ``.safetensors`` header-checked first; weights nested as
  training code saves them, ``{"params_ema": ...}`` and the like, unwrapped) are recognised by
  spandrel from their weights: architecture and scale (ESRGAN, Real-ESRGAN and its compact
  SRVGG, SwinIR, HAT, DAT, OmniSR, ...). A file that is no single-image upscaler is refused
  with one line (:class:`~sdstudio.core.errors.ModelError`).
* Tiled: the input is cut into ``tile``-pixel squares that overlap by
  :func:`~sdstudio.engine.memory.upscale_tile_overlap` pixels; each tile's output is weighted
  by a linear ramp across the overlap it shares with a neighbour (1 elsewhere, and at the
  image's edges) and the weighted sum divided by the summed weights, so seams blend. The tile
  size comes from :func:`~sdstudio.engine.memory.choose_upscale_tile` when ``tile`` is None.
  The output is accumulated on the CPU, so device memory holds one tile. ``cancel`` is checked
  between tiles; ``on_progress(done, total)`` is called after each.
* fp16 on CUDA when the architecture supports it (else bf16 when it does, else fp32); fp32
  on the CPU. The loaded model stays until another is asked for or :func:`unload_upscaler`.
* Colour order: RGB in [0, 1], spandrel's contract (A1111 feeds its models BGR).
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from PIL import Image

from sdstudio.core import upscalers as names
from sdstudio.core.cancel import CancelToken
from sdstudio.core.errors import ModelError, RequestError
from sdstudio.core.request import is_plain_name
from sdstudio.engine import checkpoint, memory
from sdstudio.engine.spandrel_import import NEEDS_TORCHVISION, import_spandrel

if TYPE_CHECKING:
    import torch

ProgressCallback = Callable[[int, int], None]
# transformer architectures: far more activation memory per pixel than convolutional ones
_HEAVY_ARCHS = frozenset({"SwinIR", "Swin2SR", "HAT", "DAT", "GRL", "ATD", "DRCT", "RGT",
                          "IPT", "SRFormer", "MoESR", "FDAT"})
_MAX_PASSES = 3  # A1111's loop


# --------------------------------------------------------------------------- folders, names
upscaler_dirs = names.upscaler_dirs
list_upscalers = names.list_upscalers
_model_files = names.model_files


def _inside(path: Path, folder: Path) -> bool:
    try:
        path.resolve().relative_to(folder.expanduser().resolve())
        return True
    except (ValueError, OSError):
        return False


def resolve_upscaler(name: str, dirs: Sequence[str], *, allow_path: bool = False) -> Path:
    """The model file an upscaler name stands for. ``name``: the listed name (relative path
    without suffix), the file name, or its stem; case-insensitive as a fallback. Only inside
    ``dirs`` unless ``allow_path`` (the person's own command line) and ``name`` is a file.
    ModelError when nothing matches."""
    text = name.strip()
    if allow_path:  # the person's own command line: a path to a file is theirs to give
        direct = Path(text).expanduser()
        if direct.is_file():
            return direct.resolve()
    if not is_plain_name(text):
        raise ModelError(f"upscaler {text!r} is not a plain name; name a file in the upscaler "
                         "folders")
    wanted = text.replace("\\", "/")
    loose: Path | None = None
    for listed, path in _model_files(dirs):
        spellings = (listed, path.name, path.stem, f"{listed}{path.suffix}")
        if wanted in spellings:
            loose = path
            break
        if loose is None and wanted.lower() in (s.lower() for s in spellings):
            loose = path
    if loose is not None and any(_inside(loose, Path(d)) for d in dirs):
        return loose.resolve()
    where = ", ".join(dirs) if dirs else "no upscaler folder"
    builtins = ", ".join(names.BUILTIN_UPSCALERS)
    raise ModelError(f"unknown upscaler {text!r}: not a built-in ({builtins}) and no such "
                     f"file in the upscaler folders ({where})")


# --------------------------------------------------------------------------------- models
@dataclass
class LoadedUpscaler:
    """One upscaler model on its device."""

    path: Path
    stamp: tuple[int, int]  # (size, mtime_ns) of the file when loaded
    descriptor: Any  # spandrel.ImageModelDescriptor
    architecture: str
    scale: int
    device: torch.device
    dtype: torch.dtype
    model_bytes: int

    @property
    def heavy(self) -> bool:
        return self.architecture in _HEAVY_ARCHS


_lock = threading.RLock()
_loaded: LoadedUpscaler | None = None


def _default_device() -> torch.device:
    import torch

    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def _pick_dtype(descriptor: Any, device: torch.device, wanted: torch.dtype | None
                ) -> torch.dtype:
    import torch

    if device.type != "cuda":
        return torch.float32  # fp16 on the CPU is many times slower (DESIGN.md)
    if wanted is not None and wanted != torch.float32:
        if wanted == torch.float16 and descriptor.supports_half:
            return torch.float16
        if wanted == torch.bfloat16 and descriptor.supports_bfloat16:
            return torch.bfloat16
    if wanted == torch.float32:
        return torch.float32
    if descriptor.supports_half:
        return torch.float16
    return torch.bfloat16 if descriptor.supports_bfloat16 else torch.float32


# where upscaler files keep their weights (as spandrel's canonicalize_state_dict unwraps)
_WRAPPERS = ("model_state_dict", "state_dict", "params_ema", "params-ema", "params", "model",
             "net")


def _state_dict(path: Path) -> dict[str, Any]:
    """The tensors of an upscaler file, loaded safely, unwrapped from the dictionaries
    training code saves them in (``{"params_ema": {...}}``, ``{"model": {...}}``)."""
    import torch

    obj = checkpoint.load_object(path)
    for _ in range(3):
        if not isinstance(obj, Mapping):
            break
        inner = next((obj[k] for k in _WRAPPERS if isinstance(obj.get(k), Mapping)), None)
        if inner is None and len(obj) == 1 and isinstance(next(iter(obj.values())), Mapping):
            inner = next(iter(obj.values()))
        if inner is None:
            break
        obj = inner
    if not isinstance(obj, Mapping):
        raise ModelError(f"{path.name} holds a {type(obj).__name__}, not a dictionary of "
                         "tensors", details=str(path))
    tensors = {str(k): v for k, v in obj.items() if isinstance(v, torch.Tensor)}
    if not tensors:
        raise ModelError(f"{path.name} contains no tensors", details=str(path))
    return tensors


def _describe_file(path: Path, state: dict[str, Any]) -> Any:
    spandrel = import_spandrel()
    try:
        canonical = spandrel.canonicalize_state_dict(state)
        descriptor = spandrel.MAIN_REGISTRY.load(canonical)
    except spandrel.UnsupportedModelError:
        raise ModelError(f"{path.name} is not an upscaler model SD Studio knows (no "
                         "supported architecture matches its weights)",
                         details=str(path)) from None
    except Exception as exc:  # an architecture's detection tripped over odd weights
        raise ModelError(f"{path.name} is not a usable upscaler model ({type(exc).__name__}: "
                         f"{str(exc).splitlines()[0][:160] if str(exc) else ''})",
                         details=str(path)) from exc
    arch = str(descriptor.architecture.id)
    if arch in NEEDS_TORCHVISION or not isinstance(descriptor, spandrel.ImageModelDescriptor):
        raise ModelError(f"{path.name} is a {descriptor.architecture.name} model "
                         f"({descriptor.purpose}), not an upscaler", details=str(path))
    if descriptor.purpose not in ("SR", "Restoration"):
        raise ModelError(f"{path.name} is a {descriptor.architecture.name} model "
                         f"({descriptor.purpose}: face restoration), not an upscaler",
                         details=str(path))
    if descriptor.input_channels != 3 or descriptor.output_channels != 3:
        raise ModelError(f"{path.name} works on {descriptor.input_channels}-channel images; "
                         "SD Studio upscales RGB (3 channels)", details=str(path))
    return descriptor


def describe_upscaler_file(path: Path) -> str:
    """The architecture and scale of the upscaler in ``path`` (read safely, not kept);
    ModelError for a file that is not one."""
    descriptor = _describe_file(Path(path), _state_dict(Path(path)))
    return f"{descriptor.architecture.name} {descriptor.scale}x"


def load_upscaler(path: Path, device: torch.device | str | None = None,
                  dtype: torch.dtype | None = None) -> LoadedUpscaler:
    """The upscaler model in ``path`` on ``device``, loaded safely; kept for the next call
    (the same file, unchanged, on the same device is not read again). Loading another
    frees the one before. ModelError for a file that is not one."""
    import torch

    global _loaded
    path = Path(path)
    dev = torch.device(device) if device is not None else _default_device()
    st = checkpoint.require_regular_file(path)
    stamp = (st.st_size, st.st_mtime_ns)
    with _lock:
        current = _loaded
        if (current is not None and current.path == path.resolve() and current.stamp == stamp
                and current.device == dev
                and (dtype is None or _pick_dtype(current.descriptor, dev, dtype)
                     == current.dtype)):
            return current
        unload_upscaler()
        descriptor = _describe_file(path, _state_dict(path))
        chosen = _pick_dtype(descriptor, dev, dtype)
        descriptor.to(dev).to(chosen).eval()
        model_bytes = sum(p.numel() * p.element_size()
                          for p in descriptor.model.parameters())
        _loaded = LoadedUpscaler(path.resolve(), stamp, descriptor,
                                 str(descriptor.architecture.id), int(descriptor.scale), dev,
                                 chosen, model_bytes)
        return _loaded


def unload_upscaler() -> None:
    """Free the loaded upscaler model (if any) and its device memory."""
    global _loaded
    with _lock:
        if _loaded is None:
            return
        _loaded = None
        from sdstudio.engine.device import free_device_memory

        free_device_memory()


def loaded_upscaler() -> LoadedUpscaler | None:
    return _loaded


# --------------------------------------------------------------------------------- tiling
def tile_starts(length: int, tile: int, overlap: int) -> list[int]:
    """Where tiles of ``tile`` pixels start along a side of ``length`` so that neighbours
    overlap by at least ``overlap``; the last one ends at the side's end."""
    if length <= tile:
        return [0]
    step = max(1, tile - overlap)
    starts = list(range(0, length - tile, step))
    starts.append(length - tile)
    return starts


def _ramp(length: int, fade_start: int, fade_end: int) -> torch.Tensor:
    """Weights along one side of a tile's output: rising over the first ``fade_start``
    pixels, falling over the last ``fade_end`` (0 = no fade), 1 between; never 0."""
    import torch

    w = torch.ones(length, dtype=torch.float32)
    if fade_start > 0:
        n = min(fade_start, length)
        w[:n] = (torch.arange(n, dtype=torch.float32) + 0.5) / fade_start
    if fade_end > 0:
        n = min(fade_end, length)
        w[length - n:] = torch.minimum(
            w[length - n:], (torch.arange(n, 0, -1, dtype=torch.float32) - 0.5) / fade_end)
    return w


def upscale_tensor_tiled(
    run: Callable[[torch.Tensor], torch.Tensor],
    image: torch.Tensor,
    scale: int,
    tile: int,
    overlap: int,
    *,
    on_tile: Callable[[], None] | None = None,
    cancel: CancelToken | None = None,
) -> torch.Tensor:
    """``run`` (one tile in, ``scale`` times larger out) over ``image`` (1, C, H, W) in
    overlapping tiles, blended with feathered weights; the result (1, C, H*scale, W*scale)
    float32 on the CPU. ``on_tile()`` after each tile; ``cancel`` checked before each."""
    import torch

    _, channels, height, width = image.shape
    tile = max(1, tile)
    overlap = min(overlap, max(tile - 1, 0))
    ys, xs = tile_starts(height, tile, overlap), tile_starts(width, tile, overlap)
    if len(ys) == 1 and len(xs) == 1:
        if cancel is not None:
            cancel.raise_if_cancelled()
        out = run(image).float().cpu()
        if on_tile is not None:
            on_tile()
        return out
    acc = torch.zeros((channels, height * scale, width * scale), dtype=torch.float32)
    weight = torch.zeros((1, height * scale, width * scale), dtype=torch.float32)
    for iy, y in enumerate(ys):
        th = min(tile, height - y)
        top = (ys[iy - 1] + tile - y) * scale if iy > 0 else 0
        bottom = (y + th - ys[iy + 1]) * scale if iy + 1 < len(ys) else 0
        wy = _ramp(th * scale, top, bottom)
        for ix, x in enumerate(xs):
            if cancel is not None:
                cancel.raise_if_cancelled()
            tw = min(tile, width - x)
            left = (xs[ix - 1] + tile - x) * scale if ix > 0 else 0
            right = (x + tw - xs[ix + 1]) * scale if ix + 1 < len(xs) else 0
            wx = _ramp(tw * scale, left, right)
            out = run(image[:, :, y:y + th, x:x + tw]).float().cpu()[0]
            w = wy[:, None] * wx[None, :]
            ys_out, xs_out = slice(y * scale, (y + th) * scale), slice(x * scale, (x + tw) * scale)
            acc[:, ys_out, xs_out] += out * w
            weight[:, ys_out, xs_out] += w
            if on_tile is not None:
                on_tile()
    return acc.div_(weight).unsqueeze(0)  # in place: the output is the largest buffer


def tile_count(width: int, height: int, tile: int, overlap: int) -> int:
    return len(tile_starts(height, tile, overlap)) * len(tile_starts(width, tile, overlap))


# ------------------------------------------------------------------------------- upscale
def _to_tensor(image: Image.Image) -> torch.Tensor:
    import numpy as np
    import torch

    array = np.asarray(image.convert("RGB"), dtype=np.float32) / 255.0
    return torch.from_numpy(array).permute(2, 0, 1).unsqueeze(0).contiguous()


def _to_image(tensor: torch.Tensor) -> Image.Image:
    import torch

    # in place (the result is ours; inference mode allows it on the model's own output too):
    # a 4x upscale of a 2048 px image is 805 MB in fp32, each copy as much again
    with torch.inference_mode():
        out = tensor[0].clamp_(0, 1).mul_(255).round_()
        array = out.permute(1, 2, 0).to(dtype=torch.uint8).numpy()
    return Image.fromarray(array, "RGB")


def choose_tile(loaded: LoadedUpscaler, image_side: int) -> int:
    """The memory policy's tile side for ``loaded`` on its device."""
    from sdstudio.engine.device import memory_info

    free, _ = memory_info(loaded.device)
    bytes_per_value = 4 if loaded.dtype.itemsize >= 4 else 2
    return memory.choose_upscale_tile(
        loaded.device.type, free, scale=loaded.scale, model_bytes=loaded.model_bytes,
        bytes_per_value=bytes_per_value, image_side=image_side, heavy=loaded.heavy)


def _model_pass(loaded: LoadedUpscaler, image: Image.Image, tile: int | None,
                on_tile: Callable[[], None], cancel: CancelToken | None) -> Image.Image:
    import torch

    side = tile or choose_tile(loaded, max(image.size))
    tensor = _to_tensor(image)

    def run(part: torch.Tensor) -> torch.Tensor:
        with torch.inference_mode():
            return loaded.descriptor(part.to(loaded.device, loaded.dtype))

    try:
        out = upscale_tensor_tiled(run, tensor, loaded.scale, side,
                                   memory.upscale_tile_overlap(side), on_tile=on_tile,
                                   cancel=cancel)
    except torch.cuda.OutOfMemoryError as exc:
        from sdstudio.core.errors import OutOfMemoryError

        raise OutOfMemoryError(f"out of memory upscaling with tiles of {side} px; choose "
                               "a smaller tile size", details=str(exc)) from exc
    return _to_image(out)


def planned_passes(width: int, height: int, dest: tuple[int, int], model_scale: int,
                   scale: float = 2.0) -> int:
    """How many times a ``model_scale`` model runs to reach ``dest`` from ``width`` x
    ``height``, as A1111's ``Upscaler.upscale``: while the image is smaller, at most 3 times;
    never when it is already as large and the factor is not 1; once for a factor of 1 (a 1x
    model restores without enlarging)."""
    passes = 0
    w, h = width, height
    while passes < _MAX_PASSES and (w < dest[0] or h < dest[1] or (passes == 0 and scale == 1)):
        passes += 1
        w, h = w * model_scale, h * model_scale
        if model_scale <= 1:
            break
    return passes


def upscale_image(
    image: Image.Image,
    upscaler: str,
    scale: float = 4.0,
    *,
    size: tuple[int, int] | None = None,
    dirs: Sequence[str] = (),
    device: torch.device | str | None = None,
    dtype: torch.dtype | None = None,
    tile: int | None = None,
    on_progress: ProgressCallback | None = None,
    cancel: CancelToken | None = None,
    allow_path: bool = False,
) -> Image.Image:
    """``image`` upscaled by ``scale`` (or to exactly ``size``) with ``upscaler``; see the
    module's notes. Refuses (RequestError) a factor outside 1-8, a result above the pixel
    limit and latent modes (the hires fix's own); ModelError for an unknown name or a file
    that is not an upscaler; CancelledError when ``cancel`` is set between tiles."""
    name = names.normalise(upscaler)
    kind = names.kind_of(name)
    if kind == "latent":
        raise RequestError("upscaler", f"{name} upscales latents, in the hires fix only; "
                           "pick a pixel upscaler")
    width, height = image.size
    if size is not None:
        names.check_result_size(*size, field="size")
        if size[0] < 1 or size[1] < 1:
            raise RequestError("size", f"size {size[0]}x{size[1]} has no pixels")
        scale = max(size[0] / width, size[1] / height)
        dest = (max(8, int(width * scale // 8 * 8)), max(8, int(height * scale // 8 * 8)))
        names.check_result_size(*dest)
    else:
        dest = names.target_size(width, height, scale)
    alpha = image.getchannel("A") if "A" in image.getbands() else None
    rgb = image if image.mode == "RGB" else image.convert("RGB")
    if kind == "builtin":
        if on_progress is not None:
            on_progress(0, 1)
        if name == names.NONE:
            out = rgb
        else:
            resample = Image.Resampling.LANCZOS if name == names.LANCZOS else (
                Image.Resampling.NEAREST)
            out = rgb.resize((int(width * scale), int(height * scale)), resample=resample)
        if on_progress is not None:
            on_progress(1, 1)
    else:
        path = resolve_upscaler(name, dirs, allow_path=allow_path)
        loaded = load_upscaler(path, device, dtype)
        passes = planned_passes(width, height, dest, loaded.scale, scale)
        side = tile or choose_tile(loaded, max(width, height) * loaded.scale ** max(passes - 1, 0))
        total, w, h = 0, width, height
        for _ in range(passes):
            total += tile_count(w, h, side, memory.upscale_tile_overlap(side))
            w, h = w * loaded.scale, h * loaded.scale
        done = [0]

        def on_tile() -> None:
            done[0] += 1
            if on_progress is not None:
                on_progress(done[0], total)

        if on_progress is not None:
            on_progress(0, max(total, 1))
        out = rgb
        for _ in range(passes):
            out = _model_pass(loaded, out, side, on_tile, cancel)
        if not passes and on_progress is not None:  # already as large: resized only
            on_progress(1, 1)
    if out.size != dest:
        out = out.resize(dest, resample=Image.Resampling.LANCZOS)
    if size is not None and out.size != (size[0], size[1]):
        out = out.resize((size[0], size[1]), resample=Image.Resampling.LANCZOS)
    if alpha is not None:
        out.putalpha(alpha.resize(out.size, resample=Image.Resampling.LANCZOS))
    return out


def describe_loaded(loaded: LoadedUpscaler) -> str:
    """``ESRGAN 4x (fp16, cuda)`` for notes and logs."""
    from sdstudio.engine.device import DTYPE_NAMES

    dtype = DTYPE_NAMES.get(loaded.dtype, str(loaded.dtype))
    return f"{loaded.architecture} {loaded.scale}x ({dtype}, {loaded.device.type})"


__all__ = ["LoadedUpscaler", "describe_loaded", "list_upscalers", "load_upscaler",
           "loaded_upscaler", "resolve_upscaler", "tile_starts", "unload_upscaler",
           "upscale_image", "upscale_tensor_tiled", "upscaler_dirs"]
