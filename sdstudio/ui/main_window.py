"""The main window: model bar, prompt panel, the mode tabs with live preview, gallery, queue,
progress and status. It builds requests and observes the JobQueue; it never waits on the
engine and never imports it."""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any

from PySide6.QtCore import QByteArray, QEvent, QObject, QSize, Qt, QTimer, QUrl, Signal
from PySide6.QtGui import (
    QAction,
    QCloseEvent,
    QDesktopServices,
    QDragEnterEvent,
    QDropEvent,
    QImage,
    QKeySequence,
)
from PySide6.QtWidgets import (
    QDialog,
    QDockWidget,
    QHBoxLayout,
    QLabel,
    QMainWindow,
    QMessageBox,
    QProgressBar,
    QScrollArea,
    QSplitter,
    QTabWidget,
    QToolButton,
    QVBoxLayout,
    QWidget,
)

from sdstudio.core.errors import SDStudioError, describe_error
from sdstudio.core.outpaint import FIELDS as OUTPAINT_FIELDS
from sdstudio.core.request import GenerationRequest, Mode, request_spec
from sdstudio.core.settings import Settings, save_settings
from sdstudio.ui import file_dialogs
from sdstudio.ui.canvas.compare import CompareViewer
from sdstudio.ui.canvas.mask_canvas import MaskCanvas
from sdstudio.ui.canvas.outpaint_bar import outpaint_canvas
from sdstudio.ui.canvas.source_canvas import SourceCanvas
from sdstudio.ui.canvas.viewer import ImageViewer
from sdstudio.ui.gallery import IMAGE_SUFFIXES, GalleryWidget
from sdstudio.ui.prompt_panel import PromptPanel
from sdstudio.ui.theme import app_icon, icon
from sdstudio.ui.welcome import WelcomePanel, should_welcome
from sdstudio.ui.widgets import MessageBar, QueueView
from sdstudio.ui.window_jobs import (
    TAB_IMG2IMG,
    TAB_INPAINT,
    TAB_TXT2IMG,
    JobSlots,
    format_duration,
    progress_text,
)
from sdstudio.ui.window_models import ModelChooser, _standard_keys
from sdstudio.ui.window_restore import ParameterRestore
from sdstudio.ui.window_results import ResultPanes
from sdstudio.ui.window_status import ModelStatus
from sdstudio.ui.window_upscale import UpscaleActions
from sdstudio.worker import JobQueue

__all__ = ["TAB_IMG2IMG", "TAB_INPAINT", "TAB_TXT2IMG", "MainWindow", "format_duration",
           "progress_text"]

APP_TITLE = "SD Studio"



QUEUE_WIDTH = 230  # the queue dock's width on first start


class PanelScroll(QScrollArea):
    """The prompt panel's scroll area: never narrower than the panel needs, with room for
    the vertical scroll bar, so the splitter cannot clip it (the panel's minimum follows its
    fonts and contents, known only once it is shown)."""

    def setWidget(self, widget: QWidget) -> None:
        super().setWidget(widget)
        widget.installEventFilter(self)  # its minimum changes as it is laid out: pass it on

    def eventFilter(self, watched: QObject, event: QEvent) -> bool:
        if watched is self.widget() and event.type() == QEvent.Type.LayoutRequest:
            self.updateGeometry()
        return super().eventFilter(watched, event)

    def minimumSizeHint(self) -> QSize:
        inner = self.widget()
        hint = super().minimumSizeHint()
        if inner is None:
            return hint
        width = (inner.minimumSizeHint().width() + self.verticalScrollBar().sizeHint().width()
                 + 2 * self.frameWidth())
        return QSize(max(hint.width(), width), hint.height())

