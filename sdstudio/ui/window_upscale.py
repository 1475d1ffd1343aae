"""The window's "Upscale…" action (results and gallery): ask with :class:`UpscaleDialog`, run
the upscale on the one background worker (``JobQueue.submit_upscale``: progress in the status
bar's progress bar, Cancel / Esc stops it between tiles), and show the saved image in the
gallery, selected. A part (mixin) of :class:`sdstudio.ui.main_window.MainWindow`."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from PIL import Image
from PySide6.QtWidgets import QDialog

from sdstudio.ui.upscale_dialog import UpscaleDialog
from sdstudio.ui.upscaler_picker import upscaler_names
from sdstudio.ui.window_part import WindowPart

if TYPE_CHECKING:
    from PySide6.QtWidgets import QStatusBar, QTabWidget

    from sdstudio.core.settings import Settings
    from sdstudio.ui.gallery import GalleryWidget
    from sdstudio.worker import JobQueue


class UpscaleActions(WindowPart):
    if TYPE_CHECKING:
        settings: Settings
        queue: JobQueue
        gallery: GalleryWidget
        tabs: QTabWidget

        def statusBar(self) -> QStatusBar: ...
        def show_error(self, message: str, details: str = "") -> None: ...
        def load_gallery(self) -> None: ...

    _upscale_jobs: set[int]
    _upscale_choice: tuple[str, float]

    def upscale_dialog(self, path: str) -> UpscaleDialog | None:
        """The dialog for upscaling ``path`` (None, with the reason shown, when the file
        cannot be read). The last choice is offered again."""
        try:
            with Image.open(path) as image:
                size = image.size
        except (OSError, ValueError, Image.DecompressionBombError) as exc:
            self.show_error(f"{Path(path).name} cannot be upscaled: it cannot be read ({exc})")
            return None
        upscaler, scale = getattr(self, "_upscale_choice", ("Lanczos", 2.0))
        dialog = UpscaleDialog(path, size, upscaler_names(self.settings.engine),
                               self._qt_parent(), upscaler=upscaler, scale=scale)
        dialog.setObjectName("upscale_dialog")
        return dialog

    def upscale_image(self, path: str) -> int | None:
        """"Upscale…": ask, then queue the upscale; the job id (None when not asked for)."""
        dialog = self.upscale_dialog(path)
        if dialog is None or dialog.exec() != QDialog.DialogCode.Accepted:
            return None
        upscaler, scale = dialog.choice()
        return self.start_upscale(path, upscaler, scale)

    def start_upscale(self, path: str, upscaler: str, scale: float) -> int:
        """Queue the upscale of ``path`` into the output folder's ``extras`` folder."""
        self._upscale_choice = (upscaler, scale)
        if not hasattr(self, "_upscale_jobs"):
            self._upscale_jobs = set()
            self.queue.jobFinished.connect(self._on_upscale_finished)
        out_dir = str(self.settings.output_path / "extras")
        job_id = self.queue.submit_upscale(path, upscaler=upscaler, scale=scale,
                                           out_dir=out_dir)
        self._upscale_jobs.add(job_id)
        self.statusBar().showMessage(f"Upscaling {Path(path).name} ×{scale:g} ({upscaler})…",
                                     4000)
        return job_id

    def _on_upscale_finished(self, job_id: int, state: str) -> None:
        if job_id not in self._upscale_jobs:
            return
        self._upscale_jobs.discard(job_id)
        job = self.queue.job(job_id)
        if state != "done" or job is None or not job.images:
            return  # failures are shown by the job slots; a cancel needs no news
        saved = job.images[-1]
        self.gallery.add_image(saved, select=True)
        self.statusBar().showMessage(f"Upscaled: {saved}", 6000)
