"""The gentle engine import (sdstudio.engine.startup) used by the window's worker thread."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def _run(code: str) -> str:
    out = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], cwd=ROOT,
                         capture_output=True, text=True, timeout=180)
    assert out.returncode == 0, out.stderr[-3000:]
    return out.stdout


def test_preload_then_import_engine_in_a_thread_works() -> None:
    out = _run("""
        import gc, sys, threading
        from sdstudio.engine import startup
        assert "torch" not in sys.modules
        result = {}
        def work():
            result["loaded"] = startup.preload_native_libraries()
            result["seconds"] = startup.import_engine()
            result["again"] = startup.import_engine()
        t = threading.Thread(target=work); t.start(); t.join()
        import torch
        from sdstudio.engine import Engine
        print(sorted(result["loaded"]), result["seconds"] > 0, result["again"], gc.isenabled(),
              gc.get_freeze_count() > 0, float(torch.ones(3).sum()), Engine.__name__)
    """)
    loaded, rest = out.split("]", 1)
    if sys.platform.startswith("linux"):
        assert "libtorch_cpu.so" in loaded and "_C." in loaded
    assert rest.split() == ["True", "0.0", "True", "True", "3.0", "Engine"]


def test_preload_is_a_no_op_once_torch_is_imported() -> None:
    out = _run("""
        import torch
        from sdstudio.engine.startup import preload_native_libraries
        print(preload_native_libraries())
    """)
    assert out.strip() == "[]"
