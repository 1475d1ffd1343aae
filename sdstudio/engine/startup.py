"""Import the engine's heavy dependencies without freezing the window.

The engine is imported in the worker thread while the window is already on screen. Python
threads share one interpreter lock (GIL), so any long stretch the worker spends holding it is a
stall of the GUI thread. Measured here (bench/ui_stall.py), importing torch + diffusers +
transformers froze the GUI for 100-300 ms several times, for two reasons:

1. ``import torch`` loads libtorch_cpu (hundreds of MB) inside the import machinery, which
   holds the GIL for the whole dlopen (~0.2-0.3 s); so does ``ctypes.CDLL`` on CPython 3.11.
   Calling the C library's own ``dlopen`` as a ctypes *foreign function* releases the GIL
   while it runs, and once the libraries are mapped, torch's own import only finds them.
2. The import creates millions of objects; every full garbage collection during it walks all
   of them with the GIL held (100-200 ms each). Collection is paused for the import and the
   imported objects are then moved to the permanent generation (``gc.freeze``), so later
   collections never walk them again.

Everything here is an optimisation: if a library cannot be pre-loaded the normal import runs.
"""

from __future__ import annotations

import ctypes
import gc
import importlib
import importlib.util
import logging
import os
import sys
import threading
import time
from pathlib import Path

log = logging.getLogger(__name__)

# The CPU-side native libraries, in dependency order, then torch's extension module itself.
# CUDA libraries are left to torch, which first sets up the search path for the NVIDIA wheels
# they depend on.
_NATIVE_LIBS = ("lib/libc10", "lib/libtorch_cpu", "lib/libtorch", "lib/libtorch_python")
_ENGINE_MODULES = ("sdstudio.engine.runner", "sdstudio.engine.single_file", "sdstudio.engine.lora")
_lock = threading.Lock()
_done = False


def torch_package_dir() -> Path | None:
    """torch's package folder, found without importing torch."""
    spec = importlib.util.find_spec("torch")
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations)))


def _native_library_paths(torch_dir: Path) -> list[Path]:
    suffix = ".dylib" if sys.platform == "darwin" else ".so"
    paths = [torch_dir / f"{name}{suffix}" for name in _NATIVE_LIBS]
    paths += sorted(torch_dir.glob("_C.*.so"))  # the extension module (macOS uses .so too)
    return [p for p in paths if p.is_file()]


def preload_native_libraries() -> list[str]:
    """dlopen torch's CPU libraries with the GIL released. Returns the names of the libraries
    loaded; an empty list where that does not apply (Windows, torch already imported)."""
    if "torch" in sys.modules or sys.platform == "win32":
        return []
    torch_dir = torch_package_dir()
    if torch_dir is None:
        return []
    try:
        dlopen = ctypes.CDLL(None).dlopen  # a foreign function: ctypes releases the GIL
    except (OSError, AttributeError):
        return []
    dlopen.restype = ctypes.c_void_p
    dlopen.argtypes = [ctypes.c_char_p, ctypes.c_int]
    mode = os.RTLD_NOW | os.RTLD_GLOBAL
    loaded = []
    for path in _native_library_paths(torch_dir):
        if not dlopen(os.fsencode(path), mode):  # torch's own import reports a real problem
            log.debug("could not pre-load %s", path)
            break
        loaded.append(path.name)
    return loaded


def import_engine() -> float:
    """Import the engine and what it uses, gently (see the module docstring). Idempotent and
    thread-safe; returns the seconds spent (0 when already done)."""
    global _done
    with _lock:
        if _done:
            return 0.0
        start = time.perf_counter()
        was_enabled = gc.isenabled()
        preload_native_libraries()
        gc.disable()
        try:
            for name in _ENGINE_MODULES:
                try:
                    importlib.import_module(name)
                except ImportError as exc:  # optional parts; the engine reports at use
                    log.debug("engine module %s not imported: %s", name, exc)
        finally:
            gc.freeze()
            if was_enabled:
                gc.enable()
        _done = True
        return time.perf_counter() - start
