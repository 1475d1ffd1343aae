"""The generation engine: the only package that imports torch / diffusers / transformers.

Imports are lazy so that ``sdstudio.engine.text.count_tokens`` or ``engine.tiny`` helpers can
be reached without pulling torch in at import time.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

from sdstudio.core import threads as _thread_policy

# transformers and diffusers print warnings meant for library developers (a missing
# torchvision for image processors SD Studio never uses, deprecations) on every start; the
# app reports what matters itself. An explicit setting in the environment still wins.
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
os.environ.setdefault("DIFFUSERS_VERBOSITY", "error")

# CPU threads and how they wait: decided before anything below imports torch (every import
# of torch in SD Studio passes through this package).
_thread_policy.configure_process()

if TYPE_CHECKING:
    from sdstudio.engine.runner import Engine
    from sdstudio.engine.text import count_tokens
    from sdstudio.engine.tiny import build_tiny_model, ensure_demo_model

__all__ = ["Engine", "build_tiny_model", "count_tokens", "ensure_demo_model"]

_WHERE = {
    "Engine": "sdstudio.engine.runner",
    "count_tokens": "sdstudio.engine.text",
    "build_tiny_model": "sdstudio.engine.tiny",
    "ensure_demo_model": "sdstudio.engine.tiny",
}


def __getattr__(name: str) -> Any:
    if name in _WHERE:
        import importlib

        return getattr(importlib.import_module(_WHERE[name]), name)
    raise AttributeError(f"module 'sdstudio.engine' has no attribute {name!r}")
