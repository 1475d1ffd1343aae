"""Model folders of other Stable Diffusion apps installed on this computer.

Finds installs of AUTOMATIC1111's web UI, Forge (and reForge), ComfyUI (git, portable and
Desktop), InvokeAI, Fooocus and SwarmUI in the usual places (the home folder and its Desktop,
Documents and Downloads, ``/opt``, ``~/Applications``, Windows drives' roots, and folders named
like ``AI`` or ``SD`` in those), reads where each keeps its checkpoints, LoRAs, VAEs and
embeddings, and counts the model files there:

* AUTOMATIC1111 / Forge: ``models/Stable-diffusion``, ``models/Lora`` (+ ``models/LyCORIS``),
  ``models/VAE``, ``embeddings``, the upscaler folders ``models/ESRGAN``,
  ``models/RealESRGAN``, ``models/SwinIR``, ``models/DAT``; ``--data-dir``, ``--ckpt-dir``,
  ``--lora-dir``, ``--lyco-dir``, ``--vae-dir``, ``--embeddings-dir``, the upscalers'
  ``--esrgan-models-path`` & co. and Forge's ``--forge-ref-a1111-home`` in
  ``COMMANDLINE_ARGS`` of ``webui-user.bat`` / ``webui-user.sh``.
* ComfyUI: ``models/checkpoints`` (+ ``models/diffusers``), ``models/loras``, ``models/vae``,
  ``models/embeddings``, ``models/upscale_models``; ``extra_model_paths.yaml`` next to it and
  the Desktop app's ``extra_models_config.yaml`` (``base_path`` + one or more folders per
  kind, as ``utils/extra_config.py`` reads them).
* InvokeAI: the root is ``$INVOKEAI_ROOT`` or ``~/invokeai``; ``models_dir`` from
  ``invokeai.yaml`` (top level in 4.x+, under ``InvokeAI: Paths:`` in 3.x; default
  ``models``); models in ``<base>/<type>/`` (``main``, ``lora``, ``vae``, ``embedding``) up to
  5.x, one folder per model key after that (offered as one checkpoint folder: SD Studio lists
  only the checkpoints in it).
* Fooocus: ``path_checkpoints``, ``path_loras`` (a folder or a list), ``path_embeddings``,
  ``path_vae`` from ``config.txt`` (JSON), else ``models/checkpoints`` and so on.
* SwarmUI: ``Data/Settings.fds``, section ``Paths``: ``ModelRoot`` (default ``Models``;
  ``;`` separates several) and ``SDModelFolder`` / ``SDLoraFolder`` / ``SDVAEFolder`` /
  ``SDEmbeddingFolder`` (defaults ``Stable-Diffusion``, ``Lora``, ``VAE``, ``Embeddings``).

Config files are untrusted text: read at most :data:`MAX_CONFIG_BYTES` from regular files
only, parsed as data (JSON within limits, a small YAML / FDS subset; nothing is executed or
imported); a path they give must be a plain absolute or relative folder name (no NUL or
control characters, at most :data:`MAX_PATH_CHARS`, no ``\\\\server`` network share, which
would make Windows contact that server) and must be a folder that exists. Everything is read
with the person's own rights; nothing is written.

Bounded: each folder is walked at most :data:`MAX_DEPTH` levels deep and counted up to
:data:`MAX_FILES` files; the whole search stops at a time budget (:func:`find_other_apps`'s
``budget_s``), reporting ``complete=False``. It blocks while it runs: call it from a
background thread (the welcome panel does). Pure Python: no Qt, no torch.
"""

from __future__ import annotations

import fnmatch
import os
import re
import shlex
import sys
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sdstudio.core import safejson
from sdstudio.core.settings import EngineSettings

APPS = ("AUTOMATIC1111", "Forge", "ComfyUI", "InvokeAI", "Fooocus", "SwarmUI")
KINDS = ("checkpoints", "loras", "vae", "embeddings", "upscalers", "controlnet")
#: The EngineSettings field each kind of folder goes to.
SETTING_FOR_KIND = {"checkpoints": "model_dirs", "loras": "lora_dirs", "vae": "vae_dirs",
                    "embeddings": "embedding_dirs", "upscalers": "upscaler_dirs",
                    "controlnet": "controlnet_dirs"}
