"""The batch panel: open a prompt list (or paste prompts), check it, run it, watch every item.

Widgets only: no torch, no engine. The panel parses and validates the list itself (pure
``core.prompts``), shows bad lines with their numbers (run the good lines, or fix the file and
check again), and hands the list to a ``BatchController`` (sdstudio/batch/qt.py) that runs the
batch runner as one job of the window's queue, on the worker thread with the worker's engine
(the model is loaded once, for single images and batches alike). Every item shows its state
(pending, running, done, failed with the reason); overall progress shows images done, s/image
and time left. Pause takes effect after the current image. When the output folder holds a
batch of a changed list, the panel asks whether to resume or restart. Finished images go to
``on_image`` (the gallery). The item table is :mod:`sdstudio.ui.batch_items`.

``app.py`` adds it as a tab through ``create_panel(window, queue, settings)``.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from PySide6.QtCore import QEvent, QObject, Qt, Signal
from PySide6.QtWidgets import (
    QComboBox,
    QFormLayout,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QListWidget,
    QMessageBox,
    QPlainTextEdit,
    QProgressBar,
    QPushButton,
    QSizePolicy,
    QSpinBox,
    QSplitter,
    QVBoxLayout,
    QWidget,
)

from sdstudio.batch.events import (
    BatchEvent,
    BatchPaused,
    BatchPlanned,
    BatchSummary,
    UnitDone,
    UnitFailed,
    UnitStarted,
)
from sdstudio.batch.plan import SEED_POLICIES, BatchOptions
from sdstudio.batch.qt import BatchController
from sdstudio.batch.runner import ListChangedError
from sdstudio.core.errors import SDStudioError
from sdstudio.core.prompts import PromptList, parse_prompt_list
from sdstudio.core.request import GenerationRequest
from sdstudio.core.settings import DEFAULT_FILENAME_PATTERN
from sdstudio.ui import file_dialogs
from sdstudio.ui.batch_items import BatchItemTable

PANEL_TITLE = "Batch"
Asker = Callable[[str], "str | None"]  # message -> "resume" | "restart" | None (cancel)


def ask_on_change(parent: QWidget, message: str) -> str | None:
    box = QMessageBox(parent)
    box.setIcon(QMessageBox.Icon.Question)
    box.setWindowTitle("The prompt list changed")
    box.setText(message)
    resume = box.addButton("Resume", QMessageBox.ButtonRole.AcceptRole)
    restart = box.addButton("Restart", QMessageBox.ButtonRole.DestructiveRole)
    box.addButton(QMessageBox.StandardButton.Cancel)
    box.setDefaultButton(resume)
    box.exec()
    clicked = box.clickedButton()
    return "resume" if clicked is resume else "restart" if clicked is restart else None


def format_eta(seconds: float) -> str:
    s = int(seconds + 0.5)
    h, m = divmod(s // 60, 60)
    return f"{h}:{m:02d}:{s % 60:02d}" if h else f"{m}:{s % 60:02d}"


class BatchPanel(QWidget):
    imageSaved = Signal(str)  # path of a finished image
    stateChanged = Signal(str)  # "idle", "running", "paused"

    def __init__(
        self,
        controller: BatchController | None = None,
        defaults: Callable[[], GenerationRequest] | None = None,
        output_dir: Callable[[], Path] | Path | None = None,
        pattern: str = DEFAULT_FILENAME_PATTERN,
        on_image: Callable[[str], None] | None = None,
        ask: Asker | None = None,
        parent: QWidget | None = None,
    ) -> None:
        super().__init__(parent)
        self.controller = controller or BatchController(parent=self)
        self._defaults = defaults or (lambda: GenerationRequest(prompt=""))
        self._output_dir = output_dir
        self._ask: Asker = ask or (lambda message: ask_on_change(self, message))
        self.prompts: PromptList | None = None
        self.list_path: Path | None = None
        self._assigned = 0
        self._finished = 0
        self._started = 0.0
        self._skip_bad = False
        self._pending_change: str | None = None
        self.summary: BatchSummary | None = None
        self._build(pattern)
        if on_image is not None:
            self.imageSaved.connect(on_image)
        self.controller.batchEvent.connect(self._on_event)
        self.controller.failed.connect(self._on_failed)
        self.controller.finished.connect(self._on_finished)
        self._update_buttons()

    # --------------------------------------------------------------------------- layout
    def _build(self, pattern: str) -> None:
        root = QVBoxLayout(self)
        top = QHBoxLayout()
        self.open_button = QPushButton("&Open list…")
        self.open_button.setToolTip("A .txt (one prompt per line, A1111 options allowed), "
                                    ".csv with a header row, or .jsonl file")
        self.open_button.clicked.connect(self.choose_file)
        self.paste_button = QPushButton("Paste prompts")
        self.paste_button.setToolTip("Type or paste prompts instead of opening a file")
        self.paste_button.clicked.connect(self.show_paste)
        self.paste_button.setVisible(False)
        self.source_label = QLabel("No list: open one, or paste prompts below")
        self.source_label.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        # a long path must not widen the window (the full path is in the tooltip)
        self.source_label.setSizePolicy(QSizePolicy.Policy.Ignored,
                                        QSizePolicy.Policy.Preferred)
        top.addWidget(self.open_button)
        top.addWidget(self.paste_button)
        top.addSpacing(6)
        top.addWidget(self.source_label, 1)
        root.addLayout(top)

        split = QSplitter(Qt.Orientation.Vertical)
        self.paste = QPlainTextEdit()
        self.paste.setPlaceholderText(
            "Paste prompts here, one per line (# comments; --prompt \"...\" --steps 30 "
            "--seed 5 ...), or CSV / JSON Lines")
        self.paste.textChanged.connect(self._on_paste_changed)
        split.addWidget(self.paste)

        self.bad_lines = QListWidget()
        self.bad_lines.setVisible(False)
        split.addWidget(self.bad_lines)

        self.table = BatchItemTable()
        split.addWidget(self.table)
        split.setSizes([120, 60, 400])
        root.addWidget(split, 1)

        form = QFormLayout()
        form.setFieldGrowthPolicy(QFormLayout.FieldGrowthPolicy.ExpandingFieldsGrow)
        self.per_prompt = QSpinBox()
        self.per_prompt.setMinimumWidth(90)
        self.per_prompt.setRange(1, 10000)
        self.per_prompt.setToolTip("Images for every prompt of the list")
        self.seed_policy = QComboBox()
        labels = {"fixed": "Same seed for every prompt", "increment": "+1 per image",
                  "random": "Random per image"}
        for policy in SEED_POLICIES:
            self.seed_policy.addItem(labels[policy], policy)
        self.seed_policy.setCurrentIndex(SEED_POLICIES.index("increment"))
        out_row = QHBoxLayout()
        self.out_edit = QLineEdit()
        self.out_edit.setPlaceholderText("default: <output folder>/batch-<list name>")
        browse = QPushButton("…")
        browse.setToolTip("Choose the output folder")
        browse.clicked.connect(self._choose_out)
        out_row.addWidget(self.out_edit, 1)
        out_row.addWidget(browse)
        self.pattern_edit = QLineEdit(pattern)
        self.pattern_edit.setToolTip("{index} {seed} {prompt} {model} {date}; / makes folders")
        form.addRow("Images per prompt", self.per_prompt)
        form.addRow("Seeds", self.seed_policy)
        form.addRow("Output folder", out_row)
        form.addRow("File names", self.pattern_edit)
        root.addLayout(form)

        self.progress = QProgressBar()
        self.progress.setRange(0, 1)
        self.progress.setValue(0)
        self.progress.setFormat("%v/%m images")
        self.status = QLabel("")
        self.status.setWordWrap(True)  # long messages (folders, reasons) wrap, never widen
        self.status.setSizePolicy(QSizePolicy.Policy.Ignored, QSizePolicy.Policy.Preferred)
        root.addWidget(self.progress)
        root.addWidget(self.status)

        buttons = QHBoxLayout()
        self.check_button = QPushButton("Chec&k list")
        self.check_button.clicked.connect(self.check)
        self.start_button = QPushButton("Start &batch")
        self.start_button.clicked.connect(lambda: self.start())
        self.good_button = QPushButton("Run the good lines")
        self.good_button.setToolTip("Skip the bad lines listed above")
        self.good_button.setVisible(False)
        self.good_button.clicked.connect(lambda: self.start(skip_bad_lines=True))
        self.pause_button = QPushButton("Pause")
        self.pause_button.setToolTip("Pause after the current image")
        self.pause_button.clicked.connect(self.toggle_pause)
        self.cancel_button = QPushButton("Cancel")
        self.cancel_button.clicked.connect(self.cancel)
        for b in (self.check_button, self.start_button, self.good_button, self.pause_button,
                  self.cancel_button):
            buttons.addWidget(b)
        buttons.addStretch(1)
        root.addLayout(buttons)

    # ----------------------------------------------------------------------- public API
    def choose_file(self) -> None:
        path = file_dialogs.open_file(
            self, "prompt_lists", "Open a prompt list",
            "Prompt lists (*.txt *.csv *.jsonl *.ndjson);;All files (*)")
        if path:
            self.open_list(Path(path))

    def open_list(self, path: Path) -> bool:
        self.list_path = Path(path)
        self.source_label.setText(str(path))
        self.source_label.setToolTip(str(path))
        self.paste.blockSignals(True)
        self.paste.clear()
        self.paste.blockSignals(False)
        self.paste.setVisible(False)  # the list is the file: the table shows it
        self.paste_button.setVisible(True)
        return self.check()

    def show_paste(self) -> None:
        """Leave the opened file: type or paste prompts instead."""
        self.list_path = None
        self.paste.setVisible(True)
        self.paste_button.setVisible(False)
        self.source_label.setText("Pasted prompts")
        self.source_label.setToolTip("")
        self.paste.setFocus()

    def set_text(self, text: str) -> bool:
        if not self.paste.isVisibleTo(self):
            self.show_paste()
        self.paste.setPlainText(text)  # clears list_path through textChanged
        return self.check()

    def check(self) -> bool:
        """Parse and validate the list; show items and bad lines. True when all lines are
        good."""
        defaults = self._defaults()
        try:
            if self.list_path is not None:
                prompts = parse_prompt_list(self.list_path, defaults)
            else:
                text = self.paste.toPlainText()
                if not text.strip():
                    self._show_message("Open a prompt list or paste prompts first")
                    return False
                prompts = parse_prompt_list(text, defaults, name="pasted prompts")
        except SDStudioError as exc:
            self.prompts = None
            self._show_message(str(exc), error=True)
            self.table.show_list(None, self.per_prompt.value())
            return False
        self.prompts = prompts
        self.bad_lines.clear()
        for err in prompts.errors:
            self.bad_lines.addItem(str(err))
        for warning in prompts.warnings:
            self.bad_lines.addItem(f"{warning} (warning)")
        self.bad_lines.setVisible(bool(prompts.errors or prompts.warnings))
        self.good_button.setVisible(bool(prompts.errors) and bool(prompts.items))
        self.table.show_list(prompts, self.per_prompt.value())
        self._update_out_placeholder()
        if prompts.errors:
            self._show_message(
                f"{len(prompts.errors)} bad line(s): fix the file and check again, "
                f"or run the {len(prompts.items)} good line(s)", error=True)
        else:
            self._show_message(f"{len(prompts.items)} prompt(s), "
                               f"{self._image_total(prompts)} image(s)")
        self._update_buttons()
        return prompts.ok

    def options(self, skip_bad_lines: bool = False, on_change: str | None = None) -> BatchOptions:
        return BatchOptions(
            out_dir=self.output_dir(),
            per_prompt=self.per_prompt.value(),
            seed_policy=str(self.seed_policy.currentData()),
            pattern=self.pattern_edit.text().strip() or DEFAULT_FILENAME_PATTERN,
            skip_bad_lines=skip_bad_lines,
            on_change=on_change,
        )

    def output_dir(self) -> Path:
        text = self.out_edit.text().strip()
        if text:
            return Path(text).expanduser()
        return self.default_output_dir()

    def default_output_dir(self) -> Path:
        """``batch-<list name>`` in the output folder."""
        base = self._output_dir() if callable(self._output_dir) else self._output_dir
        if base is None:
            from sdstudio.core.paths import default_output_dir

            base = default_output_dir()
        name = self.list_path.stem if self.list_path is not None else "pasted"
        return Path(base) / f"batch-{name}"

    def start(self, skip_bad_lines: bool = False, on_change: str | None = None) -> bool:
        if self.controller.running:
            return False
        if self.prompts is None or on_change is None:
            ok = self.check()
            if self.prompts is None or (not ok and not skip_bad_lines):
                return False
        if not self.prompts.items:
            self._show_message("The list has no prompts to run", error=True)
            return False
        self._skip_bad = skip_bad_lines
        try:
            from sdstudio.storage.naming import check_pattern

            options = self.options(skip_bad_lines, on_change).check()
            check_pattern(options.pattern)
        except (ValueError, SDStudioError) as exc:
            self._show_message(str(exc), error=True)
            return False
        self.summary = None
        self._finished = 0
        self._started = time.perf_counter()
        waiting = self.controller.queue.busy
        self.controller.start(self.prompts, options, self._defaults())
        self._show_message("Queued: starts after the jobs before it" if waiting
                           else "Starting…")
        self._update_buttons()
        self.stateChanged.emit("running")
        return True

    def toggle_pause(self) -> None:
        if not self.controller.running:
            return
        if self.controller.paused:
            self.controller.resume()
            self._show_message("Resuming…")
        else:
            self.controller.pause()
            self._show_message("Pausing after the current image…")
        self._update_buttons()

    def cancel(self) -> None:
        if self.controller.running:
            self.controller.cancel()
            self._show_message("Cancelling…")

    def shutdown(self, timeout_s: float = 5.0) -> bool:
        return self.controller.shutdown(timeout_s)

    def item_states(self) -> list[tuple[int, str, str]]:
        """(line number, state, reason) per item, in list order (for tests and tooltips)."""
        return self.table.item_states()

    # ---------------------------------------------------------------------------- events
    def _on_event(self, event: BatchEvent) -> None:
        if isinstance(event, BatchPlanned):
            self._assigned = event.assigned
            self._finished = 0
            self._started = time.perf_counter()
            self.table.planned(event.units, event.done_slots)
            self.progress.setRange(0, max(event.assigned, 1))
            self.progress.setValue(0)
            skipped = f" ({event.already_done} already done)" if event.already_done else ""
            self._show_message(f"{event.assigned} image(s) to make{skipped} in {event.out_dir}")
        elif isinstance(event, UnitStarted):
            self.table.unit_started(event.unit)
        elif isinstance(event, UnitDone):
            self.table.unit_finished(event.unit, ok=True)
            self._count_finished()
            self.imageSaved.emit(str(event.path))
        elif isinstance(event, UnitFailed):
            self.table.unit_finished(event.unit, ok=False, reason=event.reason)
            self._count_finished()
        elif isinstance(event, BatchPaused):
            self._show_message("Paused" if event.paused else "Running")
            self.stateChanged.emit("paused" if event.paused else "running")
        elif isinstance(event, BatchSummary):
            self.summary = event
            self._show_message(event.line(), error=bool(event.failed))

    def _count_finished(self) -> None:
        self._finished += 1
        self.progress.setValue(self._finished)
        elapsed = time.perf_counter() - self._started
        per = elapsed / self._finished
        left = per * max(self._assigned - self._finished, 0)
        self.status.setText(f"{self._finished}/{self._assigned} images · {per:.2f} s/image · "
                            f"{format_eta(left)} left")

    def _on_failed(self, exc: SDStudioError) -> None:
        if isinstance(exc, ListChangedError):
            self._pending_change = str(exc)
            return  # asked once the thread has finished
        self._show_message(str(exc), error=True)

    def _on_finished(self) -> None:
        self._update_buttons()
        self.stateChanged.emit("idle")
        if self._pending_change is not None:
            message, self._pending_change = self._pending_change, None
            choice = self._ask(message)
            if choice in ("resume", "restart"):
                self.start(skip_bad_lines=self._skip_bad, on_change=choice)
            else:
                self._show_message("Not started: choose another output folder, or start "
                                   "again to resume or restart")

    # --------------------------------------------------------------------------- helpers
    def _image_total(self, prompts: PromptList) -> int:
        return sum(self.per_prompt.value() * it.request.image_count for it in prompts.items)

    def _show_message(self, text: str, error: bool = False) -> None:
        self.status.setText(text)
        self.status.setProperty("error", error)
        self.status.setStyleSheet("color: palette(highlight);" if error else "")

    def _update_buttons(self) -> None:
        running = self.controller.running
        self.start_button.setEnabled(not running)
        self.check_button.setEnabled(not running)
        self.open_button.setEnabled(not running)
        self.paste_button.setEnabled(not running)
        self.good_button.setEnabled(not running)
        self.pause_button.setEnabled(running)
        self.cancel_button.setEnabled(running)
        self.pause_button.setText("Resume" if running and self.controller.paused else "Pause")

    def _update_out_placeholder(self) -> None:
        """Show where the batch goes when no folder is chosen."""
        self.out_edit.setPlaceholderText(f"{self.default_output_dir()} (default)")

    def _choose_out(self) -> None:
        folder = file_dialogs.existing_dir(self, "output", "Output folder for the batch",
                                           str(self.output_dir().parent))
        if folder:
            self.out_edit.setText(folder)

    def _on_paste_changed(self) -> None:
        if self.paste.toPlainText().strip():
            self.list_path = None
            self.source_label.setText("Pasted prompts")


class _CloseWatcher(QObject):
    """Stops the batch thread when the main window closes."""

    def __init__(self, panel: BatchPanel) -> None:
        super().__init__(panel)
        self.panel = panel

    def eventFilter(self, obj: QObject, event: QEvent) -> bool:
        if event.type() == QEvent.Type.Close:
            self.panel.shutdown(5.0)
        return False


def create_panel(window: Any = None, queue: Any = None, settings: Any = None) -> BatchPanel:
    """For app.py: batches run on the window's job queue (its worker thread and engine: one
    loaded model), defaults come from the prompt panel and the current model, images go into
    the gallery, output folder and file name pattern come from the settings; the batch is
    cancelled when the window closes."""
    if queue is None:
        queue = getattr(window, "queue", None)
    if settings is None:
        settings = getattr(window, "settings", None)

    def defaults() -> GenerationRequest:
        if window is not None and hasattr(window, "prompt_panel"):
            request: GenerationRequest = window.prompt_panel.request()
            model = str(getattr(window, "current_model", "") or "")
            return request.replace(model=model, init_image=None, mask=None)
        return GenerationRequest(prompt="")

    def output_dir() -> Path:
        current = getattr(window, "settings", settings)
        return Path(current.output_path) if current is not None else Path.home()

    def on_image(path: str) -> None:
        gallery = getattr(window, "gallery", None)
        if gallery is not None:
            gallery.add_image(path)

    panel = BatchPanel(
        controller=BatchController(queue),
        defaults=defaults,
        output_dir=output_dir,
        pattern=getattr(settings, "filename_pattern", DEFAULT_FILENAME_PATTERN),
        on_image=on_image,
        parent=window,
    )
    panel.controller.setParent(panel)
    if window is not None:
        window.installEventFilter(_CloseWatcher(panel))
    return panel
