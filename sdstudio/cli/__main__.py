"""``python -m sdstudio.cli``: the headless CLI without the window fallback."""

import sys

from sdstudio.cli import main

sys.exit(main())
