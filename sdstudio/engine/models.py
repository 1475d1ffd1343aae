"""Model sources: resolve a reference, detect the architecture, load local files safely.

A reference is one of:
- ``""``: ``settings.default_model``, else the built-in tiny demo model (built on first use);
- a path to a diffusers folder (``model_index.json``);
- a path to a single checkpoint file -> ``sdstudio.engine.single_file.load_single_file``;
- a bare name looked up in ``settings.model_dirs`` ->
  ``sdstudio.engine.library.resolve_model_name``;
- a Hugging Face repo id ``org/name``: only through the standard HF cache; offline
  (``HF_HUB_OFFLINE=1``) or without network it fails at once with a ModelError.

Loading is local-files-only and safetensors-only. Weight files are checked before loading (a
safetensors header that does not parse, or a file shorter than its header says, is refused
with the file's name), so a corrupt model never reaches torch.
"""

from __future__ import annotations

import contextlib
import os
import re
import socket
import struct
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sdstudio.core import paths, safejson
from sdstudio.core.errors import ModelError
from sdstudio.core.settings import EngineSettings
from sdstudio.engine import checkpoint, library, single_file, tiny
from sdstudio.engine.arch import ARCHS as ARCHS  # re-exported: models.detect_arch & co
from sdstudio.engine.arch import arch_from_configs as arch_from_configs
from sdstudio.engine.arch import arch_from_pipe as arch_from_pipe
from sdstudio.engine.arch import detect_arch as detect_arch
from sdstudio.engine.arch import read_json as read_json
from sdstudio.engine.config_check import check_model_index

if TYPE_CHECKING:
    from diffusers import DiffusionPipeline

_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.\-]*/[\w.\-]+$")
_SD_COMPONENTS = ("unet", "vae", "text_encoder")
_MAX_HEADER = 100 * 1024 * 1024
HUB_REQUEST_TIMEOUT_S = 10.0  # each request of a download
HUB_STALL_TIMEOUT_S = 60.0  # a download with no progress for this long is given up


@dataclass(frozen=True)
class ModelSource:
    kind: str  # "folder", "file" or "hub"
    path: Path  # the local folder / file (for "hub": the snapshot folder in the HF cache)
    name: str  # shown to the user and written into the metadata
    ref: str  # the reference as given (after default resolution)
    untrained: bool = False


def _is_offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on")


ProgressCallback = Callable[[str, "float | None"], None]


def resolve(ref: str, settings: EngineSettings,
            on_progress: ProgressCallback | None = None) -> ModelSource:
    """Turn a model reference into a local source. Raises ModelError; never downloads unless
    online and given a hub id (then ``on_progress(message, fraction)`` follows the download)."""
    ref = (ref or "").strip() or (settings.default_model or "").strip()
    if not ref:
        folder = tiny.ensure_demo_model()
        return ModelSource("folder", folder, paths.DEMO_NAME, "", True)
    path = Path(ref).expanduser()
    if path.exists():
        return _local_source(path, ref)
    looks_like_path = any(sep in ref for sep in ("\\",)) or ref.startswith((".", "~", "/")) or (
        len(ref) > 1 and ref[1] == ":"
    )
    if not looks_like_path:
        dirs = paths.search_dirs("checkpoint", settings)
        found = _find_in_dirs(ref, dirs)
        if found is not None:
            return _local_source(found, ref)
        if _HUB_ID.match(ref):
            return _hub_source(ref, on_progress)
        if dirs:
            raise ModelError(
                f"model {ref!r} was not found in the model folders "
                f"({', '.join(dirs)})"
            )
    raise ModelError(f"model path does not exist: {ref}")


def _local_source(path: Path, ref: str) -> ModelSource:
    path = path.resolve()
    if path.is_dir():
        check_diffusers_folder(path)
        untrained = tiny.is_tiny_model(path)
        name = path.name + (" (untrained)" if untrained else "")
        return ModelSource("folder", path, name, ref, untrained)
    if path.is_file():
        return ModelSource("file", path, path.stem, ref)
    raise ModelError(f"{path} is neither a folder nor a file")


def _find_in_dirs(name: str, dirs: tuple[str, ...]) -> Path | None:
    if not dirs:
        return None
    return library.resolve_model_name(name, dirs)


def download_progress_class(repo_id: str, on_progress: ProgressCallback) -> type:
    """A tqdm class for ``snapshot_download(tqdm_class=...)`` that reports each bar's
    progress as ``on_progress("Downloading <repo>: <what> 3/7", 0.43)``, at most ~10 times a
    second per bar, instead of printing it."""
    from tqdm.auto import tqdm

    class _Progress(tqdm):
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            kwargs["disable"] = False
            kwargs["file"] = open(os.devnull, "w")  # noqa: SIM115 - closed in close()
            self._sink = kwargs["file"]
            self._reported = 0.0
            super().__init__(*args, **kwargs)

        def update(self, n: float | None = 1) -> bool | None:
            result = super().update(n)
            now = self._time()
            if now - self._reported >= 0.1 or (self.total and self.n >= self.total):
                self._reported = now
                what = f"{self.desc}: " if self.desc else ""
                fraction = (self.n / self.total) if self.total else None
                amount = (f"{self.n / 2**20:.1f}/{self.total / 2**20:.1f} MiB"
                          if self.unit == "B" and self.total else
                          f"{self.n:g}/{self.total:g}" if self.total else f"{self.n:g}")
                on_progress(f"Downloading {repo_id}: {what}{amount}", fraction)
            return result

        def close(self) -> None:
            super().close()
            self._sink.close()

    return _Progress


