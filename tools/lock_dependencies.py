"""Refresh ``installer/constraints.txt``: the exact versions of every dependency (and test
tool) that SD Studio's set-up installs, for every platform and Python SD Studio supports.

    python3 tools/lock_dependencies.py           # needs `uv` (pip install uv) and PyPI

It runs ``uv pip compile --universal`` over pyproject.toml with the test extra, with torch
pinned to the bootstrap's TORCH_VERSION, and leaves out torch and the CUDA libraries that come
with it: the set-up installs torch from the index that fits the machine (CPU, CUDA, macOS), and
those wheels bring their own. After a refresh, run the test command and commit the file only
when it passes: the lock is the set of versions the tests passed with.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "installer"))

from bootstrap import CONSTRAINTS, MIN_PYTHON, TORCH_VERSION  # noqa: E402

# come with torch from the index the set-up picks; pinned there, not here
TORCH_OWNED = re.compile(r"^(torch|triton|nvidia-[\w-]+|cuda-[\w-]+)==", re.IGNORECASE)
HEADER = """\
# The exact versions SD Studio's tests passed with, for every platform (environment markers).
# The set-up (installer/bootstrap.py) installs with `pip install -c` this file, after torch
# itself (torch and its CUDA libraries come from the index chosen for the machine and are not
# listed here). SDSTUDIO_UNLOCKED=1 installs without it. Refresh: python3 tools/lock_dependencies.py
"""


def compile_lock(uv: str) -> str:
    with tempfile.TemporaryDirectory() as tmp:
        pin = Path(tmp) / "torch.txt"
        pin.write_text(f"torch=={TORCH_VERSION}\n")
        out = subprocess.run(
            [uv, "pip", "compile", "--universal", "--python-version",
             f"{MIN_PYTHON[0]}.{MIN_PYTHON[1]}", str(ROOT / "pyproject.toml"), "--extra",
             "test", "-c", str(pin), "--no-header", "--no-annotate", "--quiet"],
            check=True, capture_output=True, text=True).stdout
    lines = [line for line in out.splitlines()
             if line.strip() and not line.startswith("#") and not TORCH_OWNED.match(line)]
    return HEADER + "\n".join(lines) + "\n"


def main() -> int:
    uv = shutil.which("uv")
    if uv is None:
        print("lock_dependencies: needs uv (pip install uv)", file=sys.stderr)
        return 2
    text = compile_lock(uv)
    CONSTRAINTS.write_text(text, encoding="utf-8")
    print(f"wrote {CONSTRAINTS.relative_to(ROOT)} ({len(text.splitlines()) - 4} pins)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
