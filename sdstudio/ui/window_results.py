"""The result views' behaviour: the parameters (A1111 infotext) of the image under each
result, its right-click menu, dragging it out and viewing it full screen. A mixin of
:class:`sdstudio.ui.main_window.MainWindow`; the menu, the drag and the full-screen viewer
are shared with the gallery (:mod:`sdstudio.ui.result_actions`)."""

from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from PySide6.QtCore import QPoint, Qt
from PySide6.QtGui import QImage
from PySide6.QtWidgets import QFrame, QPlainTextEdit, QStatusBar, QTabWidget, QVBoxLayout, QWidget

from sdstudio.ui.canvas.viewer import ImageViewer
from sdstudio.ui.result_actions import ResultHandlers, ResultTarget, ViewerActions, build_menu
from sdstudio.ui.window_part import WindowPart
from sdstudio.worker import JobImage, JobQueue

if TYPE_CHECKING:
    from PySide6.QtWidgets import QMenu

    from sdstudio.core.request import GenerationRequest
    from sdstudio.ui.gallery import GalleryWidget
    from sdstudio.ui.prompt_panel import PromptPanel

INFOTEXT_LINES = 3  # lines of parameters shown under a result (it scrolls for more)


@dataclass
class ResultPane:
    """A result view, the parameters box under it and the finished image it shows."""

    viewer: ImageViewer
    info: QPlainTextEdit
    path: str = ""
    image: QImage | None = None
    infotext: str = ""
    seed: int | None = None
    request: GenerationRequest | None = None  # the image's own (Compare reads its source)

    def target(self) -> ResultTarget | None:
        if self.image is None and not self.path:
            return None
        return ResultTarget(self.path, self.image, self.infotext, self.seed)