KIND_LABELS = {"checkpoints": "Models", "loras": "LoRAs", "vae": "VAEs",
               "embeddings": "Embeddings", "upscalers": "Upscalers",
               "controlnet": "ControlNets"}
#: File suffixes counted per kind: what SD Studio's engine opens from such a folder.
KIND_SUFFIXES = {
    "checkpoints": (".safetensors", ".ckpt", ".pt", ".pth"),
    "loras": (".safetensors", ".ckpt", ".pt", ".pth", ".bin"),
    "vae": (".safetensors", ".ckpt", ".pt", ".pth"),
    "embeddings": (".safetensors", ".pt", ".bin"),
    "upscalers": (".pth", ".pt", ".safetensors"),
    "controlnet": (".safetensors", ".pth", ".pt", ".bin", ".ckpt"),
}

MAX_CONFIG_BYTES = 256 * 1024  # real configs are a few KB
MAX_PATH_CHARS = 1024
MAX_DEPTH = 6  # levels below a model folder that are walked
MAX_FILES = 10_000  # files counted per folder (then "10000+")
MAX_LISTED = 500  # entries of a base folder looked at by name
DEFAULT_BUDGET_S = 3.0
#: InvokeAI 5.x+ keeps every model in a folder named by its key: the checkpoints among them are
#: told from LoRAs and VAEs by size (the smallest SD 1.x checkpoint in fp16 is ~1.6 GiB).
INVOKEAI_MIN_CHECKPOINT_BYTES = 1024 ** 3

# folder names (lower case, fnmatch) that may be an install, or hold one a level down
_INSTALL_PATTERNS = ("stable-diffusion-webui*", "sd.webui*", "sd-webui*", "webui_forge*",
                     "automatic1111*", "a1111*", "forge*", "reforge*", "comfyui*",
                     "invokeai*", "fooocus*", "swarmui*", "stableswarmui*",
                     "stabilitymatrix*")
_INNER_NAMES = ("webui", "comfyui", "fooocus", "swarmui", "stableswarmui", "invokeai")
# folders where people gather such apps
_CONTAINERS = ("ai", "sd", "stablediffusion", "stable-diffusion", "stable diffusion",
               "stable_diffusion", "ai-tools", "ai tools", "apps", "programs", "tools",
               "github", "git", "repos", "projects")


@dataclass(frozen=True)
class FoundFolder:
    """One model folder of another app."""

    app: str  # one of APPS
    kind: str  # one of KINDS
    folder: str  # absolute path
    files: int  # model files counted in it (a diffusers folder counts once)
    complete: bool = True  # False: counting stopped at a limit, ``files`` is a lower bound
    install: str = ""  # the app's install folder

    @property
    def setting(self) -> str:
        return SETTING_FOR_KIND[self.kind]

    @property
    def count_text(self) -> str:
        n = f"{self.files}" + ("" if self.complete else "+")
        return f"{n} file" + ("" if self.files == 1 and self.complete else "s")


@dataclass(frozen=True)
class Install:
    app: str
    root: str
    folders: tuple[FoundFolder, ...]

    @property
    def checkpoints(self) -> int:
        return sum(f.files for f in self.folders if f.kind == "checkpoints")


@dataclass(frozen=True)
class ScanResult:
    installs: tuple[Install, ...] = ()
    complete: bool = True  # False: the time budget ran out before every place was looked at

    def folders(self) -> list[FoundFolder]:
        return [f for inst in self.installs for f in inst.folders]


# ============================================================================ settings
# A1111 / Forge keep TAESD preview decoders in ``models/VAE-approx`` (modules/sd_vae_taesd.py)
WEBUI_VAE_APPROX = "VAE-approx"
_WEBUI_MODEL_SUBDIRS = ("VAE", "Stable-diffusion", "Lora", "LyCORIS")