def _hub_source(repo_id: str, on_progress: ProgressCallback | None = None) -> ModelSource:
    if _is_offline():
        cached = _hub_cached(repo_id)
        if cached is not None:
            return ModelSource("hub", cached, repo_id, repo_id)
        raise ModelError(
            f"{repo_id!r} is not a local path and the Hugging Face hub is off "
            "(HF_HUB_OFFLINE=1) with no cached copy; give a local model folder or file"
        )
    if not _hub_reachable():
        cached = _hub_cached(repo_id)
        if cached is not None:
            return ModelSource("hub", cached, repo_id, repo_id)
        raise ModelError(
            f"{repo_id!r} is not a local path and huggingface.co cannot be reached; "
            "give a local model folder or file"
        )
    return ModelSource("hub", _download(repo_id, on_progress), repo_id, repo_id)


def _download(repo_id: str, on_progress: ProgressCallback | None) -> Path:
    """``snapshot_download`` with a time bound: each request times out after
    :data:`HUB_REQUEST_TIMEOUT_S`, and the download as a whole is given up (ModelError) once
    nothing has moved for :data:`HUB_STALL_TIMEOUT_S` (a name lookup or a server that hangs,
    which no socket timeout covers). A download given up keeps running in its daemon thread
    until its own timeouts end it; the person gets their answer at once."""
    from huggingface_hub import snapshot_download

    activity = [time.monotonic()]

    def progress(message: str, fraction: float | None) -> None:
        activity[0] = time.monotonic()
        if on_progress is not None:
            on_progress(message, fraction)

    result: list[Path] = []
    failure: list[BaseException] = []

    def work() -> None:
        try:
            result.append(Path(str(snapshot_download(
                repo_id,
                allow_patterns=["model_index.json", "*/*.json", "*/*.txt", "*/*.safetensors"],
                ignore_patterns=["*.fp16.safetensors", "*non_ema*", "*.ema.*"],
                tqdm_class=download_progress_class(repo_id, progress),
                etag_timeout=HUB_REQUEST_TIMEOUT_S,
            ))))
        except BaseException as exc:
            failure.append(exc)

    thread = threading.Thread(target=work, name="sdstudio-hub-download", daemon=True)
    thread.start()
    while True:
        thread.join(0.1)
        if not thread.is_alive():
            break
        if time.monotonic() - activity[0] > HUB_STALL_TIMEOUT_S:
            raise ModelError(f"could not download {repo_id!r}: nothing received for "
                             f"{HUB_STALL_TIMEOUT_S:g} s (the hub or the network hangs)")
    if failure:
        exc = failure[0]
        if isinstance(exc, ModelError):
            raise exc
        raise ModelError(f"could not download {repo_id!r}: {exc}", repr(exc)) from exc
    return result[0]


def _hub_cached(repo_id: str) -> Path | None:
    try:
        from huggingface_hub import snapshot_download

        folder = Path(snapshot_download(repo_id, local_files_only=True))
    except Exception:
        return None
    return folder if (folder / "model_index.json").is_file() else None


def _hub_reachable(timeout: float = 1.5) -> bool:  # offline must fail in < 2 s (issue 3)
    """Whether the hub's host accepts a connection, answered within ``timeout`` seconds in
    all: the connection runs in a daemon thread, since the socket timeout does not cover the
    name lookup (``getaddrinfo`` can hang for much longer)."""
    endpoint = os.environ.get("HF_ENDPOINT", "https://huggingface.co")
    host = re.sub(r"^https?://", "", endpoint).split("/")[0].split(":")[0]
    answer: list[bool] = []

    def probe() -> None:
        try:
            with socket.create_connection((host, 443), timeout=timeout):
                answer.append(True)
        except OSError:
            answer.append(False)

    thread = threading.Thread(target=probe, name="sdstudio-hub-probe", daemon=True)
    thread.start()
    thread.join(timeout)
    return bool(answer and answer[0])


