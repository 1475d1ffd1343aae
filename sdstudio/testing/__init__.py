"""Test and development helpers: NOT part of the application.

``sdstudio.testing.fake_engine`` is a scriptable fake of ``sdstudio.engine.Engine`` for the
worker and window tests, and for ``SDSTUDIO_FAKE_ENGINE=1`` (UI work on a machine without a
model). Production code never imports this package; the one exception is the engine factory
in ``sdstudio.app``, and only when ``SDSTUDIO_FAKE_ENGINE=1`` is set (tests/test_boundaries.py
checks this).
"""
