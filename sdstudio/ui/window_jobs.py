"""The main window's job display: progress bar, live previews and results per tab, the
queue label. A mixin of :class:`sdstudio.ui.main_window.MainWindow` (its slots for the
JobQueue's job signals), kept apart so the window module stays readable."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from PySide6.QtGui import QAction, QImage
from PySide6.QtWidgets import QLabel, QProgressBar, QTabWidget

from sdstudio.core.events import Progress, format_duration
from sdstudio.core.request import Mode
from sdstudio.ui.canvas.viewer import ImageViewer
from sdstudio.ui.window_part import WindowPart
from sdstudio.worker import Failure, JobImage, JobQueue

if TYPE_CHECKING:
    from sdstudio.ui.gallery import GalleryWidget
    from sdstudio.ui.prompt_panel import PromptPanel

TAB_TXT2IMG, TAB_IMG2IMG, TAB_INPAINT = 0, 1, 2


def progress_text(event: Progress) -> tuple[int, int, str]:
    """(value, maximum, text) for the progress bar: step i/n, s/it and time left."""
    total = max(1, event.total)
    done = (event.run - 1) * total + event.step
    maximum = total * max(1, event.runs)
    text = f"Step {event.step}/{event.total}"
    if event.phase:  # the hires fix: "Step 13/30 · hires 3/10"
        text += f" · {event.phase_text}"
    if event.runs > 1:
        text += f" · run {event.run}/{event.runs}"
    if event.s_per_it > 0:
        left = format_duration((maximum - done) * event.s_per_it)
        text += f" · {event.s_per_it:.2f} s/it · {left} left"
    return done, maximum, text


class JobSlots(WindowPart):
    """Slots for the queue's job signals; the window supplies the widgets."""

    queue: JobQueue
    tabs: QTabWidget
    progress_bar: QProgressBar
    queue_label: QLabel
    cancel_action: QAction
    txt_viewer: ImageViewer
    img_result: ImageViewer
    inpaint_result: ImageViewer
    gallery: GalleryWidget
    prompt_panel: PromptPanel
    _job_tab: dict[int, int]
    _job_started: dict[int, float]
    _shown_result: set[int]

    if TYPE_CHECKING:
        def show_error(self, message: str, details: str = "") -> None: ...
        def show_vram(self, vram: Any) -> None: ...
        def show_idle_status(self) -> None: ...
        def show_result(self, viewer: ImageViewer, image: JobImage) -> None: ...
        def result_pane(self, viewer: ImageViewer) -> Any: ...

    def _connect_jobs(self) -> None:
        q = self.queue
        q.jobStarted.connect(self._on_job_started)
        q.jobProgress.connect(self._on_job_progress)
        q.jobPreview.connect(self._on_job_preview)
        q.imageReady.connect(self._on_image_ready)
        q.jobFinished.connect(self._on_job_finished)
        q.jobFailed.connect(self._on_job_failed)
        q.taskProgress.connect(self._on_task_progress)
        q.busyChanged.connect(self._update_running)
        q.rowsInserted.connect(self._update_running)

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
        self._set_preview_box(self._viewer_for(job_id))
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
        self._set_progress(maximum, value, text)

    def _set_progress(self, maximum: int, value: int, text: str) -> None:
        """The bar's range, value and text as one asynchronous repaint: QProgressBar.setValue
        repaints at once by itself (about 1 ms each step for a maximised window's bar, on the
        GUI thread the worker waits for), and setFormat asks for a second paint."""
        bar = self.progress_bar
        if (bar.maximum(), bar.value(), bar.format()) == (maximum, value, text):
            return
        bar.setUpdatesEnabled(False)
        try:
            bar.setRange(0, maximum)
            bar.setValue(value)
            bar.setFormat(text)
        finally:
            bar.setUpdatesEnabled(True)  # schedules the one paint

    def _on_task_progress(self, job_id: int, done: int, total: int, text: str) -> None:
        job = self.queue.job(job_id)
        if job is not None and job.state.value == "running":
            self._show_task_progress(job)

    def _show_task_progress(self, job: Any) -> None:
        """A task (a batch) as one bar: its items, and the steps of the current one."""
        fraction = job.fraction
        if fraction is None:
            return
        value = int(fraction * 1000)
        if job.source == "upscale":  # its items are tiles
            self._set_progress(1000, value, f"{job.title}: {job.detail}")
            return
        step = f" · step {job.step}/{job.total}" if job.total else ""
        label = job.title.removeprefix("Batch: ")
        counts = job.detail or f"{job.items_done}/{job.items_total} images"  # + s/image, left
        self._set_progress(1000, value, f"Batch {label}: {counts}{step}")

    def _on_job_preview(self, job_id: int, image: QImage) -> None:
        """The latest preview (JobQueue.last_preview), rendered by the worker for the
        view's size: one blit to paint, nothing here grows with the window."""
        if job_id in self._shown_result:
            return
        shown = self.queue.last_preview
        viewer = self._viewer_for(job_id)
        viewer.set_preview(image, shown.size if shown is not None else image.size())
        self._set_preview_box(viewer)  # the next one for the view's size now

    def _set_preview_box(self, viewer: ImageViewer) -> None:
        self.queue.previews.set_box(viewer.preview_box(), viewer.devicePixelRatioF())

    @property
    def preview_counts(self) -> dict[str, int]:
        """Previews the worker made, how many the GUI never showed (newer ones came first)
        and how many were skipped unrendered (too soon after the last); for bench/window.py."""
        slot = self.queue.previews
        return {"made": slot.made, "dropped": slot.dropped, "skipped": slot.skipped}

    def _on_image_ready(self, job_id: int, image: JobImage) -> None:
        if image.qimage is not None and image.index == 0:
            self._shown_result.add(job_id)
            viewer = self._viewer_for(job_id)
            viewer.set_image(image.qimage)
            self.show_result(viewer, image)  # its parameters, menu and drag (window_results)
        if image.path:
            self.gallery.add_image(image.path, image.qimage)
        self.prompt_panel.set_last_seed(image.request.seed)

    def _on_job_finished(self, job_id: int, state: str) -> None:
        if job_id not in self._shown_result and state != "done":
            # cancelled or failed before its first image: the blocky preview goes, the last
            # real result (or the placeholder) comes back
            viewer = self._viewer_for(job_id)
            viewer.set_image(self.result_pane(viewer).image)
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

    def _update_running(self, *args: object) -> None:
        running = self.queue.running_job is not None
        self.show_idle_status()
        self.prompt_panel.set_running(running)
        self.cancel_action.setEnabled(running)
        pending = self.queue.pending_count
        self.queue_label.setText(f"{pending} queued" if pending else "")