def vae_approx_folders(engine: EngineSettings) -> list[Path]:
    """AUTOMATIC1111's ``models/VAE-approx`` folders beside the A1111-layout folders in
    ``engine`` (``…/models/VAE``, ``…/models/Stable-diffusion``, ``…/models/Lora``) that
    exist; each once, in the order the settings list them."""
    found: list[Path] = []
    for folder in (*engine.vae_dirs, *engine.model_dirs, *engine.lora_dirs):
        path = Path(os.path.expanduser(folder))
        if path.name not in _WEBUI_MODEL_SUBDIRS:
            continue
        candidate = path.parent / WEBUI_VAE_APPROX
        if candidate not in found and _is_dir(candidate):
            found.append(candidate)
    return found


def add_folders(engine: EngineSettings, folders: Iterable[FoundFolder]) -> EngineSettings:
    """``engine`` with ``folders`` added to its model / LoRA / VAE / embedding folders (after
    the ones it has; a folder already there is not added twice)."""
    lists: dict[str, list[str]] = {name: list(getattr(engine, name))
                                   for name in SETTING_FOR_KIND.values()}
    for found in folders:
        target = lists[found.setting]
        if _norm(found.folder) not in {_norm(f) for f in target}:
            target.append(found.folder)
    return engine.replace(**{name: tuple(values) for name, values in lists.items()})


def _norm(folder: str) -> str:
    return os.path.normcase(os.path.normpath(os.path.expanduser(folder)))


# ============================================================================== search
class _Clock:
    """The time budget, and a cancel request (``cancelled()`` true: stop as soon as can be)."""

    def __init__(self, budget_s: float, clock: Callable[[], float],
                 cancelled: Callable[[], bool] | None = None) -> None:
        self._clock = clock
        self._end = clock() + budget_s
        self._cancelled = cancelled
        self.expired = False

    def out(self) -> bool:
        if not self.expired and (self._clock() > self._end
                                 or (self._cancelled is not None and self._cancelled())):
            self.expired = True
        return self.expired


def find_other_apps(home: Path | None = None, environ: Mapping[str, str] | None = None,
                    platform: str | None = None, budget_s: float = DEFAULT_BUDGET_S,
                    clock: Callable[[], float] = time.monotonic,
                    cancelled: Callable[[], bool] | None = None) -> ScanResult:
    """The installs of other Stable Diffusion apps with at least one model file, each with
    its folders that hold model files. ``home``, ``environ`` and ``platform`` default to this
    computer's (tests pass their own). ``cancelled()`` returning True stops the search early
    (as the time budget does: ``complete=False``)."""
    home = Path(home) if home is not None else Path.home()
    env = dict(os.environ if environ is None else environ)
    platform = platform or sys.platform
    timer = _Clock(budget_s, clock, cancelled)
    installs: list[Install] = []
    seen_roots: set[str] = set()
    seen_folders: set[str] = set()

    def add(app: str, root: Path, wanted: list[tuple[str, Path, int]]) -> None:
        found: list[FoundFolder] = []
        for kind, folder, min_bytes in wanted:
            key = _real(folder)
            if key in seen_folders or timer.out():
                continue
            seen_folders.add(key)
            files, complete = count_model_files(folder, KIND_SUFFIXES[kind], timer,
                                                min_bytes=min_bytes)
            if files:
                found.append(FoundFolder(app, kind, str(folder), files, complete, str(root)))
        if found:
            installs.append(Install(app, str(root), tuple(found)))

    for root in candidate_roots(home, env, platform, timer):
        key = _real(root)
        if key in seen_roots:
            continue
        seen_roots.add(key)
        app = identify(root)
        if app is not None:
            add(app, root, model_folders(app, root, home, env))
    for config in comfy_desktop_configs(home, env, platform):
        if timer.out():
            break
        wanted = comfy_yaml_folders(config, home, env)
        if wanted:
            add("ComfyUI", _desktop_root(config, home, env), wanted)
    return ScanResult(tuple(installs), complete=not timer.expired)


def _real(path: Path) -> str:
    try:
        return os.path.normcase(str(path.resolve()))
    except (OSError, RuntimeError):
        return os.path.normcase(str(path))


def _is_dir(path: Path) -> bool:
    try:
        return path.is_dir()
    except OSError:
        return False


def _is_file(path: Path) -> bool:
    try:
        return path.is_file()
    except OSError:
        return False


