"""Pure-Python core of SD Studio: requests, events, metadata, settings. No Qt, no torch."""