class MainWindow(ModelChooser, JobSlots, ResultPanes, ModelStatus, ParameterRestore,
                 UpscaleActions, QMainWindow):
    settingsChanged = Signal(object)  # Settings

    def __init__(self, settings: Settings, queue: JobQueue,
                 parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.settings = settings
        self.queue = queue
        self._job_tab: dict[int, int] = {}
        self._job_started: dict[int, float] = {}
        self._shown_result: set[int] = set()
        self._compare_buttons: dict[int, QToolButton] = {}
        self._models: list[dict[str, Any]] = []
        self._current_model = settings.engine.default_model
        self._closing = False
        self._gallery_loaded = False
        self._help_window: QDialog | None = None
        self.model_manager = None  # made on first use (Models…)
        #: How long closing waits for the worker (the app exits anyway after that).
        self.shutdown_timeout_ms = 1500

        self.setWindowTitle(APP_TITLE)
        self.setWindowIcon(app_icon())
        self.setAcceptDrops(True)
        self.setDockNestingEnabled(False)
        self.resize(1440, 900)

        self._build_model_bar()
        self._build_central()
        self._build_queue_dock()
        self._build_status_bar()
        self._build_actions()
        self._connect_queue()
        self._connect_results()
        self._restore_state()
        self._refresh_model_combo()
        # first start with only the demo model: find other apps' model folders, explain
        self.welcome = WelcomePanel(self) if should_welcome(settings) else None

    # ================================================================= building
    def _build_central(self) -> None:
        self.prompt_panel = PromptPanel(self)
        scroll = PanelScroll(self)
        scroll.setWidget(self.prompt_panel)
        scroll.setWidgetResizable(True)
        scroll.setFrameShape(QScrollArea.Shape.NoFrame)
        scroll.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
        self.prompt_scroll = scroll

        # --- tabs
        self.tabs = QTabWidget(self)
        self.tabs.setDocumentMode(True)
        self.tabs.setIconSize(QSize(18, 18))
        self.txt_viewer = ImageViewer(self)
        self.txt_viewer.set_placeholder("Your image appears here.\n\nWrite a prompt and press "
                                        "Generate (Ctrl+Enter).")
        self.txt_viewer.setAccessibleName("Result")
        self.tabs.addTab(self._result_pane(self.txt_viewer), icon("text"), "Text to image")

        self.source_canvas = SourceCanvas(self)
        self.img_result = CompareViewer(self)
        self.img_result.set_placeholder("The result appears here")
        self.img_result.setAccessibleName("Image to image result")
        self.tabs.addTab(self._pair(self.source_canvas, self.img_result, "Source", "Result"),
                         icon("img2img"), "Image to image")

        self.mask_canvas = MaskCanvas(self)
        self.inpaint_result = CompareViewer(self)
        self.inpaint_result.set_placeholder("The result appears here")
        self.inpaint_result.setAccessibleName("Inpaint result")
        self.tabs.addTab(self._pair(self.mask_canvas, self.inpaint_result,
                                    "Source and mask", "Result"), icon("inpaint"), "Inpaint")

        self.gallery = GalleryWidget(self)
        self.tabs.addTab(self.gallery, icon("gallery"), "Gallery")
        self.tabs.currentChanged.connect(self._on_tab_changed)

        # --- progress row
        self.progress_bar = QProgressBar(self)
        self.progress_bar.setTextVisible(True)
        self.progress_bar.setFormat("Ready")
        self.progress_bar.setValue(0)
        self.progress_bar.setAccessibleName("Generation progress")
        self.queue_label = QLabel("", self)
        prow = QHBoxLayout()
        prow.setContentsMargins(0, 0, 0, 0)
        prow.addWidget(self.progress_bar, 1)
        prow.addWidget(self.queue_label)

        self.message_bar = MessageBar(self)
        right = QWidget(self)
        rv = QVBoxLayout(right)
        rv.setContentsMargins(4, 6, 8, 6)
        rv.setSpacing(6)
        rv.addWidget(self.message_bar)
        rv.addWidget(self.tabs, 1)
        rv.addLayout(prow)

        # the panel scrolls; its Generate / Cancel bar stays in view under it
        left = QWidget(self)
        lv = QVBoxLayout(left)
        lv.setContentsMargins(0, 0, 0, 0)
        lv.setSpacing(6)
        lv.addWidget(scroll, 1)
        bar = self.prompt_panel.action_bar
        bar.setParent(left)
        bar.setContentsMargins(10, 0, 10, 6)
        lv.addWidget(bar)
        splitter = QSplitter(Qt.Orientation.Horizontal, self)
        splitter.addWidget(left)
        splitter.addWidget(right)
        splitter.setStretchFactor(0, 0)
        splitter.setStretchFactor(1, 1)
        splitter.setSizes([400, 1000])
        splitter.setChildrenCollapsible(False)
        self.splitter = splitter
        self.setCentralWidget(splitter)

        self.prompt_panel.generateRequested.connect(self.generate)
        self.prompt_panel.cancelRequested.connect(self.cancel)
        self.prompt_panel.sizeChanged.connect(self.source_canvas.set_target_size)
        panel = self.prompt_panel
        panel.widget("mask_blur").valueChanged.connect(self.mask_canvas.set_blur_preview)
        self.mask_canvas.set_blur_preview(panel.control("mask_blur").value())  # from the start
        panel.widget("inpaint_only_masked").toggled.connect(self._update_masked_preview)
        panel.widget("inpaint_padding").valueChanged.connect(self._update_masked_preview)
        for name in OUTPAINT_FIELDS:  # the panel holds the sides; the canvas shows and edits
            panel.widget(name).valueChanged.connect(self._show_outpaint)
        panel.sizeChanged.connect(self.mask_canvas.set_outpaint_target)
        self.mask_canvas.outpaintChanged.connect(self._outpaint_from_canvas)
        self.mask_canvas.set_outpaint_target(panel.control("width").value(),
                                             panel.control("height").value())
        self.source_canvas.errorOccurred.connect(self.show_error)
        self.mask_canvas.errorOccurred.connect(self.show_error)
        self.gallery.sendToImg2img.connect(self.send_to_img2img)
        self.gallery.sendToInpaint.connect(self.send_to_inpaint)
        self.gallery.reuseParameters.connect(self.restore_parameters_from)
        self.gallery.message.connect(self._on_gallery_message)
        self.source_canvas.set_target_size(panel.control("width").value(),
                                           panel.control("height").value())
        control = panel.control_section  # its units use the tabs' source image and mask
        control.source_images = self._control_source
        control.errorOccurred.connect(self.show_error)
        self.queue.modelReady.connect(lambda ready: control.set_arch(ready.arch))

    def _pair(self, left: QWidget, right: CompareViewer, left_title: str, right_title: str
              ) -> QWidget:
        """Source and result side by side, sharing the width equally; the result can
        compare itself with its source (the Compare button, C)."""
        splitter = QSplitter(Qt.Orientation.Horizontal, self)
        compare = QToolButton(self)
        compare.setText("Compare")
        compare.setCheckable(True)
        compare.setToolTip("Show the source left of a divider you drag across the result")
        compare.toggled.connect(right.set_compare)
        right.set_before_source(functools.partial(self._before_image, right))
        self._compare_buttons[id(right)] = compare
        for widget, title, extra in ((left, left_title, None), (right, right_title, compare)):
            box = QWidget(splitter)
            lay = QVBoxLayout(box)
            lay.setContentsMargins(0, 0, 0, 0)
            lay.setSpacing(4)
            head_row = QHBoxLayout()
            head = QLabel(title, box)
            head.setObjectName("sectionTitle")
            head_row.addWidget(head)
            head_row.addStretch(1)
            if extra is not None:
                head_row.addWidget(extra)
            lay.addLayout(head_row)
            lay.addWidget(self._result_pane(right) if widget is right else widget, 1)
            splitter.addWidget(box)
        splitter.setStretchFactor(0, 1)
        splitter.setStretchFactor(1, 1)
        splitter.setSizes([500, 500])
        splitter.setChildrenCollapsible(False)
        return splitter

    def _before_image(self, viewer: CompareViewer) -> QImage | None:
        """The source of the result ``viewer`` shows, fitted as the engine fitted it."""
        request = self.result_pane(viewer).request
        if request is None or not request.init_image:
            return None
        from sdstudio.core.errors import ImageInputError
        from sdstudio.core.images import open_image
        from sdstudio.ui.canvas.source_canvas import fit_frame
        from sdstudio.ui.imageutil import pil_to_qimage

        try:
            source = pil_to_qimage(open_image(request.init_image, "source image").convert("RGB"))
        except (ImageInputError, OSError, ValueError):
            return None
        frame = fit_frame(request.resize_mode, source.width(), source.height(),
                          request.width, request.height).toRect()
        fitted = source.copy(frame).scaled(request.width, request.height,
                                           Qt.AspectRatioMode.IgnoreAspectRatio,
                                           Qt.TransformationMode.SmoothTransformation)
        return outpaint_canvas(fitted, request)

    def _build_queue_dock(self) -> None:
        dock = QDockWidget("Queue", self)
        dock.setObjectName("queueDock")
        dock.setFeatures(QDockWidget.DockWidgetFeature.DockWidgetMovable
                         | QDockWidget.DockWidgetFeature.DockWidgetClosable)
        self.queue_view = QueueView(self.queue, dock)
        dock.setWidget(self.queue_view)
        dock.setMinimumWidth(200)
        self.addDockWidget(Qt.DockWidgetArea.RightDockWidgetArea, dock)
        self.queue_dock = dock

    def _build_actions(self) -> None:
        mb = self.menuBar()
        file_menu = mb.addMenu("&File")
        open_image = QAction(icon("file"), "&Open image…", self)
        open_image.setShortcut(QKeySequence(QKeySequence.StandardKey.Open))
        open_image.triggered.connect(self.open_image)
        file_menu.addAction(open_image)
        restore = QAction(icon("restore"), "Restore &parameters from image…", self)
        restore.setShortcut(QKeySequence("Ctrl+Shift+O"))
        restore.setToolTip("Put the prompt and settings an image was made with into the panel")
        restore.triggered.connect(self.restore_parameters_dialog)
        file_menu.addAction(restore)
        # Ctrl+V anywhere in the window pastes into the image-to-image or inpaint canvas; a
        # focused text box or canvas claims the key first (shortcut override), so text paste
        # still goes into text
        self.paste_image_action = QAction("Paste &image", self)
        self.paste_image_action.setShortcut(QKeySequence(QKeySequence.StandardKey.Paste))
        self.paste_image_action.triggered.connect(self.paste_image)
        file_menu.addAction(self.paste_image_action)
        file_menu.addSeparator()
        file_menu.addAction(self.open_model_file_action)
        file_menu.addAction(self.open_model_folder_action)
        file_menu.addAction(self.models_action)
        reload_models = QAction(icon("refresh"), "&Rescan model folders", self)
        reload_models.triggered.connect(self.queue.refresh_models)
        file_menu.addAction(reload_models)
        file_menu.addSeparator()
        open_output = QAction(icon("folder"), "Open o&utput folder", self)
        open_output.triggered.connect(lambda: QDesktopServices.openUrl(
            QUrl.fromLocalFile(str(self.settings.output_path))))
        file_menu.addAction(open_output)
        file_menu.addAction(self.settings_action)
        file_menu.addSeparator()
        quit_action = QAction("&Quit", self)
        quit_action.setShortcuts(_standard_keys(QKeySequence.StandardKey.Quit, "Ctrl+Q"))
        quit_action.triggered.connect(self.close)
        file_menu.addAction(quit_action)

        gen_menu = mb.addMenu("&Generate")
        self.generate_action = QAction(icon("generate"), "&Generate", self)
        self.generate_action.setShortcuts([QKeySequence("Ctrl+Return"),
                                           QKeySequence("Ctrl+Enter")])
        self.generate_action.setShortcutContext(Qt.ShortcutContext.WindowShortcut)
        self.generate_action.triggered.connect(self.generate)
        self.cancel_action = QAction(icon("stop"), "&Cancel", self)
        self.cancel_action.setShortcut(QKeySequence(Qt.Key.Key_Escape))
        self.cancel_action.setShortcutContext(Qt.ShortcutContext.WindowShortcut)
        self.cancel_action.triggered.connect(self.cancel)
        self.cancel_action.setEnabled(False)
        cancel_all = QAction("Cancel &all jobs", self)
        cancel_all.triggered.connect(self.queue.cancel_all)
        clear = QAction("C&lear finished jobs", self)
        clear.triggered.connect(self.queue.clear_finished)
        for a in (self.generate_action, self.cancel_action, cancel_all, clear):
            gen_menu.addAction(a)
        self.addAction(self.generate_action)
        self.addAction(self.cancel_action)

        view_menu = mb.addMenu("&View")
        for i in range(self.tabs.count()):
            self._add_tab_action(view_menu, i)
        view_menu.addSeparator()
        view_menu.addAction(self.queue_dock.toggleViewAction())
        self.view_menu = view_menu

        help_menu = mb.addMenu("&Help")
        guide = QAction("&User guide", self)
        guide.setShortcut(QKeySequence(QKeySequence.StandardKey.HelpContents))
        guide.triggered.connect(self.open_user_guide)
        about = QAction("&About SD Studio", self)
        about.triggered.connect(self.about)
        help_menu.addAction(guide)
        help_menu.addAction(about)

    def _add_tab_action(self, menu: Any, index: int) -> None:
        text = self.tabs.tabText(index)
        action = QAction(text, self)
        if index < 9:
            action.setShortcut(QKeySequence(f"Alt+{index + 1}"))
        widget = self.tabs.widget(index)
        action.triggered.connect(lambda _=False, w=widget: self.tabs.setCurrentWidget(w))
        menu.addAction(action)

    def _connect_queue(self) -> None:
        q = self.queue
        q.modelsListed.connect(self._on_models_listed)
        q.notice.connect(lambda text: self.message_bar.show_info(text))
        self._connect_jobs()

    # =============================================================== public API
    @property
    def current_model(self) -> str:
        """The model the next generation uses ("" = the built-in demo model)."""
        return self._current_model

    def add_panel(self, widget: QWidget, title: str, icon_name: str = "") -> int:
        """Add a tab (before the gallery) for another panel, e.g. batch. Returns its index."""
        index = self.tabs.indexOf(self.gallery)
        index = self.tabs.insertTab(index, widget, icon(icon_name) if icon_name else icon(""),
                                    title)
        self.view_menu.clear()
        for i in range(self.tabs.count()):
            self._add_tab_action(self.view_menu, i)
        self.view_menu.addSeparator()
        self.view_menu.addAction(self.queue_dock.toggleViewAction())
        return index

    def start(self) -> None:
        """After the window is shown: start the worker, load the last model, list models and
        fill the gallery (all in the background)."""
        self.queue.set_output(str(self.settings.output_path), self.settings.filename_pattern)
        self.queue.configure(self.settings.engine)
        self.queue.start()
        self.queue.load_model(self._current_model)
        self.queue.refresh_models()
        self.refresh_addons()  # the VAE folders: walked after the window is shown, not before
        self.prompt_panel.control_section.refresh_models()  # the ControlNet folders, too
        QTimer.singleShot(200, self.load_gallery)
        if self.welcome is not None:
            self.welcome.start()

    def load_gallery(self) -> None:
        if not self._gallery_loaded and not self._closing:
            self._gallery_loaded = True
            self.gallery.load_folder(self.settings.output_path)

    def current_mode(self) -> Mode:
        index = self.tabs.currentIndex()
        return {TAB_IMG2IMG: Mode.IMG2IMG, TAB_INPAINT: Mode.INPAINT}.get(index, Mode.TXT2IMG)

    def _control_source(self) -> tuple[QImage | None, QImage | None]:
        """The source image (and inpaint mask) a control unit without an image of its own
        uses: the current tab's."""
        mode = self.current_mode()
        if mode is Mode.IMG2IMG:
            return self.source_canvas.image(), None
        if mode is Mode.INPAINT:
            return self.mask_canvas.image(), self.mask_canvas.mask_image()
        return None, None

    def build_request(self) -> GenerationRequest:
        """The request for the current tab, with its images saved as input PNGs.
        Raises SDStudioError (RequestError/ImageInputError) with a message for the person."""
        from sdstudio.core.errors import ImageInputError
        from sdstudio.ui.imageutil import save_input_image

        request = self.prompt_panel.request().replace(
            model=self._current_model, resize_mode=self.source_canvas.fit_mode())
        mode = self.current_mode()
        if mode is not Mode.INPAINT:  # the panel's outpaint sides belong to the inpaint tab
            request = request.replace(**dict.fromkeys(OUTPAINT_FIELDS, 0))
        if mode is Mode.IMG2IMG:
            image = self.source_canvas.image()
            if image is None:
                raise ImageInputError("Open, paste or drop a source image first")
            request = request.replace(init_image=str(save_input_image(image, "init")))
        elif mode is Mode.INPAINT:
            image = self.mask_canvas.image()
            if image is None:
                raise ImageInputError("Open, paste or drop an image to inpaint first")
            outpaint = self.mask_canvas.has_outpaint()
            if not self.mask_canvas.has_mask() and not outpaint:
                raise ImageInputError("Paint a mask over the part to repaint (or extend the "
                                      "image to outpaint) first")
            request = request.replace(init_image=str(save_input_image(image, "init")))
            if self.mask_canvas.has_mask():  # outpainting alone needs none: its area is masked
                mask = self.mask_canvas.mask_image()
                assert mask is not None
                request = request.replace(mask=str(save_input_image(mask, "mask")))
        control_units = self.prompt_panel.control_section.units()
        if control_units:
            request = request.replace(control_units=control_units)
        return request.validated()

    def generate(self) -> int | None:
        """Queue a request from the panel and the current tab. Returns the job id."""
        try:
            request = self.build_request()
        except SDStudioError as exc:
            self.show_error(str(exc), exc.details)
            return None
        except OSError as exc:
            self.show_error(f"Could not save the input image: {describe_error(exc)}")
            return None
        tab = self.tabs.currentIndex()
        if tab not in (TAB_TXT2IMG, TAB_IMG2IMG, TAB_INPAINT):
            tab = TAB_TXT2IMG
        job_id = self.queue.submit_request(request)
        self._job_tab[job_id] = tab
        self.prompt_panel.remember_prompts()  # the prompt history (Ctrl+H)
        self._persist()
        return job_id

    def cancel(self) -> None:
        self.queue.cancel_running()

    def show_error(self, message: str, details: str = "") -> None:
        self.message_bar.show_error(message, details)

    def open_image(self) -> None:
        path = file_dialogs.open_file(self, "images", "Open an image",
                                      "Images (*.png *.jpg *.jpeg *.webp *.bmp);;All files (*)")
        if path:
            self.open_path(path)

    def open_path(self, path: str) -> None:
        """Open an image into the canvas of the current tab (image to image from any tab
        without one). Restoring an image's parameters is its own action."""
        if self.tabs.currentIndex() == TAB_INPAINT:
            self.mask_canvas.load_file(path)
        else:
            self.tabs.setCurrentIndex(TAB_IMG2IMG)
            self.source_canvas.load_file(path)

    def restore_parameters_dialog(self) -> None:
        path = file_dialogs.open_file(self, "images", "Restore parameters from an image",
                                      "Images (*.png *.jpg *.jpeg *.webp);;All files (*)")
        if path:
            self.restore_parameters_from(path)

    def paste_image(self) -> bool:
        """Ctrl+V outside a text box: the clipboard's image into the image-to-image or
        inpaint canvas (the one of the current tab; image to image from the others)."""
        if self.tabs.currentIndex() == TAB_INPAINT:
            return self.mask_canvas.paste()
        if self.tabs.currentIndex() != TAB_IMG2IMG:
            self.tabs.setCurrentIndex(TAB_IMG2IMG)
        return self.source_canvas.paste()

    def send_to_img2img(self, path: str) -> None:
        if self.source_canvas.load_file(path):
            self.tabs.setCurrentIndex(TAB_IMG2IMG)

    def send_to_inpaint(self, path: str) -> None:
        if self.mask_canvas.load_file(path):
            self.tabs.setCurrentIndex(TAB_INPAINT)

    def open_settings(self) -> bool:
        from sdstudio.ui.settings_dialog import SettingsDialog

        dialog = SettingsDialog(self.settings, self)
        if dialog.exec() != SettingsDialog.DialogCode.Accepted:
            return False
        self.apply_settings(dialog.result_settings())
        return True

    def apply_settings(self, new: Settings) -> None:
        old = self.settings
        try:
            from sdstudio.storage.naming import check_pattern

            check_pattern(new.filename_pattern)
        except SDStudioError as exc:
            self.show_error(f"File name pattern not changed: {exc}")
            new = new.replace(filename_pattern=old.filename_pattern)
        self.settings = new
        self.queue.configure(new.engine)
        self.queue.set_output(str(new.output_path), new.filename_pattern)
        if new.engine.model_dirs != old.engine.model_dirs:
            self.queue.refresh_models()
        if new.engine.vae_dirs != old.engine.vae_dirs:
            self.refresh_addons()
        if new.engine.controlnet_dirs != old.engine.controlnet_dirs:
            self.prompt_panel.control_section.refresh_models()
        if new.output_path != old.output_path:
            self._gallery_loaded = False
            self.load_gallery()
        self._persist()
        self.settingsChanged.emit(new)

    def open_user_guide(self) -> None:
        """The user guide in a window of SD Studio's own (F1)."""
        from sdstudio.ui.help_viewer import HelpWindow

        if self._help_window is None:
            self._help_window = HelpWindow(self)
        self._help_window.show()
        self._help_window.raise_()
        self._help_window.activateWindow()

    def about(self) -> None:
        from sdstudio import __version__ as version

        QMessageBox.about(self, "About SD Studio",
                          f"<h3>SD Studio {version}</h3><p>A desktop app for Stable Diffusion "
                          "on your own GPU.</p><p>Latent diffusion: Rombach et al., CVPR 2022."
                          "</p>")

    # ============================================================ persistence
    def _restore_state(self) -> None:
        saved = self.settings.last_request
        self.prompt_panel.restore(saved)
        fit = saved.get("resize_mode")  # the source canvas' Fit, remembered with the panel
        if fit in request_spec("resize_mode").choices:
            self.source_canvas.set_fit_mode(str(fit))
        ui = self.settings.ui
        file_dialogs.load(ui.get("dialog_folders"))
        geometry = ui.get("geometry")
        if isinstance(geometry, str):
            self.restoreGeometry(QByteArray.fromBase64(geometry.encode()))
        state = ui.get("window_state")
        if isinstance(state, str):
            self.restoreState(QByteArray.fromBase64(state.encode()))
        else:  # first start: a narrow queue leaves the canvases room on a laptop screen
            QTimer.singleShot(0, lambda: self.resizeDocks([self.queue_dock], [QUEUE_WIDTH],
                                                          Qt.Orientation.Horizontal))
        self.prompt_panel.show_more(ui.get("more_options") is True)
        self.prompt_panel.control_section.restore_saved(ui.get("control_units"))
        self.prompt_panel.show_control(ui.get("control_open") is True)
        tab = ui.get("tab")
        if isinstance(tab, int) and 0 <= tab < self.tabs.count():
            self.tabs.setCurrentIndex(tab)
        self._on_tab_changed(self.tabs.currentIndex())

    def _persist(self) -> None:
        ui = dict(self.settings.ui)
        ui["geometry"] = bytes(self.saveGeometry().toBase64().data()).decode()
        ui["window_state"] = bytes(self.saveState().toBase64().data()).decode()
        ui["tab"] = min(self.tabs.currentIndex(), TAB_INPAINT + 1)
        ui["more_options"] = self.prompt_panel.more_shown()
        ui["control_open"] = self.prompt_panel.control_shown()
        try:  # the units, their images as the input files they are saved to
            ui["control_units"] = self.prompt_panel.control_section.saved()
        except (SDStudioError, OSError):  # an image that cannot be saved: not remembered
            ui.pop("control_units", None)
        ui["dialog_folders"] = file_dialogs.saved()
        values = {**self.prompt_panel.values(), "resize_mode": self.source_canvas.fit_mode()}
        self.settings = self.settings.replace(last_request=values, ui=ui)
        try:
            save_settings(self.settings)
        except OSError as exc:
            self.message_bar.show_error(f"Settings could not be saved: {describe_error(exc)}")

    def _on_gallery_message(self, kind: str, text: str) -> None:
        if kind == "error":
            self.show_error(text)
        else:
            self.statusBar().showMessage(text, 4000)

    # ================================================================== events
    def _on_tab_changed(self, index: int) -> None:
        self.message_bar.hide_info()  # "Restored from…", "Moved to the trash": that tab's news
        mode = {TAB_IMG2IMG: Mode.IMG2IMG, TAB_INPAINT: Mode.INPAINT}.get(index, Mode.TXT2IMG)
        self.prompt_panel.set_mode(mode)
        if self.tabs.widget(index) is self.gallery:
            self.load_gallery()

    def _show_outpaint(self, *args: object) -> None:
        self.mask_canvas.set_outpaint({name.removeprefix("outpaint_"):
                                       self.prompt_panel.control(name).value()
                                       for name in OUTPAINT_FIELDS})

    def _outpaint_from_canvas(self) -> None:
        for side, px in self.mask_canvas.outpaint().items():
            self.prompt_panel.control(f"outpaint_{side}").set_value(px)

    def _update_masked_preview(self, *args: object) -> None:
        panel = self.prompt_panel
        self.mask_canvas.set_masked_area_preview(
            panel.control("inpaint_padding").value()
            if panel.control("inpaint_only_masked").value() else None)

    def dragEnterEvent(self, event: QDragEnterEvent) -> None:
        mime = event.mimeData()
        if mime.hasImage() or any(u.isLocalFile() and u.toLocalFile().lower().endswith(
                IMAGE_SUFFIXES) for u in mime.urls()):
            event.acceptProposedAction()
        else:
            event.ignore()

    def dropEvent(self, event: QDropEvent) -> None:
        mime = event.mimeData()
        files = [u.toLocalFile() for u in mime.urls() if u.isLocalFile()]
        if not files:
            if mime.hasImage() and self.tabs.currentIndex() in (TAB_IMG2IMG, TAB_INPAINT):
                canvas = (self.source_canvas if self.tabs.currentIndex() == TAB_IMG2IMG
                          else self.mask_canvas)
                canvas.load_mime(mime)
                event.acceptProposedAction()
            return
        event.acceptProposedAction()
        path = files[0]
        if self.restore_parameters_from(path, quiet_failure=True):
            return
        if self.tabs.currentIndex() in (TAB_IMG2IMG, TAB_INPAINT):
            self.open_path(path)
        else:
            self.show_error(f"{Path(path).name} carries no generation parameters. Drop it on "
                            "the Image to image or Inpaint tab to use it as a source image.")

    def closeEvent(self, event: QCloseEvent) -> None:
        if not self._closing:
            self._closing = True
            self._persist()
            self.prompt_panel.shutdown()
            self.gallery.shutdown()
            if self.welcome is not None:
                self.welcome.shutdown()
            if self.model_manager is not None:  # downloads cancelled, partial files kept
                self.model_manager.shutdown()
            self.queue.shutdown(self.shutdown_timeout_ms)
        event.accept()