# ---------------------------------------------------------------------- where to look
def base_folders(home: Path, env: Mapping[str, str], platform: str) -> list[Path]:
    """The folders whose children are looked at, by name, for installs."""
    homes = [home]
    if platform == "win32" and env.get("USERPROFILE"):
        homes.append(Path(env["USERPROFILE"]))
    bases = [h / sub for h in homes for sub in ("", "Desktop", "Documents", "Downloads")]
    if platform == "win32":
        bases += [Path(f"{letter}:\\") for letter in "CDEFGHIJKLMNOPQRSTUVWXYZ"]
    else:
        bases.append(Path("/opt"))
        if platform == "darwin":
            bases += [home / "Applications", Path("/Applications")]
    return list(dict.fromkeys(bases))


def candidate_roots(home: Path, env: Mapping[str, str], platform: str,
                    timer: _Clock | None = None) -> Iterator[Path]:
    """Folders that may be an app's install, in the order they are looked at."""
    invoke_root = env.get("INVOKEAI_ROOT", "")
    if invoke_root:
        root = _config_path(invoke_root, home, home, env)
        if root is not None:
            yield root
    for base in base_folders(home, env, platform):
        if timer is not None and timer.out():
            return
        for entry in _subfolders(base):
            lower = entry.name.lower()
            if lower in _CONTAINERS:
                for inner in _subfolders(entry):
                    if _matches(inner.name):
                        yield from _with_inner(inner)
            elif _matches(entry.name):
                yield from _with_inner(entry)


def _matches(name: str) -> bool:
    lower = name.lower()
    return any(fnmatch.fnmatchcase(lower, pattern) for pattern in _INSTALL_PATTERNS)


def _with_inner(folder: Path) -> Iterator[Path]:
    """``folder`` and, for portable packages, the app folder inside it (``sd.webui/webui``,
    ``ComfyUI_windows_portable/ComfyUI``, ``Fooocus_win64_*/Fooocus``), and the packages of a
    portable Stability Matrix (``Data/Packages/*``)."""
    yield folder
    for entry in _subfolders(folder):
        if entry.name.lower() in _INNER_NAMES:
            yield entry
    if folder.name.lower().startswith("stabilitymatrix"):
        yield from _subfolders(folder / "Data" / "Packages")


def _subfolders(folder: Path) -> list[Path]:
    """The sub-folders of ``folder`` (at most MAX_LISTED entries looked at), by name."""
    out: list[Path] = []
    try:
        with os.scandir(folder) as it:
            for n, entry in enumerate(it):
                if n >= MAX_LISTED:
                    break
                try:
                    if entry.is_dir() and not entry.name.startswith("."):
                        out.append(Path(entry.path))
                except OSError:
                    continue
    except OSError:
        return []
    return sorted(out, key=lambda p: p.name.lower())


def identify(root: Path) -> str | None:
    """Which app ``root`` is an install of (one of APPS), from the files it has."""
    if not _is_dir(root):
        return None
    if _is_file(root / "Data" / "Settings.fds") or any(
            _is_file(root / "src" / name) for name in ("SwarmUI.csproj", "StableSwarmUI.csproj")):
        return "SwarmUI"
    if _is_file(root / "invokeai.yaml"):
        return "InvokeAI"
    if _is_file(root / "entry_with_update.py") or _is_file(root / "fooocus_version.py"):
        return "Fooocus"
    if _is_file(root / "webui.py") and _is_dir(root / "modules"):
        return "Forge" if _is_dir(root / "modules_forge") else "AUTOMATIC1111"
    if _is_dir(root / "models" / "checkpoints") and (
            (_is_dir(root / "comfy") and _is_file(root / "folder_paths.py"))
            or _is_dir(root / "custom_nodes")):  # a git/portable install, or Desktop's base
        return "ComfyUI"
    return None


# --------------------------------------------------------------------- each app's folders
Wanted = list[tuple[str, Path, int]]  # (kind, folder, smallest file counted)


