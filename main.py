#!/usr/bin/env python3
"""SD Studio: double-click (or `python3 main.py`) to set up on first start and open the app.

Thin on purpose: it hands over to installer/bootstrap.py's `run` command, which creates or
reuses the environment in .venv and then starts `python -m sdstudio` with these arguments.
Written so that even a very old Python reads it and says clearly what is needed.
"""

import os
import runpy
import sys

if __name__ == "__main__":
    if sys.version_info < (3, 10):  # noqa: UP036 - the point: old Pythons read this file
        sys.stderr.write(
            "sdstudio setup: error: SD Studio needs Python 3.10 or newer; this is Python "
            + sys.version.split()[0] + " (" + str(sys.executable) + "). "
            + "Install a newer python3 and run this again with it.\n"
        )
        sys.exit(1)
    bootstrap = os.path.join(os.path.dirname(os.path.abspath(__file__)), "installer",
                             "bootstrap.py")
    sys.argv = [bootstrap, "run"] + sys.argv[1:]  # noqa: RUF005
    runpy.run_path(bootstrap, run_name="__main__")
