"""Platform folders for settings, data (demo model, inputs), logs and outputs.

``SDSTUDIO_HOME`` puts every folder under one root (tests and portable installs use it);
``SDSTUDIO_CONFIG_DIR`` / ``SDSTUDIO_DATA_DIR`` / ``SDSTUDIO_LOG_DIR`` override one each.
Otherwise: XDG on Linux, ~/Library on macOS, %APPDATA% / %LOCALAPPDATA% on Windows.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

APP = "sdstudio"


def _home_override(sub: str) -> Path | None:
    root = os.environ.get("SDSTUDIO_HOME")
    return Path(root).expanduser() / sub if root else None


def _pick(env: str, sub: str, linux_var: str, linux_default: str, mac: str, win_var: str) -> Path:
    if os.environ.get(env):
        return Path(os.environ[env]).expanduser()
    override = _home_override(sub)
    if override is not None:
        return override
    if sys.platform == "win32":
        base = os.environ.get(win_var) or str(Path.home() / "AppData" / "Local")
        return Path(base) / "SD Studio" / sub
    if sys.platform == "darwin":
        return Path.home() / "Library" / mac / "SD Studio"
    base = os.environ.get(linux_var) or str(Path.home() / linux_default)
    return Path(base) / APP


def config_dir() -> Path:
    return _pick("SDSTUDIO_CONFIG_DIR", "config", "XDG_CONFIG_HOME", ".config",
                 "Preferences", "APPDATA")


def data_dir() -> Path:
    return _pick("SDSTUDIO_DATA_DIR", "data", "XDG_DATA_HOME", ".local/share",
                 "Application Support", "LOCALAPPDATA")


def log_dir() -> Path:
    if os.environ.get("SDSTUDIO_LOG_DIR"):
        return Path(os.environ["SDSTUDIO_LOG_DIR"]).expanduser()
    override = _home_override("logs")
    if override is not None:
        return override
    if sys.platform == "darwin":
        return Path.home() / "Library" / "Logs" / "SD Studio"
    return _pick("SDSTUDIO_LOG_DIR", "logs", "XDG_STATE_HOME", ".local/state",
                 "Logs", "LOCALAPPDATA") / ("logs" if sys.platform != "win32" else "")


def cache_dir() -> Path:
    return _pick("SDSTUDIO_CACHE_DIR", "cache", "XDG_CACHE_HOME", ".cache",
                 "Caches", "LOCALAPPDATA")


def default_output_dir() -> Path:
    override = _home_override("outputs")
    if override is not None:
        return override
    pictures = Path.home() / "Pictures"
    return (pictures if pictures.is_dir() else Path.home()) / "SD Studio"


DEMO_NAME = "sdstudio-demo-tiny (untrained)"  # the built-in demo model's name everywhere


def demo_model_dir() -> Path:
    return data_dir() / "models" / "sdstudio-demo-tiny"


# SD Studio's own model folders by kind (under data_dir()/models): where downloads land and
# where the engine looks besides the configured and detected folders.
MODEL_KINDS: dict[str, str] = {
    "checkpoint": "checkpoints",
    "lora": "loras",
    "vae": "vae",
    "embedding": "embeddings",
    "upscaler": "upscalers",
    "controlnet": "controlnet",  # ControlNets, T2I-Adapters and IP-Adapters
    "clip_vision": "clip_vision",  # CLIP image encoders for IP-Adapters
    "vae_approx": "vae_approx",  # TAESD preview decoders
}


def model_dir(kind: str) -> Path:
    """SD Studio's own folder for one kind of model file (a key of :data:`MODEL_KINDS`)."""
    try:
        return data_dir() / "models" / MODEL_KINDS[kind]
    except KeyError:
        raise ValueError(f"unknown model kind {kind!r}") from None


# the EngineSettings field that lists the configured folders of each kind
SETTINGS_DIRS = {"checkpoint": "model_dirs", "lora": "lora_dirs", "vae": "vae_dirs",
                 "embedding": "embedding_dirs", "upscaler": "upscaler_dirs",
                 "controlnet": "controlnet_dirs"}


def search_dirs(kind: str, settings: object = None) -> tuple[str, ...]:
    """Where files of ``kind`` are looked for: SD Studio's own folder
    (:func:`model_dir`, where downloads land) when it exists, then the folders configured in
    ``settings`` (an ``EngineSettings``; its :data:`SETTINGS_DIRS` field), without repeats."""
    own = model_dir(kind)
    configured = tuple(str(d) for d in getattr(settings, SETTINGS_DIRS.get(kind, ""), ()) or ())
    mine = (str(own),) if own.is_dir() else ()
    return (*mine, *(d for d in configured if d not in mine))


def upscaler_dir() -> Path:
    """SD Studio's own folder of upscaler model files (ESRGAN, Real-ESRGAN, SwinIR, ...)."""
    return model_dir("upscaler")


def inputs_dir() -> Path:
    """Where the window keeps pasted / painted init images and masks (content-addressed)."""
    return data_dir() / "inputs"


def resources_dir() -> Path:
    return Path(__file__).resolve().parents[2] / "resources"


ADDON_SUFFIXES = (".safetensors", ".ckpt", ".pt", ".pth")  # VAE and LoRA files


def named_files(dirs: tuple[str, ...] | list[str], suffixes: tuple[str, ...] = ADDON_SUFFIXES,
                limit: int = 2000) -> list[tuple[str, Path]]:
    """(name, path) of the files in ``dirs`` (recursively, at most ``limit``), named as the
    engine resolves them: the path relative to its folder, without the suffix. Sorted by
    name; unreadable folders are skipped."""
    out: dict[str, Path] = {}
    for folder in dirs:
        base = Path(folder).expanduser()
        try:
            for root, subdirs, files in os.walk(base):
                subdirs.sort()
                for name in sorted(files):
                    if Path(name).suffix.lower() in suffixes:
                        path = Path(root) / name
                        rel = path.relative_to(base).with_suffix("").as_posix()
                        out.setdefault(rel, path)
                        if len(out) >= limit:
                            return sorted(out.items())
        except OSError:
            continue
    return sorted(out.items())
