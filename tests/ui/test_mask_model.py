"""MaskModel: brush coverage, stroke semantics and the bounded undo history (no widgets)."""

from __future__ import annotations

import numpy as np

from sdstudio.ui.canvas.mask_model import MIN_UNDO, MaskModel, brush_alpha


def test_hard_brush_edge_is_antialiased() -> None:
    d = np.array([0.0, 9.0, 10.0, 10.5, 11.0], dtype=np.float32)
    a = brush_alpha(d, 10.0, 1.0)
    np.testing.assert_allclose(a, [1.0, 1.0, 0.5, 0.0, 0.0])


def test_overlapping_segments_do_not_build_up() -> None:
    m = MaskModel(64, 64)
    m.begin_stroke()
    for _ in range(5):
        m.stroke_segment(10, 32, 50, 32, 8, 8, 0.0, erase=False)
    once = MaskModel(64, 64)
    once.stroke_segment(10, 32, 50, 32, 8, 8, 0.0, erase=False)
    np.testing.assert_array_equal(m.arr, once.arr)
    assert m.end_stroke()
    assert m.undo_count() == 1


def test_long_segment_is_continuous_and_cheap() -> None:
    m = MaskModel(2048, 2048)
    box = m.stroke_segment(0, 0, 2047, 2047, 3, 3, 1.0, erase=False)
    assert box == (0, 0, 2048, 2048)
    diag = m.arr[np.arange(2048), np.arange(2048)]
    assert (diag == 255).all()
    assert m.coverage() < 0.01


def test_pressure_interpolates_radius() -> None:
    m = MaskModel(200, 100)
    m.stroke_segment(20, 50, 180, 50, 2, 20, 1.0, erase=False)
    col_thin = int((m.arr[:, 30] > 127).sum())
    col_thick = int((m.arr[:, 170] > 127).sum())
    assert col_thin < 10 < 30 < col_thick


def test_erase_takes_the_minimum() -> None:
    m = MaskModel(32, 32)
    m.fill()
    m.stroke_segment(16, 16, 16, 16, 5, 5, 1.0, erase=True)
    assert m.arr[16, 16] == 0 and m.arr[0, 0] == 255


def test_history_keeps_at_least_min_undo_under_budget() -> None:
    m = MaskModel(256, 256)
    m.budget = 1  # force trimming
    rng = np.random.default_rng(0)
    for _ in range(70):
        m.replace(rng.integers(0, 256, (256, 256), dtype=np.uint8))
    assert m.undo_count() == MIN_UNDO


def test_history_is_compressed() -> None:
    m = MaskModel(2048, 2048)
    for i in range(60):
        m.stroke_segment(20 + i * 30, 100, 20 + i * 30, 1900, 12, 12, 0.8, erase=False)
    m.invert()
    assert m.undo_count() == 61
    assert m.history_bytes() < 2 * 1024 * 1024  # vs 61 x 4 MiB uncompressed


def test_cancel_stroke_restores() -> None:
    m = MaskModel(32, 32)
    m.begin_stroke()
    m.stroke_segment(5, 5, 20, 20, 3, 3, 1.0, erase=False)
    m.cancel_stroke()
    assert m.is_empty() and not m.can_undo()


def test_masked_bbox() -> None:
    m = MaskModel(100, 50)
    assert m.masked_bbox() is None
    m.arr[10:20, 30:45] = 1
    assert m.masked_bbox() == (30, 10, 45, 20)
