"""The Qt binding must not corrupt reference counts (PySide6 6.12.0 did on CPython 3.11:
every emit lost a reference to True and every QSignalBlocker one to None, which aborted the
interpreter after a few hundred signals). pyproject excludes that release; this guards it."""

from __future__ import annotations

import sys

from PySide6.QtCore import QObject, QSignalBlocker, Signal


class _Probe(QObject):
    ping = Signal()
    value = Signal(object)


def test_emit_keeps_true_refcount() -> None:
    probe = _Probe()
    before = sys.getrefcount(True)
    for i in range(200):
        probe.ping.emit()
        probe.value.emit(i)
    assert sys.getrefcount(True) >= before


def test_signal_blocker_keeps_none_refcount() -> None:
    probe = _Probe()
    before = sys.getrefcount(None)
    for _ in range(200):
        with QSignalBlocker(probe):
            pass
    assert sys.getrefcount(None) >= before - 5
