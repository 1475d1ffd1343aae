"""The main window: model bar, prompt panel, the mode tabs with live preview, gallery, queue,
progress and status. It builds requests and observes the JobQueue; it never waits on the
engine and never imports it."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from PySide6.QtCore import QByteArray, QSize, Qt, QTimer, QUrl, Signal
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
    QComboBox,
    QDockWidget,
    QFileDialog,
    QHBoxLayout,
    QLabel,
    QMainWindow,
    QMessageBox,
    QProgressBar,
    QScrollArea,
    QSizePolicy,
    QSplitter,
    QTabWidget,
    QToolBar,
    QVBoxLayout,
    QWidget,
)

from sdstudio.core.errors import SDStudioError
from sdstudio.core.events import LoadProgress, ModelReady, Progress, VramUsage
from sdstudio.core.paths import ADDON_SUFFIXES, named_files
from sdstudio.core.request import GenerationRequest, Mode, request_spec
from sdstudio.core.settings import Settings, save_settings
from sdstudio.ui.canvas.mask_canvas import MaskCanvas
from sdstudio.ui.canvas.source_canvas import SourceCanvas
from sdstudio.ui.canvas.viewer import ImageViewer
from sdstudio.ui.gallery import IMAGE_SUFFIXES, GalleryWidget
from sdstudio.ui.prompt_panel import PromptPanel
from sdstudio.ui.restore import missing_loras, restore_message, summary
from sdstudio.ui.theme import app_icon, icon
from sdstudio.ui.widgets import MessageBar, QueueView
from sdstudio.worker import Failure, JobImage, JobQueue

APP_TITLE = "SD Studio"
DEMO_LABEL = "Demo model — untrained demo (images are noise)"
TAB_TXT2IMG, TAB_IMG2IMG, TAB_INPAINT = 0, 1, 2
MODEL_FILE_FILTER = "Stable Diffusion models (*.safetensors *.ckpt *.pt *.bin);;All files (*)"


def format_duration(seconds: float) -> str:
    seconds = max(0, round(seconds))
    if seconds < 60:
        return f"{seconds} s"
    minutes, s = divmod(seconds, 60)
    if minutes < 60:
        return f"{minutes} min {s:02d} s"
    hours, m = divmod(minutes, 60)
    return f"{hours} h {m:02d} min"


def progress_text(event: Progress) -> tuple[int, int, str]:
    """(value, maximum, text) for the progress bar: step i/n, s/it and time left."""
    total = max(1, event.total)
    done = (event.run - 1) * total + event.step
    maximum = total * max(1, event.runs)
    text = f"Step {event.step}/{event.total}"
    if event.runs > 1:
        text += f" · run {event.run}/{event.runs}"
    if event.s_per_it > 0:
        left = format_duration((maximum - done) * event.s_per_it)
        text += f" · {event.s_per_it:.2f} s/it · {left} left"
    return done, maximum, text


def _standard_keys(key: QKeySequence.StandardKey, fallback: str) -> list[QKeySequence]:
    """The platform's keys for a standard action; many Linux desktops define none for
    Preferences or Quit, so fall back to the common ones there."""
    return QKeySequence.keyBindings(key) or [QKeySequence(fallback)]


class MainWindow(QMainWindow):
    settingsChanged = Signal(object)  # Settings

    def __init__(self, settings: Settings, queue: JobQueue,
                 parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.settings = settings
        self.queue = queue
        self._job_tab: dict[int, int] = {}
        self._job_started: dict[int, float] = {}
        self._shown_result: set[int] = set()
        self._models: list[dict[str, Any]] = []
        self._current_model = settings.engine.default_model
        self._closing = False
        self._gallery_loaded = False
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
        self._restore_state()
        self._refresh_model_combo()

    # ================================================================= building
    def _build_model_bar(self) -> None:
        bar = QToolBar("Model", self)
        bar.setObjectName("modelBar")
        bar.setMovable(False)
        bar.setIconSize(QSize(18, 18))
        bar.setToolButtonStyle(Qt.ToolButtonStyle.ToolButtonTextBesideIcon)
        label = QLabel("  &Model ", bar)
        self.model_combo = QComboBox(bar)
        self.model_combo.setMinimumWidth(340)
        self.model_combo.setSizeAdjustPolicy(QComboBox.SizeAdjustPolicy.AdjustToContents)
        self.model_combo.setAccessibleName("Model")
        self.model_combo.setToolTip("The model used for the next generation")
        self.model_combo.activated.connect(self._on_model_chosen)
        label.setBuddy(self.model_combo)
        bar.addWidget(label)
        bar.addWidget(self.model_combo)
        self.demo_badge = QLabel("untrained demo", bar)
        self.demo_badge.setObjectName("demoBadge")
        self.demo_badge.setToolTip("The built-in demo model is untrained: its images are noise."
                                   " Open a real Stable Diffusion model to make pictures.")
        bar.addWidget(self.demo_badge)
        bar.addSeparator()
        self.open_model_file_action = QAction(icon("file"), "Open model &file…", self)
        self.open_model_file_action.setToolTip("Open a .safetensors or .ckpt checkpoint")
        self.open_model_file_action.triggered.connect(self.open_model_file)
        self.open_model_folder_action = QAction(icon("folder"), "Open model f&older…", self)
        self.open_model_folder_action.setToolTip("Open a diffusers model folder "
                                                 "(with model_index.json)")
        self.open_model_folder_action.triggered.connect(self.open_model_folder)
        bar.addAction(self.open_model_file_action)
        bar.addAction(self.open_model_folder_action)
        spacer = QWidget(bar)
        spacer.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Preferred)
        bar.addWidget(spacer)
        self.settings_action = QAction(icon("settings"), "&Settings…", self)
        self.settings_action.setShortcuts(_standard_keys(QKeySequence.StandardKey.Preferences,
                                                         "Ctrl+,"))
        self.settings_action.triggered.connect(self.open_settings)
        bar.addAction(self.settings_action)
        self.addToolBar(Qt.ToolBarArea.TopToolBarArea, bar)
        self.model_bar = bar

    def _build_central(self) -> None:
        self.prompt_panel = PromptPanel(self)
        scroll = QScrollArea(self)
        scroll.setWidget(self.prompt_panel)
        scroll.setWidgetResizable(True)
        scroll.setFrameShape(QScrollArea.Shape.NoFrame)
        scroll.setMinimumWidth(310)
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
        self.tabs.addTab(self.txt_viewer, icon("text"), "&Text to image")

        self.source_canvas = SourceCanvas(self)
        self.img_result = ImageViewer(self)
        self.img_result.set_placeholder("The result appears here")
        self.img_result.setAccessibleName("Image to image result")
        self.tabs.addTab(self._pair(self.source_canvas, self.img_result, "Source", "Result"),
                         icon("img2img"), "&Image to image")

        self.mask_canvas = MaskCanvas(self)
        self.inpaint_result = ImageViewer(self)
        self.inpaint_result.set_placeholder("The result appears here")
        self.inpaint_result.setAccessibleName("Inpaint result")
        self.tabs.addTab(self._pair(self.mask_canvas, self.inpaint_result,
                                    "Source and mask", "Result"), icon("inpaint"), "I&npaint")

        self.gallery = GalleryWidget(self)
        self.tabs.addTab(self.gallery, icon("gallery"), "Ga&llery")
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

        splitter = QSplitter(Qt.Orientation.Horizontal, self)
        splitter.addWidget(scroll)
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
        panel.widget("inpaint_only_masked").toggled.connect(self._update_masked_preview)
        panel.widget("inpaint_padding").valueChanged.connect(self._update_masked_preview)
        self.source_canvas.errorOccurred.connect(self.show_error)
        self.mask_canvas.errorOccurred.connect(self.show_error)
        self.gallery.sendToImg2img.connect(self.send_to_img2img)
        self.gallery.sendToInpaint.connect(self.send_to_inpaint)
        self.gallery.reuseParameters.connect(self.restore_parameters_from)
        self.gallery.message.connect(self._on_gallery_message)
        self.source_canvas.set_target_size(panel.control("width").value(),
                                           panel.control("height").value())

    def _pair(self, left: QWidget, right: QWidget, left_title: str, right_title: str
              ) -> QWidget:
        splitter = QSplitter(Qt.Orientation.Horizontal, self)
        for widget, title in ((left, left_title), (right, right_title)):
            box = QWidget(splitter)
            lay = QVBoxLayout(box)
            lay.setContentsMargins(0, 0, 0, 0)
            lay.setSpacing(4)
            head = QLabel(title, box)
            head.setObjectName("sectionTitle")
            lay.addWidget(head)
            lay.addWidget(widget, 1)
            splitter.addWidget(box)
        splitter.setSizes([600, 400])
        splitter.setChildrenCollapsible(False)
        return splitter

    def _build_queue_dock(self) -> None:
        dock = QDockWidget("Queue", self)
        dock.setObjectName("queueDock")
        dock.setFeatures(QDockWidget.DockWidgetFeature.DockWidgetMovable
                         | QDockWidget.DockWidgetFeature.DockWidgetClosable)
        self.queue_view = QueueView(self.queue, dock)
        dock.setWidget(self.queue_view)
        dock.setMinimumWidth(220)
        self.addDockWidget(Qt.DockWidgetArea.RightDockWidgetArea, dock)
        self.queue_dock = dock

    def _build_status_bar(self) -> None:
        sb = self.statusBar()
        self.load_label = QLabel("Starting the engine…", self)
        self.load_bar = QProgressBar(self)
        self.load_bar.setMaximumWidth(180)
        self.load_bar.setMaximumHeight(14)
        self.load_bar.setTextVisible(False)
        self.load_bar.setRange(0, 0)
        self.model_label = QLabel("Model: —", self)
        self.device_label = QLabel("Device: —", self)
        self.dtype_label = QLabel("", self)
        self.memory_label = QLabel("", self)
        self.vram_label = QLabel("", self)
        self.vram_label.hide()
        sb.addWidget(self.load_label)
        sb.addWidget(self.load_bar)
        for w in (self.model_label, self.device_label, self.dtype_label, self.memory_label,
                  self.vram_label):
            sb.addPermanentWidget(w)

    def _build_actions(self) -> None:
        mb = self.menuBar()
        file_menu = mb.addMenu("&File")
        open_image = QAction(icon("file"), "&Open image…", self)
        open_image.setShortcut(QKeySequence(QKeySequence.StandardKey.Open))
        open_image.triggered.connect(self.open_image)
        file_menu.addAction(open_image)
        file_menu.addSeparator()
        file_menu.addAction(self.open_model_file_action)
        file_menu.addAction(self.open_model_folder_action)
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
        q.engineStarted.connect(lambda: self._set_load_status("Engine ready", None))
        q.engineFailed.connect(self._on_engine_failed)
        q.loadStarted.connect(self._on_load_started)
        q.loadProgress.connect(self._on_load_progress)
        q.modelReady.connect(self._on_model_ready)
        q.modelFailed.connect(self._on_model_failed)
        q.modelsListed.connect(self._on_models_listed)
        q.jobStarted.connect(self._on_job_started)
        q.jobProgress.connect(self._on_job_progress)
        q.jobPreview.connect(self._on_job_preview)
        q.imageReady.connect(self._on_image_ready)
        q.jobFinished.connect(self._on_job_finished)
        q.jobFailed.connect(self._on_job_failed)
        q.taskProgress.connect(self._on_task_progress)
        q.notice.connect(lambda text: self.message_bar.show_info(text))
        q.busyChanged.connect(self._update_running)
        q.rowsInserted.connect(self._update_running)

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
        QTimer.singleShot(200, self.load_gallery)

    def load_gallery(self) -> None:
        if not self._gallery_loaded and not self._closing:
            self._gallery_loaded = True
            self.gallery.load_folder(self.settings.output_path)

    def current_mode(self) -> Mode:
        index = self.tabs.currentIndex()
        return {TAB_IMG2IMG: Mode.IMG2IMG, TAB_INPAINT: Mode.INPAINT}.get(index, Mode.TXT2IMG)

    def build_request(self) -> GenerationRequest:
        """The request for the current tab, with its images saved as input PNGs.
        Raises SDStudioError (RequestError/ImageInputError) with a message for the person."""
        from sdstudio.core.errors import ImageInputError
        from sdstudio.ui.imageutil import save_input_image

        request = self.prompt_panel.request().replace(
            model=self._current_model, resize_mode=self.source_canvas.fit_mode())
        mode = self.current_mode()
        if mode is Mode.IMG2IMG:
            image = self.source_canvas.image()
            if image is None:
                raise ImageInputError("Open, paste or drop a source image first")
            request = request.replace(init_image=str(save_input_image(image, "init")))
        elif mode is Mode.INPAINT:
            image = self.mask_canvas.image()
            if image is None:
                raise ImageInputError("Open, paste or drop an image to inpaint first")
            if not self.mask_canvas.has_mask():
                raise ImageInputError("Paint a mask over the part to repaint first")
            mask = self.mask_canvas.mask_image()
            assert mask is not None
            request = request.replace(init_image=str(save_input_image(image, "init")),
                                      mask=str(save_input_image(mask, "mask")))
        return request.validated()

    def generate(self) -> int | None:
        """Queue a request from the panel and the current tab. Returns the job id."""
        try:
            request = self.build_request()
        except SDStudioError as exc:
            self.show_error(str(exc), exc.details)
            return None
        except OSError as exc:
            self.show_error(f"Could not save the input image: {exc.strerror or exc}")
            return None
        tab = self.tabs.currentIndex()
        if tab not in (TAB_TXT2IMG, TAB_IMG2IMG, TAB_INPAINT):
            tab = TAB_TXT2IMG
        job_id = self.queue.submit(request)
        self._job_tab[job_id] = tab
        self._persist()
        return job_id

    def cancel(self) -> None:
        self.queue.cancel_running()

    def show_error(self, message: str, details: str = "") -> None:
        self.message_bar.show_error(message, details)

    def select_model(self, model: str) -> None:
        """Use ``model`` ("" = the built-in demo) from now on: load it and remember it."""
        self._current_model = model
        recent = [m for m in self.settings.ui.get("recent_models", []) if m != model]
        if model:
            recent.insert(0, model)
        ui = dict(self.settings.ui)
        ui["recent_models"] = recent[:10]
        self.settings = self.settings.replace(
            engine=self.settings.engine.replace(default_model=model), ui=ui)
        self.queue.configure(self.settings.engine)
        self.queue.load_model(model)
        self._refresh_model_combo()
        self._persist()

    def open_model_file(self) -> None:
        path, _ = QFileDialog.getOpenFileName(self, "Open a model file", "", MODEL_FILE_FILTER)
        if path:
            self.select_model(path)

    def open_model_folder(self) -> None:
        folder = QFileDialog.getExistingDirectory(self, "Open a diffusers model folder")
        if folder:
            self.select_model(folder)

    def open_image(self) -> None:
        path, _ = QFileDialog.getOpenFileName(
            self, "Open an image", "", "Images (*.png *.jpg *.jpeg *.webp *.bmp);;All files (*)")
        if path:
            self.open_path(path)

    def open_path(self, path: str) -> None:
        """Open an image: into the current canvas, or restore its parameters elsewhere."""
        if self.tabs.currentIndex() == TAB_INPAINT:
            self.mask_canvas.load_file(path)
        elif self.tabs.currentIndex() == TAB_IMG2IMG:
            self.source_canvas.load_file(path)
        elif not self.restore_parameters_from(path, quiet_failure=True):
            self.tabs.setCurrentIndex(TAB_IMG2IMG)
            self.source_canvas.load_file(path)

    def send_to_img2img(self, path: str) -> None:
        if self.source_canvas.load_file(path):
            self.tabs.setCurrentIndex(TAB_IMG2IMG)

    def send_to_inpaint(self, path: str) -> None:
        if self.mask_canvas.load_file(path):
            self.tabs.setCurrentIndex(TAB_INPAINT)

    def restore_parameters_from(self, path: str, quiet_failure: bool = False) -> bool:
        """Restore the prompt panel from an image's A1111 or sdstudio metadata."""
        from sdstudio.storage.png import read_image_metadata

        try:
            meta = read_image_metadata(path)
        except SDStudioError as exc:
            if not quiet_failure:
                self.show_error(str(exc), exc.details)
            return False
        request = meta.request
        if meta.source != "sdstudio" and not request.vae and meta.info is None:
            vae = meta.extras.get("VAE", "")
            if vae:  # an A1111 infotext names its VAE file
                stem = Path(vae)
                if stem.suffix.lower() in ADDON_SUFFIXES:
                    stem = stem.with_suffix("")
                request = request.replace(vae=stem.as_posix())
        from_infotext = meta.source != "sdstudio"  # our own chunk names the exact model
        notes = self.apply_request(request, model_name=meta.model_name if from_infotext else "",
                                   model_hash=meta.model_hash if from_infotext else "")
        extras = {} if meta.source == "sdstudio" else {
            k: v for k, v in meta.extras.items() if k != "VAE"}
        self.message_bar.show_info(
            restore_message(Path(path).name, summary(request), notes, extras), meta.infotext)
        return True

    def apply_request(self, request: GenerationRequest, model_name: str = "",
                      model_hash: str = "") -> list[str]:
        """Show every value of ``request``: the prompt panel's fields, the source canvas'
        resize mode and the model. Returns notes on what could not be applied."""
        self.refresh_addons()
        notes = self.prompt_panel.set_request(request)
        if request.resize_mode in request_spec("resize_mode").choices:
            self.source_canvas.set_fit_mode(request.resize_mode)
        else:
            notes.append(f"resize mode “{request.resize_mode}” is not available here")
        lora_names = [n for n, _ in named_files(self.settings.engine.lora_dirs)]
        notes += [f"LoRA “{n}” is not installed (its tag is kept in the prompt)"
                  for n in missing_loras(request, lora_names)]
        model = self._find_model(request.model, model_name, model_hash)
        wanted = request.model or model_name
        if model is not None:
            if model != self._current_model:
                self.select_model(model)
        elif wanted:
            notes.append(f"model “{Path(wanted).name or wanted}” is not installed; the "
                         "current model is kept")
        return notes

    def _find_model(self, model: str, name: str, short_hash: str) -> str | None:
        """The model to use for a restored request: its own path when it still exists, else
        an installed model with that name or hash; None when there is none."""
        if model and (model == self._current_model or Path(model).exists()):
            return model
        if not model and not name:
            return self._current_model
        wanted = {v.lower() for v in (model, name, Path(model).stem, Path(name).stem) if v}
        for entry in self._models:
            entry_name = str(entry.get("name", ""))
            names = {entry_name.lower(), Path(entry_name).stem.lower(),
                     Path(str(entry.get("path", ""))).stem.lower()}
            digest = str(entry.get("short_hash") or "")
            if names & wanted or (short_hash and digest == short_hash.lower()):
                return str(entry.get("path", ""))
        return None

    def refresh_addons(self) -> None:
        """The VAE choices from the VAE folders (a restored or saved VAE stays selected)."""
        entries = [("Automatic", "")] + [
            (name, name) for name, _ in named_files(self.settings.engine.vae_dirs)]
        self.prompt_panel.set_choices("vae", entries)

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
        if new.output_path != old.output_path:
            self._gallery_loaded = False
            self.load_gallery()
        self._persist()
        self.settingsChanged.emit(new)

    def open_user_guide(self) -> None:
        from sdstudio.core.paths import resources_dir

        guide = resources_dir().parent / "docs" / "user-guide.md"
        QDesktopServices.openUrl(QUrl.fromLocalFile(str(guide)))

    def about(self) -> None:
        from sdstudio import __version__ as version

        QMessageBox.about(self, "About SD Studio",
                          f"<h3>SD Studio {version}</h3><p>A desktop app for Stable Diffusion "
                          "on your own GPU.</p><p>Latent diffusion: Rombach et al., CVPR 2022."
                          "</p>")

    # ============================================================ persistence
    def _restore_state(self) -> None:
        self.refresh_addons()
        self.prompt_panel.restore(self.settings.last_request)
        ui = self.settings.ui
        geometry = ui.get("geometry")
        if isinstance(geometry, str):
            self.restoreGeometry(QByteArray.fromBase64(geometry.encode()))
        state = ui.get("window_state")
        if isinstance(state, str):
            self.restoreState(QByteArray.fromBase64(state.encode()))
        tab = ui.get("tab")
        if isinstance(tab, int) and 0 <= tab < self.tabs.count():
            self.tabs.setCurrentIndex(tab)
        self._on_tab_changed(self.tabs.currentIndex())

    def _persist(self) -> None:
        ui = dict(self.settings.ui)
        ui["geometry"] = bytes(self.saveGeometry().toBase64().data()).decode()
        ui["window_state"] = bytes(self.saveState().toBase64().data()).decode()
        ui["tab"] = min(self.tabs.currentIndex(), TAB_INPAINT + 1)
        self.settings = self.settings.replace(last_request=self.prompt_panel.values(), ui=ui)
        try:
            save_settings(self.settings)
        except OSError as exc:
            self.message_bar.show_error(f"Settings could not be saved: {exc.strerror or exc}")

    # ============================================================== model slots
    def _refresh_model_combo(self) -> None:
        combo = self.model_combo
        combo.blockSignals(True)
        combo.clear()
        combo.addItem(icon("model"), DEMO_LABEL, "")
        combo.setItemData(0, "The built-in tiny model: it works offline but is untrained, so "
                             "its images are noise", Qt.ItemDataRole.ToolTipRole)
        seen = {""}
        for entry in self._models:
            path = str(entry.get("path", ""))
            if path and path not in seen:
                seen.add(path)
                combo.addItem(icon("model"), str(entry.get("name") or Path(path).name), path)
                combo.setItemData(combo.count() - 1, path, Qt.ItemDataRole.ToolTipRole)
        for path in [self._current_model, *self.settings.ui.get("recent_models", [])]:
            if path and path not in seen:
                seen.add(path)
                combo.addItem(icon("file" if Path(path).suffix else "folder"),
                              Path(path).name or path, path)
                combo.setItemData(combo.count() - 1, path, Qt.ItemDataRole.ToolTipRole)
        combo.setCurrentIndex(max(0, combo.findData(self._current_model)))
        combo.blockSignals(False)
        self.demo_badge.setVisible(self._current_model == "")

    def _on_model_chosen(self, index: int) -> None:
        model = str(self.model_combo.itemData(index) or "")
        if model != self._current_model or self.queue.loaded is None:
            self.select_model(model)

    def _on_models_listed(self, models: list[dict[str, Any]]) -> None:
        self._models = list(models)
        self._refresh_model_combo()

    def _set_load_status(self, text: str, fraction: float | None, busy: bool = False) -> None:
        self.load_label.setText(text)
        if busy:
            self.load_bar.show()
            if fraction is None:
                self.load_bar.setRange(0, 0)
            else:
                self.load_bar.setRange(0, 100)
                self.load_bar.setValue(int(fraction * 100))
        else:
            self.load_bar.hide()

    def _on_engine_failed(self, failure: Failure) -> None:
        self._set_load_status("The engine could not start", None)
        self.show_error(failure.message, failure.details)

    def _on_load_started(self, model: str) -> None:
        name = Path(model).name if model else "the demo model"
        self._set_load_status(f"Loading {name}…", None, busy=True)

    def _on_load_progress(self, event: LoadProgress) -> None:
        self._set_load_status(event.message, event.fraction, busy=True)

    def _on_model_ready(self, ready: ModelReady) -> None:
        self._set_load_status(f"Model loaded in {ready.load_s:.1f} s" if ready.load_s else
                              "Model loaded", None)
        QTimer.singleShot(4000, self._clear_loaded_status)
        name = ready.name
        if ready.untrained and "untrained" not in name:
            name += " (untrained)"
        self.model_label.setText(f"Model: {name} · {ready.arch}")
        self.device_label.setText(f"Device: {ready.device}")
        self.dtype_label.setText(ready.dtype)
        mode = self.settings.engine.memory_mode
        savers = [k.replace("_", " ") for k in ("attention_slicing", "vae_slicing",
                                                "vae_tiling", "cpu_offload")
                  if ready.memory.get(k)]
        mode_text = {"auto": "auto", "low": "low VRAM", "off": "off"}.get(mode, mode)
        self.memory_label.setText(f"Memory: {mode_text}" + (f" ({', '.join(savers)})"
                                                          if savers else ""))
        self.memory_label.setToolTip(str(ready.memory.get("reason", "")))
        self.show_vram(ready.vram)
        self.demo_badge.setVisible(ready.untrained)

    def show_vram(self, vram: VramUsage | None) -> None:
        """"VRAM 3.2 / 8.0 GiB" in the status bar on a GPU; hidden elsewhere."""
        if vram is None:
            return
        text = vram.text()
        if self.vram_label.text() != text:
            self.vram_label.setText(text)
            self.vram_label.setToolTip(vram.details())
        if self.vram_label.isHidden():
            self.vram_label.show()

    def _clear_loaded_status(self) -> None:
        if self.load_label.text().startswith("Model loaded"):
            self.load_label.setText("Ready")

    def _on_model_failed(self, failure: Failure) -> None:
        self._set_load_status("No model loaded", None)
        self.model_label.setText("Model: none (load failed)")
        self.show_error(f"Could not load the model: {failure.message}", failure.details)

    # ================================================================ job slots
    def _viewer_for(self, job_id: int) -> ImageViewer:
        tab = self._job_tab.get(job_id)
        if tab is None:
            job = self.queue.job(job_id)
            mode = job.request.mode if job is not None else Mode.TXT2IMG
            tab = {Mode.IMG2IMG: TAB_IMG2IMG, Mode.INPAINT: TAB_INPAINT}.get(mode, TAB_TXT2IMG)
        return {TAB_IMG2IMG: self.img_result, TAB_INPAINT: self.inpaint_result}.get(
            tab, self.txt_viewer)

    def _on_job_started(self, job_id: int) -> None:
        self._job_started[job_id] = time.monotonic()
        self.progress_bar.setRange(0, 0)
        self.progress_bar.setFormat("Starting…")
        self._update_running()

    def _on_job_progress(self, job_id: int, event: Progress) -> None:
        self.show_vram(event.vram)
        job = self.queue.job(job_id)
        if job is not None and job.is_task:
            self._show_task_progress(job)
            return
        value, maximum, text = progress_text(event)
        self.progress_bar.setRange(0, maximum)
        self.progress_bar.setValue(value)
        self.progress_bar.setFormat(text)

    def _on_task_progress(self, job_id: int, done: int, total: int, text: str) -> None:
        job = self.queue.job(job_id)
        if job is not None and job.state.value == "running":
            self._show_task_progress(job)

    def _show_task_progress(self, job: Any) -> None:
        """A task (a batch) as one bar: its items, and the steps of the current one."""
        fraction = job.fraction
        if fraction is None:
            return
        self.progress_bar.setRange(0, 1000)
        self.progress_bar.setValue(int(fraction * 1000))
        step = f" · step {job.step}/{job.total}" if job.total else ""
        label = job.title.removeprefix("Batch: ")
        self.progress_bar.setFormat(f"Batch {label}: {job.items_done}/{job.items_total} "
                                    f"images{step}")

    def _on_job_preview(self, job_id: int, image: QImage) -> None:
        if job_id not in self._shown_result:
            self._viewer_for(job_id).set_image(image, smooth=True)  # small: scale smoothly

    def _on_image_ready(self, job_id: int, image: JobImage) -> None:
        if image.qimage is not None and image.index == 0:
            self._shown_result.add(job_id)
            self._viewer_for(job_id).set_image(image.qimage)
        if image.path:
            self.gallery.add_image(image.path, image.qimage)
        self.prompt_panel.set_last_seed(image.request.seed)

    def _on_job_finished(self, job_id: int, state: str) -> None:
        self._shown_result.discard(job_id)
        started = self._job_started.pop(job_id, None)
        job = self.queue.job(job_id)
        if self.queue.running_job is None:
            self.progress_bar.setRange(0, 100)
            if state == "done":
                took = f" in {format_duration(time.monotonic() - started)}" if started else ""
                n = len(job.images) if job else 0
                self.progress_bar.setValue(100)
                self.progress_bar.setFormat(f"Done: {n} image{'s' if n != 1 else ''}{took}")
            elif state == "cancelled":
                self.progress_bar.setValue(0)
                self.progress_bar.setFormat("Cancelled")
            else:
                self.progress_bar.setValue(0)
                self.progress_bar.setFormat("Failed")
        self._update_running()

    def _on_job_failed(self, job_id: int, failure: Failure) -> None:
        if not failure.cancelled:
            self.show_error(failure.message, failure.details)

    def _on_gallery_message(self, kind: str, text: str) -> None:
        if kind == "error":
            self.show_error(text)
        else:
            self.statusBar().showMessage(text, 4000)

    def _update_running(self, *args: object) -> None:
        running = self.queue.running_job is not None
        self.prompt_panel.set_running(running)
        self.cancel_action.setEnabled(running)
        pending = self.queue.pending_count
        self.queue_label.setText(f"{pending} queued" if pending else "")

    # ================================================================== events
    def _on_tab_changed(self, index: int) -> None:
        mode = {TAB_IMG2IMG: Mode.IMG2IMG, TAB_INPAINT: Mode.INPAINT}.get(index, Mode.TXT2IMG)
        self.prompt_panel.set_mode(mode)
        if self.tabs.widget(index) is self.gallery:
            self.load_gallery()

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
            self.queue.shutdown(self.shutdown_timeout_ms)
        event.accept()
