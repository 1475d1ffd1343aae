"""Typed settings, persisted as JSON under the platform's config folder (see core.paths).

``EngineSettings`` is what the engine needs (device, precision, memory savers, model folders);
``Settings`` is everything the app keeps between launches. Loading never fails: a missing file
gives the defaults; a corrupt one (not JSON, nested too deeply, too large, not a regular file) is
moved aside to ``settings.json.bad-<time>`` and the defaults used.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import tempfile
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sdstudio.core import paths, safejson

DEVICES_HINT = ("auto", "cuda", "mps", "cpu")  # "cuda:1" etc. are accepted too
PRECISIONS = ("auto", "fp16", "bf16", "fp32")
MEMORY_MODES = ("auto", "low", "off")  # auto = decided from free memory; low = every saver
TRISTATE = ("auto", "on", "off")
# A1111's "Live preview method" names: the linear latent map, or a TAESD decoder when present
PREVIEW_METHODS = ("Approx cheap", "TAESD")
DEFAULT_FILENAME_PATTERN = "{index}-{seed}"
MAX_CACHED_CHECKPOINTS = 8  # the most EngineSettings.checkpoint_cache may ask for


@dataclass(frozen=True)
class EngineSettings:
    device: str = "auto"
    precision: str = "auto"
    memory_mode: str = "auto"
    # per-saver overrides of the memory mode
    attention_slicing: str = "auto"
    vae_slicing: str = "auto"
    vae_tiling: str = "auto"
    cpu_offload: str = "auto"
    preview_every: int = 1  # 0 = no previews
    preview_method: str = "Approx cheap"  # one of PREVIEW_METHODS (A1111's Live preview method)
    cpu_threads: int = 0  # torch CPU threads; 0 = automatic (core/threads.py)
    # models kept in RAM besides the one in use; -1 = automatic (engine/model_cache.py)
    checkpoint_cache: int = -1
    compile_unet: bool = False  # Speed: compile (torch.compile of the UNet; engine/accel.py)
    default_model: str = ""  # "" = the built-in demo model
    model_dirs: tuple[str, ...] = ()
    vae_dirs: tuple[str, ...] = ()
    lora_dirs: tuple[str, ...] = ()
    embedding_dirs: tuple[str, ...] = ()
    upscaler_dirs: tuple[str, ...] = ()  # besides paths.upscaler_dir()
    controlnet_dirs: tuple[str, ...] = ()  # besides paths.model_dir("controlnet")

    def replace(self, **changes: Any) -> EngineSettings:
        return dataclasses.replace(self, **changes)


API_DEFAULT_HOST = "127.0.0.1"
API_DEFAULT_PORT = 7860  # AUTOMATIC1111's port: clients look there first


@dataclass(frozen=True)
class ApiSettings:
    """The AUTOMATIC1111-compatible HTTP API the window serves (``sdstudio.api``): off until
    the person allows it; on this computer only unless another address is chosen (then a
    token is required); CORS off unless origins are listed."""

    enabled: bool = False
    host: str = API_DEFAULT_HOST
    port: int = API_DEFAULT_PORT
    token: str = ""  # "" = none (refused for an address other than this computer's)
    cors_origins: tuple[str, ...] = ()

    def replace(self, **changes: Any) -> ApiSettings:
        return dataclasses.replace(self, **changes)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ApiSettings:
        kwargs: dict[str, Any] = {}
        for f in dataclasses.fields(cls):
            value = data.get(f.name)
            if isinstance(f.default, bool):
                if isinstance(value, bool):
                    kwargs[f.name] = value
            elif isinstance(f.default, int):
                if type(value) is int and 0 <= value <= 65535:
                    kwargs[f.name] = value
            elif isinstance(f.default, str):
                if isinstance(value, str):
                    kwargs[f.name] = value
            elif isinstance(value, list):
                kwargs[f.name] = tuple(str(v) for v in value)
        return cls(**kwargs)


@dataclass(frozen=True)
class DownloadSettings:
    """Tokens for model downloads (``sdstudio.downloads``): sent only to their own site, never
    logged, printed or written into an image."""

    civitai_token: str = ""  # "" = none (public files only)
    hf_token: str = ""  # "" = none (gated Hugging Face repositories need one)

    def __repr__(self) -> str:  # tokens never reach a log through repr()
        return (f"DownloadSettings(civitai_token={'***' if self.civitai_token else ''!r}, "
                f"hf_token={'***' if self.hf_token else ''!r})")

    def replace(self, **changes: Any) -> DownloadSettings:
        return dataclasses.replace(self, **changes)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> DownloadSettings:
        return cls(**{f.name: data[f.name] for f in dataclasses.fields(cls)
                      if isinstance(data.get(f.name), str)})


MODEL_DEFAULTS_LIMIT = 2000  # models with their own defaults kept in the settings
MAX_DEFAULT_SIDE = 8192
MODEL_KEY_SUFFIXES = (".safetensors", ".ckpt", ".pt", ".pth", ".bin")


def model_key(model: str) -> str:
    """The name per-model defaults are kept under: the file's name without its model suffix
    (a diffusers folder's name), so a model keeps its defaults when its folder moves."""
    name = model.replace("\\", "/").rstrip("/").rsplit("/", 1)[-1]
    for suffix in MODEL_KEY_SUFFIXES:
        if name.lower().endswith(suffix):
            return name[: -len(suffix)]
    return name


@dataclass(frozen=True)
class ModelDefaults:
    """What the window's prompt panel takes when the model is chosen in the model bar (the
    model manager's per-model defaults). 0 / "" leave the panel's value as it is."""

    width: int = 0
    height: int = 0
    clip_skip: int = 0  # 0 = unchanged; else 1..12 as the request's clip skip
    vae: str = ""  # a VAE name or file, as the panel's VAE control takes it

    @property
    def empty(self) -> bool:
        return self == ModelDefaults()

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ModelDefaults:
        """Tolerant: a value of the wrong type or out of range is dropped, not an error."""
        kwargs: dict[str, Any] = {}
        for key, top in (("width", MAX_DEFAULT_SIDE), ("height", MAX_DEFAULT_SIDE),
                         ("clip_skip", 12)):
            value = data.get(key)
            if type(value) is int and 0 <= value <= top:
                kwargs[key] = value
        vae = data.get("vae")
        if isinstance(vae, str) and len(vae) <= 1024 and "\x00" not in vae:
            kwargs["vae"] = vae
        return cls(**kwargs)


def _model_defaults(data: Any) -> dict[str, ModelDefaults]:
    out: dict[str, ModelDefaults] = {}
    if not isinstance(data, Mapping):
        return out
    for key, value in data.items():
        if len(out) >= MODEL_DEFAULTS_LIMIT:
            break
        if isinstance(key, str) and key and len(key) <= 512 and isinstance(value, Mapping):
            defaults = ModelDefaults.from_dict(value)
            if not defaults.empty:
                out[key] = defaults
    return out


@dataclass(frozen=True)
class Settings:
    output_dir: str = ""  # "" = paths.default_output_dir()
    filename_pattern: str = DEFAULT_FILENAME_PATTERN
    engine: EngineSettings = field(default_factory=EngineSettings)
    api: ApiSettings = field(default_factory=ApiSettings)
    downloads: DownloadSettings = field(default_factory=DownloadSettings)
    last_request: Mapping[str, Any] = field(default_factory=dict)  # the prompt panel's values
    ui: Mapping[str, Any] = field(default_factory=dict)  # window geometry, splitter sizes...
    # per-model defaults (the model manager), by core.settings.model_key of the model
    model_defaults: Mapping[str, ModelDefaults] = field(default_factory=dict)

    @property
    def output_path(self) -> Path:
        return Path(self.output_dir).expanduser() if self.output_dir else paths.default_output_dir()

    def replace(self, **changes: Any) -> Settings:
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        data["engine"] = {k: list(v) if isinstance(v, tuple) else v
                          for k, v in dataclasses.asdict(self.engine).items()}
        data["api"] = {k: list(v) if isinstance(v, tuple) else v
                       for k, v in dataclasses.asdict(self.api).items()}
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Settings:
        engine_fields = {f.name: f for f in dataclasses.fields(EngineSettings)}
        engine_kwargs: dict[str, Any] = {}
        for key, value in dict(data.get("engine") or {}).items():
            if key not in engine_fields:
                continue
            default = engine_fields[key].default
            if isinstance(default, tuple):
                if isinstance(value, str):  # one folder written as a string
                    value = [value]
                value = tuple(str(v) for v in value or ())
            elif (isinstance(default, bool) and not isinstance(value, bool)) or (
                isinstance(default, int) and not isinstance(value, int)) or (
                isinstance(default, str) and not isinstance(value, str)
            ):
                continue
            engine_kwargs[key] = value
        kwargs: dict[str, Any] = {"engine": EngineSettings(**engine_kwargs)}
        if isinstance(data.get("api"), Mapping):
            kwargs["api"] = ApiSettings.from_dict(data["api"])
        if isinstance(data.get("downloads"), Mapping):
            kwargs["downloads"] = DownloadSettings.from_dict(data["downloads"])
        for key in ("output_dir", "filename_pattern"):
            if isinstance(data.get(key), str):
                kwargs[key] = data[key]
        for key in ("last_request", "ui"):
            if isinstance(data.get(key), Mapping):
                kwargs[key] = dict(data[key])
        kwargs["model_defaults"] = _model_defaults(data.get("model_defaults"))
        return cls(**kwargs)


def settings_path() -> Path:
    return paths.config_dir() / "settings.json"


MAX_SETTINGS_BYTES = 4 * 1024 * 1024  # a real settings file is a few KB
MAX_SETTINGS_DEPTH = 32


def load_settings(path: Path | None = None) -> Settings:
    path = path or settings_path()
    try:
        raw = safejson.read_limited(path, MAX_SETTINGS_BYTES)
    except safejson.JSONLimitError:
        return _set_aside(path)
    except OSError:  # missing (the first launch) or unreadable
        return Settings()
    try:
        data = safejson.loads(raw, max_bytes=MAX_SETTINGS_BYTES, max_depth=MAX_SETTINGS_DEPTH)
        if not isinstance(data, Mapping):
            raise ValueError("not an object")
        return Settings.from_dict(data)
    except (ValueError, TypeError):
        return _set_aside(path)


def _set_aside(path: Path) -> Settings:
    """Move a damaged settings file aside (``settings.json.bad-<time>``, kept for the person
    to look at) and use the defaults: one bad file must not break every command."""
    with contextlib.suppress(OSError):
        os.replace(path, path.with_name(f"{path.name}.bad-{time.strftime('%Y%m%d-%H%M%S')}"))
    return Settings()


def save_settings(settings: Settings, path: Path | None = None) -> Path:
    """Write atomically: a temp file in the same folder, fsync, then rename over the old one."""
    path = path or settings_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".settings-", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            json.dump(settings.to_dict(), fh, indent=2, sort_keys=True)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path
