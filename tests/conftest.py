"""Suite-wide fixtures: offline, offscreen, an isolated SDSTUDIO_HOME, tiny models built once,
and a guard that fails any test which leaves a thread running."""

from __future__ import annotations

import os
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

# Set before anything imports Qt, transformers or huggingface_hub.
os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"
os.environ["HF_HUB_DISABLE_TELEMETRY"] = "1"
os.environ["DIFFUSERS_VERBOSITY"] = "error"
os.environ["TRANSFORMERS_VERBOSITY"] = "error"
# Tiny models run as fast on one CPU thread and do not thrash when the cores are shared; as
# a person's own setting it also keeps the engine's thread count from following the load
# (tests/engine/test_threads.py switches that on where it is the subject).
os.environ.setdefault("OMP_NUM_THREADS", "1")
# The suite's images are compared with fp32 references: "auto" means fp32 here, as a person
# sets it with SDSTUDIO_PRECISION (on a CPU with native bf16 it would mean bf16;
# tests/engine/test_device_precision.py covers that choice).
os.environ.setdefault("SDSTUDIO_PRECISION", "fp32")
_HOME = Path(tempfile.mkdtemp(prefix="sdstudio-test-home-"))
os.environ["SDSTUDIO_HOME"] = str(_HOME)


@pytest.fixture(scope="session")
def sdstudio_home() -> Path:
    """The isolated SDSTUDIO_HOME every test runs under."""
    return _HOME


@pytest.fixture(scope="session")
def tiny_models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Tiny random models as diffusers folders, built once per run and keyed by kind."""
    from sdstudio.engine.tiny import build_tiny_model

    root = tmp_path_factory.mktemp("tiny-models")
    built: dict[str, Path] = {}

    class _Lazy(dict):  # build each kind on first use only
        def __missing__(self, kind: str) -> Path:
            built[kind] = build_tiny_model(root / kind, kind=kind)
            self[kind] = built[kind]
            return built[kind]

    return _Lazy()


@pytest.fixture(scope="session")
def tiny_model(tiny_models: dict[str, Path]) -> Path:
    """The SD 1.x-like tiny model (same builder as the built-in demo model)."""
    return tiny_models["sd1"]


_BASELINE_THREADS: set[int] = set()


@pytest.fixture(autouse=True)
def no_leftover_threads() -> Iterator[None]:
    """Fail a test that leaves a Python thread or a QThread running after it ends."""
    before = {t.ident for t in threading.enumerate()}
    yield
    deadline = time.monotonic() + 2.0
    while True:
        extra = [
            t for t in threading.enumerate()
            if t.ident not in before and t.is_alive() and not t.daemon
        ]
        if not extra or time.monotonic() > deadline:
            break
        time.sleep(0.02)
    assert not extra, f"test left threads running: {[t.name for t in extra]}"
