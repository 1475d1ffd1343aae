"""Work-arounds for bugs in the Qt binding, applied once before any signal is emitted.

PySide6 6.12.0 on CPython 3.11: ``SignalInstance.emit()`` returns ``True`` without taking a
reference to it, so every ``signal.emit(...)`` made from Python steals one reference from the
``True`` singleton. After a few hundred emits the interpreter aborts with "Fatal Python error:
bool_dealloc: deallocating True or False". CPython 3.12+ makes ``True`` immortal, so the bug is
harmless there; on 3.11 we detect it with a probe and give ``True`` and ``False`` an enormous
reference count (what 3.12 does), which makes the lost references irrelevant.
"""

from __future__ import annotations

import ctypes
import sys

_APPLIED: bool | None = None
_BUMP = 1 << 40


def _emit_leaks_true() -> int:
    from PySide6.QtCore import QObject, Signal

    class _Probe(QObject):
        ping = Signal()

    probe = _Probe()
    before = sys.getrefcount(True)
    for _ in range(8):
        probe.ping.emit()
    lost = before - sys.getrefcount(True)
    probe.deleteLater()
    return max(0, lost)


def _add_refs(obj: object, count: int) -> None:
    # ob_refcnt is the first field of every object in release builds of CPython.
    ref = ctypes.c_ssize_t.from_address(id(obj))
    ref.value += count


def apply() -> bool:
    """Detect and neutralise the emit refcount bug. Returns whether a fix was applied."""
    global _APPLIED
    if _APPLIED is not None:
        return _APPLIED
    _APPLIED = False
    if sys.version_info >= (3, 12) or sys.implementation.name != "cpython":
        return False
    lost = _emit_leaks_true()
    if lost:
        _add_refs(True, _BUMP + lost)
        _add_refs(False, _BUMP)
        _APPLIED = True
    return _APPLIED