class ResultPanes(WindowPart):
    """``_result_pane(viewer)`` while the tabs are built, ``_connect_results()`` once, and
    ``show_result(viewer, image)`` for every finished result a view shows."""

    queue: JobQueue
    tabs: QTabWidget
    gallery: GalleryWidget
    prompt_panel: PromptPanel
    _panes_by_viewer: dict[int, ResultPane]

    if TYPE_CHECKING:
        def send_to_img2img(self, path: str) -> None: ...
        def send_to_inpaint(self, path: str) -> None: ...
        def restore_parameters_from(self, path: str, quiet_failure: bool = False) -> bool: ...
        def load_gallery(self) -> None: ...
        def statusBar(self) -> QStatusBar: ...
        def upscale_image(self, path: str) -> int | None: ...
        def _viewer_for(self, job_id: int) -> ImageViewer: ...

    def _result_panes(self) -> dict[int, ResultPane]:
        panes = getattr(self, "_panes_by_viewer", None)
        if panes is None:
            panes = self._panes_by_viewer = {}
        return panes

    def _result_pane(self, viewer: ImageViewer) -> QWidget:
        """``viewer`` above the parameters of the image it shows (hidden until there is
        one), with the right-click menu, drag-out and full screen (F) on the view."""
        box = QWidget(self._qt_parent())
        lay = QVBoxLayout(box)
        lay.setContentsMargins(0, 0, 0, 0)
        lay.setSpacing(4)
        lay.addWidget(viewer, 1)
        info = QPlainTextEdit(box)
        info.setObjectName("resultInfotext")
        info.setReadOnly(True)
        info.setFrameShape(QFrame.Shape.StyledPanel)
        info.setLineWrapMode(QPlainTextEdit.LineWrapMode.WidgetWidth)
        info.setAccessibleName("Parameters of the result")
        info.setToolTip("The parameters this image was made with, as AUTOMATIC1111 writes "
                        "them (select to copy; right-click the image for Copy parameters)")
        margins = info.contentsMargins()
        info.setFixedHeight(info.fontMetrics().lineSpacing() * INFOTEXT_LINES
                            + 2 * info.frameWidth() + int(info.document().documentMargin()) * 2
                            + margins.top() + margins.bottom())
        info.hide()
        lay.addWidget(info)
        pane = ResultPane(viewer, info)
        self._result_panes()[id(viewer)] = pane
        viewer.setContextMenuPolicy(Qt.ContextMenuPolicy.CustomContextMenu)
        viewer.customContextMenuRequested.connect(
            functools.partial(self._show_result_menu, pane))
        ViewerActions(viewer, pane.target, functools.partial(self._result_full_screen, pane))
        return box

    def _connect_results(self) -> None:
        self.queue.jobPreview.connect(self._on_result_preview)
        self.queue.jobFinished.connect(self._on_result_finished)
        self.gallery.reuseSeed.connect(self.reuse_seed)
        self.gallery.upscaleRequested.connect(self.upscale_image)

    # ------------------------------------------------------------------ API
    def show_result(self, viewer: ImageViewer, image: JobImage) -> None:
        """``viewer`` now shows the finished ``image``: keep its file, seed and
        parameters for the menu and show the parameters under it."""
        from sdstudio.core.metadata import to_infotext

        pane = self._result_panes().get(id(viewer))
        if pane is None:
            return
        pane.path, pane.image, pane.seed = image.path, image.qimage, image.request.seed
        pane.request = image.request
        pane.infotext = to_infotext(image.request, image.info)
        pane.info.setPlainText(pane.infotext)
        pane.info.setEnabled(True)
        pane.info.setVisible(bool(pane.infotext))

    def result_pane(self, viewer: ImageViewer) -> ResultPane:
        return self._result_panes()[id(viewer)]

    def result_menu(self, viewer: ImageViewer) -> QMenu | None:
        """The right-click menu of a result view (None while it shows no finished image)."""
        pane = self._result_panes()[id(viewer)]
        target = pane.target()
        if target is None:
            return None
        status = self.statusBar()
        return build_menu(self._qt_parent(), target, ResultHandlers(
            to_img2img=self.send_to_img2img, to_inpaint=self.send_to_inpaint,
            reuse_parameters=self.restore_parameters_from, reuse_seed=self.reuse_seed,
            full_screen=functools.partial(self._result_full_screen, pane),
            delete=functools.partial(self._delete_result, pane),
            message=lambda text: status.showMessage(text, 4000),
            show_in_gallery=self.show_in_gallery, upscale=self.upscale_image))

    def reuse_seed(self, seed: int) -> None:
        self.prompt_panel.control("seed").set_value(seed)
        self.statusBar().showMessage(f"Seed {seed} set", 4000)

    def show_in_gallery(self, path: str) -> None:
        self.tabs.setCurrentWidget(self.gallery)
        self.load_gallery()
        self.gallery.select_path(path)

    # ------------------------------------------------------------------ internals
    def _show_result_menu(self, pane: ResultPane, pos: QPoint) -> None:
        menu = self.result_menu(pane.viewer)
        if menu is not None:
            menu.exec(pane.viewer.mapToGlobal(pos))
            menu.deleteLater()

    def _result_full_screen(self, pane: ResultPane, target: Any = None) -> None:
        self.gallery.show_full_screen(pane.path, pane.image)

    def _delete_result(self, pane: ResultPane, path: str) -> None:
        if not self.gallery.delete_path(path):
            return
        name = Path(path).name
        self.statusBar().showMessage(
            f"Moved {name} to the trash (Undo delete in the gallery brings it back)"
            if self.gallery.undo_button.isEnabled() else f"Deleted {name}", 6000)
        pane.viewer.set_image(None)
        pane.path, pane.image, pane.infotext, pane.seed = "", None, "", None
        pane.request = None
        pane.info.clear()
        pane.info.hide()

    def _on_result_preview(self, job_id: int, image: QImage) -> None:
        # the parameters describe the last finished image, not the one forming: greyed
        pane = self._result_panes().get(id(self._viewer_for(job_id)))
        if pane is not None:
            pane.info.setEnabled(False)

    def _on_result_finished(self, job_id: int, state: str) -> None:
        pane = self._result_panes().get(id(self._viewer_for(job_id)))
        if pane is not None:
            pane.info.setEnabled(True)