# ------------------------------------------------------------------------- folder checks
def check_safetensors(path: Path) -> None:
    """Refuse a safetensors file whose header does not parse or whose data is cut short."""
    try:
        size = checkpoint.require_regular_file(path).st_size  # a FIFO would block the read
        with open(path, "rb") as fh:
            raw = fh.read(8)
            if len(raw) < 8:
                raise ModelError(f"weight file {path} is truncated (empty or too short)")
            (header_len,) = struct.unpack("<Q", raw)
            if header_len <= 1 or header_len > _MAX_HEADER or 8 + header_len > size:
                raise ModelError(f"weight file {path} is not a valid safetensors file "
                                 "(corrupt header)")
            text = fh.read(header_len)
        if (count := text.count(b'"data_offsets"')) > checkpoint.MAX_TENSORS:
            raise ModelError(f"weight file {path} lists {count} tensors "
                             f"(at most {checkpoint.MAX_TENSORS})")
        header = safejson.loads(text, max_bytes=_MAX_HEADER,
                                max_depth=checkpoint.MAX_HEADER_DEPTH)
    except ModelError:
        raise
    except (OSError, ValueError) as exc:
        raise ModelError(f"weight file {path} is not a valid safetensors file: {exc}") from exc
    if not isinstance(header, dict):
        raise ModelError(f"weight file {path} is not a valid safetensors file (bad header)")
    end = 0
    for key, entry in header.items():
        if key == "__metadata__":
            continue
        offsets = entry.get("data_offsets") if isinstance(entry, dict) else None
        if not (isinstance(offsets, list) and len(offsets) == 2):
            raise ModelError(f"weight file {path} is not a valid safetensors file (bad entry)")
        end = max(end, int(offsets[1]))
    if 8 + header_len + end > size:
        raise ModelError(f"weight file {path} is truncated ({size} bytes, "
                         f"needs {8 + header_len + end})")


def check_diffusers_folder(folder: Path) -> dict[str, Any]:
    """Check that ``folder`` is a loadable diffusers model; return its model_index."""
    index_path = folder / "model_index.json"
    if not index_path.is_file():
        raise ModelError(
            f"{folder} is not a model folder (no model_index.json); give a diffusers model "
            "folder or a checkpoint file"
        )
    index = check_model_index(checkpoint.read_config_json(index_path), str(folder))
    for name in (*_SD_COMPONENTS, "text_encoder_2"):
        entry = index.get(name)
        if name == "text_encoder_2" and not entry:
            continue
        if not (isinstance(entry, list) and entry and entry[0]):
            raise ModelError(f"{folder} has no {name} in model_index.json")
        sub = folder / name
        if not (sub / "config.json").is_file():
            raise ModelError(f"{folder} is missing {name}/config.json")
        checkpoint.read_config_json(sub / "config.json")  # bounded: diffusers' read is not
        weights = sorted(sub.glob("*.safetensors"))
        if not weights:
            pickles = [p.name for p in sub.iterdir() if p.suffix in (".bin", ".ckpt", ".pt")]
            if pickles:
                raise ModelError(
                    f"{sub} has only pickle weights ({', '.join(pickles)}); SD Studio loads "
                    "safetensors only (convert them with `sdstudio convert`)"
                )
            raise ModelError(f"{sub} has no weight file (*.safetensors)")
        for weight in weights:
            check_safetensors(weight)
    for extra in ("scheduler/scheduler_config.json", "tokenizer/special_tokens_map.json",
                  "tokenizer/tokenizer_config.json"):
        if (folder / extra).exists():  # read later by detect_arch and the tokenizer
            checkpoint.read_config_json(folder / extra)
    return index


def weights_size(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*.safetensors") if p.is_file())


# ---------------------------------------------------------------------------- loading
@contextlib.contextmanager
def quiet_progress() -> Iterator[None]:
    """No tqdm bars from diffusers/transformers while loading (the engine reports
    LoadProgress events itself)."""
    from diffusers.utils import logging as d_logging
    from transformers.utils import logging as t_logging

    d_on, t_on = d_logging.is_progress_bar_enabled(), t_logging.is_progress_bar_enabled()
    d_logging.disable_progress_bar()
    t_logging.disable_progress_bar()
    try:
        yield
    finally:
        if d_on:
            d_logging.enable_progress_bar()
        if t_on:
            t_logging.enable_progress_bar()


def pipeline_class(arch: str) -> type[DiffusionPipeline]:
    from diffusers import StableDiffusionPipeline, StableDiffusionXLPipeline

    return StableDiffusionXLPipeline if arch.startswith("sdxl") else StableDiffusionPipeline


def load_pipeline(source: ModelSource, arch: str | None, *, device: Any, dtype: Any,
                  settings: EngineSettings) -> Any:
    """Load the components as a txt2img pipeline (weights on the CPU; the caller moves them)."""
    if source.kind == "file":
        return single_file.load_single_file(source.path, device=device, dtype=dtype,
                                            settings=settings)
    assert arch is not None
    cls = pipeline_class(arch)
    kwargs: dict[str, Any] = {
        "dtype": dtype,
        "use_safetensors": True,
        "local_files_only": True,
    }
    if not arch.startswith("sdxl"):
        kwargs.update(safety_checker=None, feature_extractor=None, requires_safety_checker=False)
    try:
        with quiet_progress():
            return cls.from_pretrained(str(source.path), **kwargs)
    except ModelError:
        raise
    except Exception as exc:
        raise ModelError(f"could not load the model in {source.path}: {exc}", repr(exc)) from exc
