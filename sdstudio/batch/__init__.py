"""Batch generation from a prompt list: plan, crash-safe runner, CLI, multi-process split.

Nothing here imports torch or Qt at import time: the engine is passed in (the CLI imports it
when it runs), accelerate is imported only under a distributed launcher, and the window's
controller lives in ``sdstudio.batch.qt``.
"""
