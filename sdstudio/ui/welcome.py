"""The first-start welcome panel, over the Text to image result area while the built-in demo
model is the only one.

It says plainly that the demo model is untrained (its images are noise), offers the model
folders of other Stable Diffusion apps found on this computer (:mod:`sdstudio.core.other_apps`,
searched in a background thread) with one click, and says which file to get for a first real
model and how to open it. "Use these folders" adds the chosen folders to Settings → Models
through :meth:`MainWindow.apply_settings` (which tells the queue and rescans the models) and
then switches to the first model the rescan lists. The panel goes once a real model has loaded,
when a generation starts (so its result can be seen), on Close, and for good on
"Don't show again".

Wiring (in ``MainWindow``)::

    self.welcome = WelcomePanel(self) if should_welcome(settings) else None  # __init__
    if self.welcome is not None: self.welcome.start()                       # start()
    if self.welcome is not None: self.welcome.shutdown()                    # closeEvent
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from PySide6.QtCore import QEvent, QObject, Qt, Signal
from PySide6.QtWidgets import (
    QCheckBox,
    QFrame,
    QHBoxLayout,
    QLabel,
    QPushButton,
    QScrollArea,
    QVBoxLayout,
    QWidget,
)

from sdstudio.core.other_apps import (
    APPS,
    KIND_LABELS,
    FoundFolder,
    ScanResult,
    add_folders,
    find_other_apps,
)
from sdstudio.core.settings import Settings
from sdstudio.ui.background import BackgroundRunner
from sdstudio.ui.theme import icon, is_dark

if TYPE_CHECKING:
    from sdstudio.ui.main_window import MainWindow

#: ``settings.ui[WELCOME_KEY] == "dismissed"``: the person chose "Don't show again".
WELCOME_KEY = "welcome"
MARGIN = 14  # around the panel, inside the result area
MAX_WIDTH = 760

DEMO_TEXT = ("<b>The model in use now is the built-in demo model. It is untrained: its images "
             "are noise.</b> It only shows that SD Studio works, and stays in the Model list "
             "marked “untrained demo”.")
FIRST_MODEL_TEXT = (
    "Download one Stable Diffusion 1.5 checkpoint as a single <b>.safetensors</b> file (2 to "
    "4 GB; the original <i>v1-5-pruned-emaonly.safetensors</i> or a fine-tune such as "
    "<i>DreamShaper 8</i>, from Hugging Face or Civitai). Then press <b>Open model file…</b> "
    "(also in the File menu and the bar above) and choose it.")
APPS_TEXT = ", ".join(APPS[:-1]) + " or " + APPS[-1]


def should_welcome(settings: Settings) -> bool:
    """True on a first start and while the demo model is the only one: no model chosen, no
    model folder, no model opened before, and "Don't show again" not chosen."""
    engine = settings.engine
    return (settings.ui.get(WELCOME_KEY) != "dismissed" and not engine.default_model
            and not engine.model_dirs and not settings.ui.get("recent_models"))


def _shown_path(folder: str) -> str:
    """``folder`` with the home folder written ``~``."""
    path, home = Path(folder), Path.home()
    try:
        return "~/" + path.relative_to(home).as_posix() if path != home else "~"
    except ValueError:
        return str(path)


class WelcomePanel(QFrame):
    """The welcome panel of ``window`` (a :class:`MainWindow`), laid over its Text to image
    result area. ``scan(cancelled)`` finds the other apps' folders (default: this computer's,
    :func:`find_other_apps`); it runs in a background thread after :meth:`start`."""

    applied = Signal(object)  # list[FoundFolder] added to the settings
    finished = Signal()  # the panel went (a model loaded, Close, Don't show again)

    def __init__(self, window: MainWindow,
                 scan: Callable[[Callable[[], bool]], ScanResult] | None = None) -> None:
        host = window.txt_viewer
        super().__init__(host)
        self._window = window
        self._host = host
        self._scan = scan or (lambda cancelled: find_other_apps(cancelled=cancelled))
        self._cancel = threading.Event()
        self._runner: BackgroundRunner | None = None
        self._boxes: list[tuple[QCheckBox, FoundFolder]] = []
        self._awaiting_models = False
        self._done = False
        self.result: ScanResult | None = None

        self.setObjectName("welcomePanel")
        self.setAccessibleName("Welcome")
        self.setFrameShape(QFrame.Shape.StyledPanel)
        border = "#4a4a55" if is_dark() else "#c4c2cc"
        self.setStyleSheet(
            "QFrame#welcomePanel { background: palette(window); border: 1px solid "
            f"{border}; border-radius: 10px; }}"
            "QLabel#welcomeTitle { font-size: 15pt; font-weight: 600; }"
            "QLabel#welcomeHeading { font-weight: 600; }")
        outer = QVBoxLayout(self)
        outer.setContentsMargins(2, 2, 2, 2)
        scroll = QScrollArea(self)
        scroll.setWidgetResizable(True)
        scroll.setFrameShape(QFrame.Shape.NoFrame)
        scroll.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
        scroll.viewport().setAutoFillBackground(False)
        body = QWidget(scroll)
        body.setAutoFillBackground(False)
        scroll.setWidget(body)
        outer.addWidget(scroll)
        self._scroll = scroll
        lay = QVBoxLayout(body)
        lay.setContentsMargins(18, 14, 18, 14)
        lay.setSpacing(8)

        title = QLabel("Welcome to SD Studio", body)
        title.setObjectName("welcomeTitle")
        lay.addWidget(title)
        self.demo_label = self._text(body, DEMO_TEXT)
        lay.addWidget(self.demo_label)

        # (a) the other apps' folders
        lay.addSpacing(4)
        lay.addWidget(self._heading(body, "Models you already have"))
        self.status_label = self._text(
            body, f"Looking for the model folders of {APPS_TEXT}…")
        lay.addWidget(self.status_label)
        self.folder_box = QWidget(body)
        self.folder_lay = QVBoxLayout(self.folder_box)
        self.folder_lay.setContentsMargins(0, 0, 0, 0)
        self.folder_lay.setSpacing(2)
        self.folder_box.hide()
        lay.addWidget(self.folder_box)
        self.use_button = QPushButton(icon("folder"), "Use these folders", body)
        self.use_button.setToolTip("Add the ticked folders to Settings → Models and switch to "
                                   "the first model in them")
        self.use_button.clicked.connect(self.use_folders)
        self.use_button.hide()
        row = QHBoxLayout()
        row.addWidget(self.use_button)
        row.addStretch(1)
        lay.addLayout(row)

        # (b) a first real model
        lay.addSpacing(4)
        lay.addWidget(self._heading(body, "A first real model"))
        lay.addWidget(self._text(body, FIRST_MODEL_TEXT))
        buttons = QHBoxLayout()
        self.open_button = QPushButton(icon("file"), "Open model file…", body)
        self.open_button.clicked.connect(window.open_model_file_action.trigger)
        buttons.addWidget(self.open_button)
        # a "Get a model…" button opening the model manager belongs here once there is one
        buttons.addStretch(1)
        lay.addLayout(buttons)

        lay.addSpacing(6)
        end = QHBoxLayout()
        end.addStretch(1)
        self.dismiss_button = QPushButton("Don't show again", body)
        self.dismiss_button.setToolTip("Close this and do not show it on later starts")
        self.dismiss_button.clicked.connect(self.dismiss)
        self.close_button = QPushButton("Close", body)
        self.close_button.setToolTip("Close this until SD Studio starts again")
        self.close_button.clicked.connect(self.close_panel)
        end.addWidget(self.dismiss_button)
        end.addWidget(self.close_button)
        lay.addLayout(end)
        lay.addStretch(1)

        host.installEventFilter(self)
        queue = window.queue
        queue.modelsListed.connect(self._on_models_listed)
        queue.modelReady.connect(self._on_model_ready)
        queue.jobStarted.connect(self._on_job_started)
        self._place()
        self.show()
        self.raise_()

    @staticmethod
    def _text(parent: QWidget, text: str) -> QLabel:
        label = QLabel(text, parent)
        label.setWordWrap(True)
        label.setTextFormat(Qt.TextFormat.RichText)
        return label

    @staticmethod
    def _heading(parent: QWidget, text: str) -> QLabel:
        label = QLabel(text, parent)
        label.setObjectName("welcomeHeading")
        return label

    # ============================================================================ search
    def start(self) -> None:
        """Look for the other apps' folders in a background thread (results come back to the
        GUI thread; the window is never blocked)."""
        if self._runner is not None or self._done:
            return
        self._runner = BackgroundRunner("sdstudio-welcome", self)
        cancel = self._cancel
        scan = self._scan
        self._runner.submit(lambda: scan(cancel.is_set), self._on_scan, self._on_scan_error)

    def shutdown(self) -> None:
        """Stop the search (at once: it checks the cancel flag between folders) and its
        thread. The window calls this when it closes."""
        self._cancel.set()
        if self._runner is not None:
            self._runner.stop()

    def _on_scan(self, result: ScanResult) -> None:
        self.shutdown()  # one search per start: its thread is not needed any more
        self.result = result
        self._boxes.clear()
        while self.folder_lay.count():
            item = self.folder_lay.takeAt(0)
            widget = item.widget() if item is not None else None
            if widget is not None:
                widget.deleteLater()
        for n, install in enumerate(result.installs):
            if n:
                self.folder_lay.addSpacing(6)
            head = QLabel(f"{install.app} in {_shown_path(install.root)}", self.folder_box)
            head.setObjectName("welcomeHeading")
            head.setToolTip(install.root)
            self.folder_lay.addWidget(head)
            for found in install.folders:
                box = QCheckBox(f"{KIND_LABELS[found.kind]}: {found.count_text} in "
                                f"{_shown_path(found.folder)}", self.folder_box)
                box.setToolTip(found.folder)
                box.setChecked(True)
                box.toggled.connect(self._update_use_button)
                self.folder_lay.addWidget(box)
                self._boxes.append((box, found))
        if self._boxes:
            apps = sorted({i.app for i in result.installs}, key=APPS.index)
            self.status_label.setText(
                f"Found on this computer ({', '.join(apps)}). SD Studio can use these folders "
                "where they are: nothing is copied or moved.")
        else:
            self.status_label.setText(
                f"No model folders of {APPS_TEXT} were found in the usual places. You can add "
                "any folder later in Settings → Models.")
        if not result.complete:
            self.status_label.setText(self.status_label.text() + " (The search stopped at its "
                                      "time limit: some places were not looked at.)")
        self.folder_box.setVisible(bool(self._boxes))
        self.use_button.setVisible(bool(self._boxes))
        self._update_use_button()
        self._place()

    def _on_scan_error(self, exc: BaseException) -> None:
        self.shutdown()
        self.status_label.setText(f"Looking for other apps' model folders failed ({exc}). You "
                                  "can add folders in Settings → Models.")
        self._place()

    # =========================================================================== actions
    def chosen_folders(self) -> list[FoundFolder]:
        """The folders ticked and not added yet."""
        return [found for box, found in self._boxes if box.isChecked() and box.isEnabled()]

    def _update_use_button(self, *args: object) -> None:
        self.use_button.setEnabled(bool(self.chosen_folders()) and not self._awaiting_models)

    def use_folders(self) -> None:
        """Add the ticked folders to the settings (the queue is told, the models rescanned);
        then switch to the first model the rescan lists."""
        chosen = self.chosen_folders()
        if not chosen:
            return
        window = self._window
        new = window.settings.replace(engine=add_folders(window.settings.engine, chosen))
        models_added = new.engine.model_dirs != window.settings.engine.model_dirs
        window.apply_settings(new)
        n = len(chosen)
        added = f"Added {n} folder{'s' if n != 1 else ''} to Settings → Models."
        if models_added and not window.current_model:
            self._awaiting_models = True
            self.status_label.setText(f"{added} Looking for models in them…")
        else:
            self.status_label.setText(added)
        for box, found in self._boxes:
            if found in chosen:
                box.setEnabled(False)  # added; the others can still be ticked and added
        self._update_use_button()
        self._place()
        self.applied.emit(chosen)

    def _on_models_listed(self, models: list[dict[str, Any]]) -> None:
        if not self._awaiting_models or self._done:
            return
        self._awaiting_models = False
        window = self._window
        if window.current_model:  # the person chose one meanwhile
            return
        if not models:
            self.status_label.setText(
                "None of the files in these folders is a model SD Studio can open (see "
                "Details in the Model list, or open a model file below).")
            self._update_use_button()
            self._place()
            return
        plain = [m for m in models if not str(m.get("arch", "")).endswith("inpaint")]
        model = (plain or models)[0]
        name = str(model.get("name") or Path(str(model["path"])).name)
        self.status_label.setText(f"Loading “{name}”… (choose another in the Model list above)")
        self._place()
        window.select_model(str(model["path"]))

    def _on_model_ready(self, event: object) -> None:
        if self._window.current_model:  # a real model, not the demo
            self._finish()

    def _on_job_started(self, job_id: int) -> None:
        if self.isVisible():
            self._finish()  # the result it would cover matters more now

    def close_panel(self) -> None:
        """Close until the next start."""
        self._finish()

    def dismiss(self) -> None:
        """Close, and do not show again on later starts."""
        window = self._window
        window.apply_settings(window.settings.replace(
            ui={**window.settings.ui, WELCOME_KEY: "dismissed"}))
        self._finish()

    def _finish(self) -> None:
        if self._done:
            return
        self._done = True
        self.shutdown()
        self.hide()
        self._host.removeEventFilter(self)
        self.finished.emit()

    # ============================================================================ layout
    def eventFilter(self, watched: QObject, event: QEvent) -> bool:
        if watched is self._host and event.type() == QEvent.Type.Resize:
            self._place()
        return False

    def _place(self) -> None:
        """Centred near the top of the result area, as tall as its text (scrolling inside
        when the area is lower)."""
        area = self._host.rect().adjusted(MARGIN, MARGIN, -MARGIN, -MARGIN)
        width = max(200, min(MAX_WIDTH, area.width()))
        body = self._scroll.widget()
        assert body is not None
        lay = body.layout()
        assert lay is not None
        inner = width - 4 - self._scroll.verticalScrollBar().sizeHint().width()
        wanted = (lay.totalHeightForWidth(inner) if lay.hasHeightForWidth()
                  else body.sizeHint().height()) + 8
        height = max(120, min(area.height(), wanted))
        self.setGeometry(area.x() + (area.width() - width) // 2, area.y(), width, height)
