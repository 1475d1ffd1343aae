"""k-diffusion's ``sampling`` and ``external`` modules (PyPI k-diffusion 0.1.1.post1, the code
AUTOMATIC1111 runs), imported on their own: the package's ``__init__`` imports training
dependencies and torchvision, which SD Studio does not install (installer/bootstrap.py installs
k-diffusion with --no-deps for the tests).

They load under a private package name, ``_kdref``, whose ``utils`` holds the one function they
use from k-diffusion's utils (``append_dims``, which needs torchvision there only through its
imports). ``torchdiffeq`` (only ``log_likelihood`` uses it) gets a stand-in while they load
when it is not installed; nothing is left in ``sys.modules`` under a real package's name.
"""

from __future__ import annotations

import importlib.util
import sys
import types
from pathlib import Path
from typing import Any

import torch

_NAME = "_kdref"


def _append_dims(x: torch.Tensor, target_dims: int) -> torch.Tensor:
    extra = target_dims - x.ndim
    if extra < 0:
        raise ValueError(f"input has {x.ndim} dims, more than {target_dims}")
    return x[(...,) + (None,) * extra]


def _load(package: types.ModuleType, folder: Path, name: str) -> types.ModuleType:
    spec = importlib.util.spec_from_file_location(f"{_NAME}.{name}", folder / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    setattr(package, name, module)
    return module


def load() -> Any:
    """The ``_kdref`` package with ``sampling`` and ``external``."""
    if _NAME in sys.modules:
        return sys.modules[_NAME]
    found = importlib.util.find_spec("k_diffusion")
    if found is None or not found.submodule_search_locations:
        raise RuntimeError("k-diffusion is not installed: run `python3 installer/bootstrap.py "
                           "test` (it installs k-diffusion==0.1.1.post1 with --no-deps)")
    folder = Path(next(iter(found.submodule_search_locations)))
    package = types.ModuleType(_NAME)
    package.__path__ = [str(folder)]
    utils = types.ModuleType(f"{_NAME}.utils")
    utils.append_dims = _append_dims  # type: ignore[attr-defined]
    package.utils = utils  # type: ignore[attr-defined]
    sys.modules[_NAME], sys.modules[utils.__name__] = package, utils
    stand_in = None
    if importlib.util.find_spec("torchdiffeq") is None:
        stand_in = types.ModuleType("torchdiffeq")

        def odeint(*args: object, **kwargs: object) -> None:
            raise RuntimeError("torchdiffeq is not installed")

        stand_in.odeint = odeint  # type: ignore[attr-defined]
        sys.modules["torchdiffeq"] = stand_in
    try:
        _load(package, folder, "sampling")
        _load(package, folder, "external")
    finally:
        if stand_in is not None:
            del sys.modules["torchdiffeq"]
    return package
