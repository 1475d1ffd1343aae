"""The main window's status bar: engine and model loading, the loaded model, device, dtype,
memory savers and VRAM. A mixin of :class:`sdstudio.ui.main_window.MainWindow` (its slots for
the JobQueue's engine and model signals)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from PySide6.QtCore import QTimer
from PySide6.QtWidgets import QLabel, QProgressBar

from sdstudio.core.events import LoadProgress, ModelReady, VramUsage
from sdstudio.core.settings import Settings
from sdstudio.ui.window_part import WindowPart
from sdstudio.worker import Failure, JobQueue

if TYPE_CHECKING:
    from sdstudio.ui.widgets import MessageBar

MODEL_ERROR = "Could not load the model: "
GENERATING = "Generating…"


class ModelStatus(WindowPart):
    """Builds the status bar and keeps it current; the window supplies queue and settings."""

    queue: JobQueue
    settings: Settings
    demo_badge: QLabel
    message_bar: MessageBar

    if TYPE_CHECKING:
        def show_error(self, message: str, details: str = "") -> None: ...
        def show_demo_badge(self, visible: bool) -> None: ...

    def _build_status_bar(self) -> None:
        window = self._qt_parent()
        sb = window.statusBar()
        self.load_label = QLabel("Starting the engine…", window)
        self.load_bar = QProgressBar(window)
        self.load_bar.setMaximumWidth(180)
        self.load_bar.setMaximumHeight(14)
        self.load_bar.setTextVisible(False)
        self.load_bar.setRange(0, 0)
        self.model_label = QLabel("Model: —", window)
        self.device_label = QLabel("Device: —", window)
        self.dtype_label = QLabel("", window)
        self.memory_label = QLabel("", window)
        self.vram_label = QLabel("", window)
        self.vram_label.hide()
        sb.addWidget(self.load_label)
        sb.addWidget(self.load_bar)
        for w in (self.model_label, self.device_label, self.dtype_label, self.memory_label,
                  self.vram_label):
            sb.addPermanentWidget(w)
        q = self.queue
        q.engineStarted.connect(lambda: self._set_load_status("Engine ready", None))
        q.engineFailed.connect(self._on_engine_failed)
        q.loadStarted.connect(self._on_load_started)
        q.loadProgress.connect(self._on_load_progress)
        q.modelReady.connect(self._on_model_ready)
        q.modelFailed.connect(self._on_model_failed)

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
        self.message_bar.hide_error(MODEL_ERROR)  # the model that failed is not the one now
        self._set_load_status(f"Model loaded in {ready.load_s:.1f} s" if ready.load_s else
                              "Model loaded", None)
        QTimer.singleShot(4000, self._clear_loaded_status)
        name = ready.name
        if ready.untrained and "untrained" not in name:
            name += " (untrained)"
        self.model_label.setText(f"Model: {name} · {ready.arch}")
        self.device_label.setText(f"Device: {ready.device}")
        self.dtype_label.setText(ready.dtype)
        self.dtype_label.setToolTip(f"Precision: {ready.dtype}" + (
            f" ({ready.precision_reason})" if ready.precision_reason else ""))
        mode = self.settings.engine.memory_mode
        savers = [k.replace("_", " ") for k in ("attention_slicing", "vae_slicing",
                                                "vae_tiling", "cpu_offload")
                  if ready.memory.get(k)]
        mode_text = {"auto": "auto", "low": "low VRAM", "off": "off"}.get(mode, mode)
        self.memory_label.setText(f"Memory: {mode_text}" + (f" ({', '.join(savers)})"
                                                          if savers else ""))
        self.memory_label.setToolTip(str(ready.memory.get("reason", "")))
        self.show_vram(ready.vram)
        self.show_demo_badge(ready.untrained)

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
            self.show_idle_status()

    def show_idle_status(self) -> None:
        """"Generating…" while a job runs, "Ready" when none does (load messages stay)."""
        if not self.load_bar.isHidden():
            return
        if self.load_label.text() in ("Ready", GENERATING, "Engine ready"):
            self.load_label.setText(GENERATING if self.queue.running_job is not None
                                    else "Ready")

    def _on_model_failed(self, failure: Failure) -> None:
        self._set_load_status("No model loaded", None)
        self.model_label.setText("Model: none (load failed)")
        self.show_demo_badge(False)  # no model is loaded, so not the demo either
        self.show_error(f"{MODEL_ERROR}{failure.message}", failure.details)
