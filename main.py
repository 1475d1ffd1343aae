#!/usr/bin/env python3
"""SD Studio: double-click (or `python3 main.py`) to set up on first start and open the app.

Thin on purpose: it hands over to installer/bootstrap.py's `run` command, which creates or
reuses the environment in .venv and then starts `python -m sdstudio` with these arguments.
"""

import runpy
import sys
from pathlib import Path

if __name__ == "__main__":
    bootstrap = Path(__file__).resolve().parent / "installer" / "bootstrap.py"
    sys.argv = [str(bootstrap), "run", *sys.argv[1:]]
    runpy.run_path(str(bootstrap), run_name="__main__")