def model_folders(app: str, root: Path, home: Path, env: Mapping[str, str]) -> Wanted:
    """The folders ``app`` installed at ``root`` keeps models in (existing or not)."""
    readers: dict[str, Callable[[Path, Path, Mapping[str, str]], Wanted]] = {
        "AUTOMATIC1111": _webui_folders, "Forge": _webui_folders,
        "ComfyUI": _comfy_folders, "InvokeAI": _invoke_folders, "Fooocus": _fooocus_folders,
        "SwarmUI": _swarm_folders,
    }
    return readers[app](root, home, env)


def _webui_layout(root: Path, models: Path | None = None, embeddings: Path | None = None
                  ) -> Wanted:
    models = models or root / "models"
    return [("checkpoints", models / "Stable-diffusion", 0), ("loras", models / "Lora", 0),
            ("loras", models / "LyCORIS", 0), ("vae", models / "VAE", 0),
            ("embeddings", embeddings or root / "embeddings", 0),
            *(("upscalers", models / name, 0) for name in _WEBUI_UPSCALER_DIRS),
            ("controlnet", models / "ControlNet", 0)]  # the ControlNet extension's folder


# the upscaler model folders A1111 and Forge look in (modules/esrgan_model.py & co.)
_WEBUI_UPSCALER_DIRS = ("ESRGAN", "RealESRGAN", "SwinIR", "DAT")
_WEBUI_DIR_FLAGS = {"--ckpt-dir": "checkpoints", "--lora-dir": "loras", "--lyco-dir": "loras",
                    "--vae-dir": "vae", "--embeddings-dir": "embeddings",
                    "--esrgan-models-path": "upscalers", "--realesrgan-models-path": "upscalers",
                    "--swinir-models-path": "upscalers", "--dat-models-path": "upscalers",
                    "--controlnet-dir": "controlnet"}


def _webui_folders(root: Path, home: Path, env: Mapping[str, str]) -> Wanted:
    args = webui_commandline_args(root)
    data_dir = _config_path(_flag(args, "--data-dir"), root, home, env)
    wanted: Wanted = []
    for flag, kind in _WEBUI_DIR_FLAGS.items():
        folder = _config_path(_flag(args, flag), root, home, env)
        if folder is not None:
            wanted.append((kind, folder, 0))
    base = data_dir or root
    wanted += _webui_layout(base, base / "models", base / "embeddings")
    ref = _config_path(_flag(args, "--forge-ref-a1111-home"), root, home, env)
    if ref is not None:
        wanted += _webui_layout(ref)
    return wanted


def webui_commandline_args(root: Path) -> list[str]:
    """The words of ``COMMANDLINE_ARGS`` set in ``webui-user.bat`` or ``webui-user.sh``."""
    words: list[str] = []
    for name in ("webui-user.bat", "webui-user.sh"):
        text = _read_text(root / name)
        for line in text.splitlines():
            match = re.match(r"""\s*(?:set|export)?\s*"?COMMANDLINE_ARGS\s*=\s*(.*)$""", line,
                             re.IGNORECASE)
            if not match:
                continue
            value = match.group(1).strip()
            try:
                if name.endswith(".bat"):  # cmd keeps the text after "=" as it is
                    value = value.rstrip('"') if line.lstrip()[4:].lstrip()[:1] == '"' \
                        else value
                else:  # the shell's assignment takes one word: unquote it first
                    value = " ".join(shlex.split(value, comments=True))
                # then the web UI splits it (launch_utils: shlex.split)
                words += shlex.split(value)
            except ValueError:
                continue
    return words


def _flag(args: list[str], flag: str) -> str:
    """The value given to ``flag`` (``--flag value`` or ``--flag=value``; the last wins)."""
    value = ""
    for i, word in enumerate(args):
        if word == flag and i + 1 < len(args):
            value = args[i + 1]
        elif word.startswith(flag + "="):
            value = word[len(flag) + 1:]
    return value


def _comfy_folders(root: Path, home: Path, env: Mapping[str, str]) -> Wanted:
    models = root / "models"
    wanted: Wanted = [("checkpoints", models / "checkpoints", 0),
                      ("checkpoints", models / "diffusers", 0), ("loras", models / "loras", 0),
                      ("vae", models / "vae", 0), ("embeddings", models / "embeddings", 0),
                      ("upscalers", models / "upscale_models", 0),
                      ("controlnet", models / "controlnet", 0),
                      ("controlnet", models / "ipadapter", 0)]
    return wanted + comfy_yaml_folders(root / "extra_model_paths.yaml", home, env)


