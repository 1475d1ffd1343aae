"""SD Studio as an AUTOMATIC1111-compatible image backend: a local HTTP API (``/sdapi/v1``).

* :mod:`sdstudio.api.mapping`: A1111's request JSON -> :class:`GenerationRequest` (through the
  field table) and A1111-shaped answers; pure Python.
* :mod:`sdstudio.api.service`: queues API calls as jobs of SD Studio's one job queue (Qt).
* :mod:`sdstudio.api.server`: the Starlette app and the uvicorn thread (torch-free).
* :mod:`sdstudio.api.window`: the window's "Allow other programs to use SD Studio" switch.
* :mod:`sdstudio.api.cli`: ``sdstudio serve`` (headless, its own queue and worker).
"""
