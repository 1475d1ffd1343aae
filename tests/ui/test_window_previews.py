"""Live previews in the window: the view paints a preview the worker rendered for its size
with a plain copy; the window asks for previews at its view's size."""

from __future__ import annotations

from typing import Any

from PIL import Image
from PySide6.QtCore import QSize
from PySide6.QtGui import QColor, QImage

from sdstudio.core.request import GenerationRequest
from sdstudio.testing.fake_engine import FakeScript
from sdstudio.ui.canvas.viewer import FIT_MARGIN, ImageViewer
from sdstudio.worker.previews import fit_size, render_preview


def latent_image() -> Image.Image:
    return Image.new("RGB", (8, 8), (200, 40, 10))


def shown_view(qtbot: Any) -> ImageViewer:
    view = ImageViewer()
    qtbot.addWidget(view)
    view.resize(424, 324)
    view.show()
    qtbot.waitExposed(view)
    return view


def test_view_paints_a_rendered_preview_unscaled(qtbot: Any) -> None:
    view = shown_view(qtbot)
    box = view.preview_box()
    assert box == QSize(round((424 - 2 * FIT_MARGIN) * view.devicePixelRatioF()),
                        round((324 - 2 * FIT_MARGIN) * view.devicePixelRatioF()))
    image = render_preview(latent_image(), box, view.devicePixelRatioF())
    view.set_preview(image, QSize(8, 8))
    assert view.showing_preview() and view.image_size() == QSize(8, 8)
    target = view.image_rect_in_widget()
    assert abs(target.width() - 300) <= 1 and abs(target.height() - 300) <= 1
    shot = view.grab().toImage()
    centre = shot.pixelColor(212, 162).getRgb()[:3]
    assert centre == (200, 40, 10)
    # zoomed by the person: no box, previews come small and the view scales them
    view.zoom_by(2)
    assert view.preview_box().isEmpty()
    view.set_preview(render_preview(latent_image(), view.preview_box()), QSize(8, 8))
    assert view.grab().toImage().pixelColor(212, 162).getRgb()[:3] == (200, 40, 10)
    # a finished image replaces it: no longer a preview
    result = QImage(64, 64, QImage.Format.Format_RGB888)
    result.fill(QColor(0, 0, 255))
    view.set_image(result)
    assert not view.showing_preview() and view.image_size() == QSize(64, 64)


def test_the_next_preview_repaints_only_the_image(qtbot: Any) -> None:
    """A run's next preview (same size, same place) paints the image's rectangle again and
    nothing else: no new fit, no view-changed signal; its pixels are the new preview's."""
    view = shown_view(qtbot)
    box = view.preview_box()
    view.set_preview(render_preview(latent_image(), box), QSize(8, 8))
    target = view.image_rect_in_widget()
    changed: list[int] = []
    view.viewChanged.connect(lambda: changed.append(1))
    blue = Image.new("RGB", (8, 8), (10, 40, 200))
    view.set_preview(render_preview(blue, box), QSize(8, 8))
    assert not changed and view.image_rect_in_widget() == target
    assert view.grab().toImage().pixelColor(212, 162).getRgb()[:3] == (10, 40, 200)
    # a preview of another size is placed anew
    view.set_preview(render_preview(Image.new("RGB", (16, 8), (0, 0, 0)), box), QSize(16, 8))
    assert changed and view.image_rect_in_widget() != target


def test_window_shows_previews_at_the_views_size(qtbot: Any, make_window: Any) -> None:
    script = FakeScript(step_delay=0.05)
    window = make_window(fake=script)
    qtbot.waitUntil(lambda: window.queue.loaded is not None, timeout=10000)
    viewer = window.txt_viewer
    seen: list[tuple[QSize, QSize]] = []
    window.queue.jobPreview.connect(
        lambda jid, image: seen.append((image.size(), viewer.preview_box())))
    with qtbot.waitSignal(window.queue.jobFinished, timeout=20000):
        window.queue.submit_request(GenerationRequest(prompt="a cat", width=64, height=64,
                                                      steps=6, seed=1))
    assert seen
    size, box = seen[-1]
    assert size == fit_size(QSize(8, 8), box)  # rendered to fit the view, not 8x8
    assert not viewer.showing_preview()  # the result replaced it
    assert set(window.preview_counts) == {"made", "dropped", "skipped"}


def test_live_preview_method_setting_round_trip(qtbot: Any) -> None:
    from sdstudio.core.settings import PREVIEW_METHODS, EngineSettings, Settings
    from sdstudio.ui.settings_dialog import SettingsDialog

    dialog = SettingsDialog(Settings(), None)
    qtbot.addWidget(dialog)
    combo = dialog.preview_method_combo
    assert [combo.itemData(i) for i in range(combo.count())] == list(PREVIEW_METHODS)
    assert combo.currentData() == "Approx cheap"  # the default
    combo.setCurrentIndex(combo.findData("TAESD"))
    assert dialog.result_settings().engine.preview_method == "TAESD"
    again = SettingsDialog(Settings(engine=EngineSettings(preview_method="TAESD")), None)
    qtbot.addWidget(again)
    assert again.preview_method_combo.currentData() == "TAESD"
    # kept between launches
    data = Settings(engine=EngineSettings(preview_method="TAESD")).to_dict()
    assert Settings.from_dict(data).engine.preview_method == "TAESD"