# ComfyUI's folder names -> kinds SD Studio uses ("diffusers" folders hold diffusers models)
_COMFY_KINDS = {"checkpoints": "checkpoints", "diffusers": "checkpoints", "loras": "loras",
                "vae": "vae", "embeddings": "embeddings", "upscale_models": "upscalers",
                "controlnet": "controlnet", "ipadapter": "controlnet"}


def comfy_yaml_folders(path: Path, home: Path, env: Mapping[str, str]) -> Wanted:
    """The folders an ``extra_model_paths.yaml`` (or the Desktop app's
    ``extra_models_config.yaml``) adds, as ComfyUI reads it: per section an optional
    ``base_path`` and, per folder kind, one folder or several (one per line)."""
    data = simple_yaml(_read_text(path))
    wanted: Wanted = []
    for section in data.values():
        if not isinstance(section, dict):
            continue
        base_text = section.get("base_path")
        base = (_config_path(base_text, path.parent, home, env)
                if isinstance(base_text, str) else None)
        if isinstance(base_text, str) and base is None:
            continue  # a base path that is refused: none of its folders either
        for key, value in section.items():
            kind = _COMFY_KINDS.get(key)
            if kind is None or not isinstance(value, str):
                continue
            for line in value.splitlines():
                folder = _config_path(line, base or path.parent, home, env)
                if folder is not None:
                    wanted.append((kind, folder, 0))
    return wanted


def comfy_desktop_configs(home: Path, env: Mapping[str, str], platform: str) -> list[Path]:
    """The ComfyUI Desktop app's ``extra_models_config.yaml`` (in its user-data folder)."""
    if platform == "win32":
        appdata = env.get("APPDATA")
        folder = Path(appdata) if appdata else home / "AppData" / "Roaming"
    elif platform == "darwin":
        folder = home / "Library" / "Application Support"
    else:
        xdg = env.get("XDG_CONFIG_HOME")
        folder = Path(xdg) if xdg else home / ".config"
    config = folder / "ComfyUI" / "extra_models_config.yaml"
    return [config] if _is_file(config) else []


def _desktop_root(config: Path, home: Path, env: Mapping[str, str]) -> Path:
    """The Desktop app's base folder (its first section's ``base_path``), else the config's
    own folder."""
    for section in simple_yaml(_read_text(config)).values():
        if isinstance(section, dict) and isinstance(section.get("base_path"), str):
            base = _config_path(section["base_path"], config.parent, home, env)
            if base is not None:
                return base
    return config.parent


_INVOKE_TYPES = {"main": "checkpoints", "lora": "loras", "vae": "vae", "embedding": "embeddings",
                 "spandrel_image_to_image": "upscalers"}  # InvokeAI 4.x: any/spandrel_...


def _invoke_folders(root: Path, home: Path, env: Mapping[str, str]) -> Wanted:
    data = simple_yaml(_read_text(root / "invokeai.yaml"))
    nested = data.get("InvokeAI")
    paths = nested.get("Paths") if isinstance(nested, dict) else None
    models_text = data.get("models_dir")
    if not isinstance(models_text, str) and isinstance(paths, dict):
        models_text = paths.get("models_dir")
    models = (_config_path(models_text, root, home, env) if isinstance(models_text, str)
              else None) or root / "models"
    typed: Wanted = []
    keyed = False  # 5.x+: a folder per model key
    for sub in _subfolders(models):
        types = [(t, kind) for t, kind in _INVOKE_TYPES.items() if _is_dir(sub / t)]
        if types:
            typed += [(kind, sub / t, 0) for t, kind in types]
        elif sub.name.lower() not in ("core", "hub", "configs"):
            keyed = True
    if keyed:  # the whole folder (it holds the typed ones too): checkpoints told by size
        typed = [w for w in typed if w[0] != "checkpoints"]
        typed.insert(0, ("checkpoints", models, INVOKEAI_MIN_CHECKPOINT_BYTES))
    return typed


