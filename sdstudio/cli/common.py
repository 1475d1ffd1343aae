"""Names every part of the CLI shares: the program name, exit statuses, the first-start prompt."""

from __future__ import annotations

PROG = "sdstudio"
EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_BAD_INPUT = 2
EXIT_CANCELLED = 130
DEFAULT_PROMPT = "a lighthouse on a rocky coast at dawn, watercolor"
