"""Importing spandrel (upscaler architectures) with or without torchvision.

spandrel declares torchvision, and ``import spandrel`` imports every architecture it knows;
two of them, LaMa (inpainting) and RestoreFormer (face restoration), import
``torchvision.transforms.functional`` at import time. Neither is an upscaler. Where torchvision
is not installed, or is a build that does not match the installed torch (it then fails to
import: "operator torchvision::nms does not exist"), :func:`import_spandrel` puts a minimal
stand-in for exactly those imports into ``sys.modules`` while spandrel is imported, and takes
it out again afterwards, so that other libraries asking whether torchvision is installed
(transformers, diffusers) still hear "no". The stand-in's functions refuse with a clear
:class:`~sdstudio.core.errors.ModelError` if such a model is ever run; SD Studio also refuses
those architectures when a file is loaded (:data:`NEEDS_TORCHVISION`).
"""

from __future__ import annotations

import enum
import importlib
import sys
import threading
import types
from typing import Any, NoReturn

from sdstudio.core.errors import ModelError

#: spandrel architectures whose code calls torchvision.
NEEDS_TORCHVISION = frozenset({"LaMa", "RestoreFormer"})
STANDIN_MODULES = ("torchvision", "torchvision.transforms", "torchvision.transforms.functional")

_lock = threading.Lock()
_state: dict[str, bool] = {}


class InterpolationMode(enum.Enum):
    """The names LaMa's code reads at call time (torchvision's enum, values as there)."""

    NEAREST = "nearest"
    NEAREST_EXACT = "nearest-exact"
    BILINEAR = "bilinear"
    BICUBIC = "bicubic"


def _refuse(*_args: Any, **_kwargs: Any) -> NoReturn:
    raise ModelError("this model needs torchvision (LaMa / RestoreFormer architectures), "
                     "which is not installed with a build matching torch; it is not an "
                     "upscaler and SD Studio does not run it")


def _standin_modules() -> dict[str, types.ModuleType]:
    functional = types.ModuleType("torchvision.transforms.functional")
    functional.InterpolationMode = InterpolationMode  # type: ignore[attr-defined]
    functional.rotate = _refuse  # type: ignore[attr-defined]
    functional.normalize = _refuse  # type: ignore[attr-defined]
    transforms = types.ModuleType("torchvision.transforms")
    transforms.functional = functional  # type: ignore[attr-defined]
    root = types.ModuleType("torchvision")
    root.transforms = transforms  # type: ignore[attr-defined]
    root.__sdstudio_standin__ = True  # type: ignore[attr-defined]
    return {"torchvision": root, "torchvision.transforms": transforms,
            "torchvision.transforms.functional": functional}


def torchvision_works() -> bool:
    """Whether the real torchvision imports (cached after the first call)."""
    if "torchvision" not in _state:
        try:
            importlib.import_module("torchvision.transforms.functional")
            _state["torchvision"] = True
        except Exception:  # missing, or a build for another torch (RuntimeError, OSError)
            for name in STANDIN_MODULES:  # a half-imported broken package
                sys.modules.pop(name, None)
            _state["torchvision"] = False
    return _state["torchvision"]


def using_standin() -> bool:
    """True once spandrel was imported with the stand-in (no working torchvision)."""
    return _state.get("standin", False)


def import_spandrel() -> types.ModuleType:
    """``spandrel``, imported once; with the torchvision stand-in when torchvision does not
    work. ModelError when spandrel itself is not installed."""
    with _lock:
        if "spandrel" in sys.modules:
            return sys.modules["spandrel"]
        added: list[str] = []
        if not torchvision_works():
            for name, module in _standin_modules().items():
                if name not in sys.modules:
                    sys.modules[name] = module
                    added.append(name)
            _state["standin"] = True
        try:
            return importlib.import_module("spandrel")
        except ImportError as exc:
            raise ModelError("upscaler models need the spandrel package, which is not "
                             f"installed ({exc}); run the SD Studio set-up again") from exc
        finally:
            for name in added:
                sys.modules.pop(name, None)