_FOOOCUS_KEYS = {"path_checkpoints": ("checkpoints", "checkpoints"),
                 "path_loras": ("loras", "loras"),
                 "path_vae": ("vae", "vae"),
                 "path_embeddings": ("embeddings", "embeddings")}


def _fooocus_folders(root: Path, home: Path, env: Mapping[str, str]) -> Wanted:
    try:
        config = safejson.loads(_read_text(root / "config.txt") or "{}",
                                max_bytes=MAX_CONFIG_BYTES, max_depth=8)
    except ValueError:
        config = {}
    if not isinstance(config, dict):
        config = {}
    wanted: Wanted = []
    for key, (kind, default) in _FOOOCUS_KEYS.items():
        value = config.get(key)
        values = [value] if isinstance(value, str) else value if isinstance(value, list) else []
        folders = [f for f in (_config_path(v, root, home, env) for v in values
                               if isinstance(v, str)) if f is not None and _is_dir(f)]
        # as Fooocus: the configured folders when they exist, else its default one
        folders = folders or [root / "models" / default]
        wanted += [(kind, f, 0) for f in folders]
    return wanted


_SWARM_KEYS = (("SDModelFolder", "checkpoints", "Stable-Diffusion"),
               ("SDLoraFolder", "loras", "Lora"), ("SDVAEFolder", "vae", "VAE"),
               ("SDEmbeddingFolder", "embeddings", "Embeddings"))


def _swarm_folders(root: Path, home: Path, env: Mapping[str, str]) -> Wanted:
    paths = fds_section(_read_text(root / "Data" / "Settings.fds"), "Paths")
    model_roots = [r for r in (_config_path(part, root, home, env)
                               for part in paths.get("ModelRoot", "Models").split(";"))
                   if r is not None]
    wanted: Wanted = []
    for model_root in model_roots:
        for key, kind, default in _SWARM_KEYS:
            for part in (paths.get(key) or default).split(";"):
                folder = _config_path(part, model_root, home, env)
                if folder is not None:
                    wanted.append((kind, folder, 0))
    return wanted


# ================================================================ reading config files
def _read_text(path: Path) -> str:
    """The text of a regular file of at most MAX_CONFIG_BYTES; "" when it is missing, too
    large, not a regular file or not readable."""
    try:
        raw = safejson.read_limited(path, MAX_CONFIG_BYTES)
    except (OSError, ValueError):
        return ""
    return raw.decode("utf-8", errors="replace").lstrip("\ufeff")


_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_VAR = re.compile(r"\$\{(\w+)\}|\$(\w+)|%(\w+)%")


def _config_path(text: Any, base: Path, home: Path, env: Mapping[str, str]) -> Path | None:
    """A folder named in a config file, made absolute against ``base``; None when the text
    is not a plain folder name (empty, too long, control characters, a network share)."""
    if not isinstance(text, str):
        return None
    text = text.strip().strip('"').strip("'").strip()
    if not text or len(text) > MAX_PATH_CHARS or _CONTROL.search(text):
        return None
    text = _VAR.sub(lambda m: env.get(m.group(1) or m.group(2) or m.group(3), m.group(0)), text)
    if text == "~" or text.startswith(("~/", "~\\")):
        text = str(home) + text[1:]
    if text.startswith(("\\\\", "//")) or _CONTROL.search(text) or len(text) > MAX_PATH_CHARS:
        return None  # a network share (Windows would contact that server), or odd text
    path = Path(text)
    if not path.is_absolute():
        path = base / path
    return Path(os.path.normpath(path))


def simple_yaml(text: str, max_lines: int = 5000) -> dict[str, Any]:
    """The nested mappings of a YAML file of the shape ComfyUI's and InvokeAI's configs
    have: ``key: value``, ``key:`` followed by an indented mapping, ``key: |`` followed by an
    indented block of lines; comments, quotes and list items (ignored) allowed. Anything
    else is skipped; never raises."""
    root: dict[str, Any] = {}
    stack: list[tuple[int, dict[str, Any]]] = [(-1, root)]
    block: tuple[int, dict[str, Any], str, list[str]] | None = None  # indent, owner, key, lines
    for raw in text.splitlines()[:max_lines]:
        if "\t" in raw[: len(raw) - len(raw.lstrip())]:
            continue  # tabs do not indent YAML
        indent = len(raw) - len(raw.lstrip(" "))
        if block is not None:
            if not raw.strip() or indent > block[0]:
                block[3].append(raw.strip())
                continue
            block[1][block[2]] = "\n".join(line for line in block[3] if line)
            block = None
        line = _strip_comment(raw).strip()
        if not line or line.startswith(("-", "---", "...")):
            continue
        key, sep, value = line.partition(":")
        key = key.strip().strip('"').strip("'")
        if not sep or not key:
            continue
        while stack and stack[-1][0] >= indent:
            stack.pop()
        if not stack:
            stack = [(-1, root)]
        owner = stack[-1][1]
        value = value.strip()
        if value in ("", "|", "|-", "|+", ">", ">-", ">+"):
            if value:
                block = (indent, owner, key, [])
            elif len(stack) < 16:
                child: dict[str, Any] = {}
                owner[key] = child
                stack.append((indent, child))
            continue
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "\"'":
            value = value[1:-1]
        owner[key] = value
    if block is not None:
        block[1][block[2]] = "\n".join(line for line in block[3] if line)
    return root


def _strip_comment(line: str) -> str:
    quote = ""
    for i, ch in enumerate(line):
        if quote:
            if ch == quote:
                quote = ""
        elif ch in "\"'":
            quote = ch
        elif ch == "#" and (i == 0 or line[i - 1] in " \t"):
            return line[:i]
    return line


def fds_section(text: str, section: str) -> dict[str, str]:
    """The ``key: value`` lines of one top-level section of a FreneticDataSyntax file
    (SwarmUI's ``Settings.fds``): ``Section:`` then indented lines; ``#`` comments."""
    out: dict[str, str] = {}
    inside = False
    for raw in text.splitlines()[:20_000]:
        stripped = raw.strip()
        if not stripped or stripped.startswith("#"):
            continue
        top = raw[:1] not in (" ", "\t")
        key, sep, value = stripped.partition(":")
        if top:
            inside = sep == ":" and key.strip() == section and not value.strip()
            continue
        if inside and sep:
            out.setdefault(key.strip(), value.strip())
    return out


# ============================================================================ counting
def count_model_files(folder: Path, suffixes: tuple[str, ...], timer: _Clock | None = None,
                      max_depth: int = MAX_DEPTH, limit: int = MAX_FILES,
                      min_bytes: int = 0) -> tuple[int, bool]:
    """(files, complete): the model files with one of ``suffixes`` (of at least
    ``min_bytes``) in ``folder`` and its sub-folders, a diffusers folder (one holding
    ``model_index.json``) counted once and not descended into. ``complete`` is False when the
    depth, the file limit or the time budget stopped the count."""
    if not _is_dir(folder):
        return 0, True
    count = 0
    complete = True
    seen: set[tuple[int, int]] = set()
    base_depth = len(folder.parts)
    for root, dirs, files in os.walk(folder, followlinks=True):
        if timer is not None and timer.out():
            return count, False
        here = Path(root)
        if not _first_visit(here, seen):  # unreadable, a link loop, or reached twice
            dirs[:] = []
            continue
        if "model_index.json" in files and here != folder:
            dirs[:] = []
            count += 1
        else:
            for name in files:
                if name.startswith(".") or not name.lower().endswith(suffixes):
                    continue
                if min_bytes:
                    try:
                        if (here / name).stat().st_size < min_bytes:
                            continue
                    except OSError:
                        continue
                count += 1
            if len(here.parts) - base_depth >= max_depth and dirs:
                complete = False
                dirs[:] = []
            dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        if count >= limit:
            return limit, False
    return count, complete


def _first_visit(folder: Path, seen: set[tuple[int, int]]) -> bool:
    """True the first time ``folder`` (by device and inode) is met; False after, or when it
    cannot be read."""
    try:
        st = folder.stat()
    except OSError:
        return False
    key = (st.st_dev, st.st_ino)
    if key in seen:
        return False
    seen.add(key)
    return True
