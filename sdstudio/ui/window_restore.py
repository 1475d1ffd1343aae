"""Restoring an image's parameters into the window. A mixin of
:class:`sdstudio.ui.main_window.MainWindow`; the wording is in :mod:`sdstudio.ui.restore`."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from sdstudio.core.errors import SDStudioError
from sdstudio.core.paths import ADDON_SUFFIXES, named_files, search_dirs
from sdstudio.core.request import GenerationRequest, is_plain_name, request_spec
from sdstudio.core.settings import Settings
from sdstudio.ui.canvas.source_canvas import SourceCanvas
from sdstudio.ui.field_controls import UpscalerControl
from sdstudio.ui.restore import find_model, missing_loras, restore_message, summary
from sdstudio.ui.upscaler_picker import upscaler_names
from sdstudio.ui.widgets import MessageBar
from sdstudio.ui.window_part import WindowPart

if TYPE_CHECKING:
    from sdstudio.ui.prompt_panel import PromptPanel


class ParameterRestore(WindowPart):
    """``restore_parameters_from(path)`` and ``apply_request(request)``."""

    settings: Settings
    prompt_panel: PromptPanel
    source_canvas: SourceCanvas
    message_bar: MessageBar
    _models: list[dict[str, Any]]
    _current_model: str

    if TYPE_CHECKING:
        def select_model(self, model: str) -> None: ...
        def show_error(self, message: str, details: str = "") -> None: ...

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
                                   model_hash=meta.model_hash if from_infotext else "",
                                   from_infotext=from_infotext)
        extras = {} if meta.source == "sdstudio" else {
            k: v for k, v in meta.extras.items() if k != "VAE"}
        self.message_bar.show_info(
            restore_message(Path(path).name, summary(request), notes, extras), meta.infotext)
        return True

    def apply_request(self, request: GenerationRequest, model_name: str = "",
                      model_hash: str = "", from_infotext: bool = False) -> list[str]:
        """Show every value of ``request``: the prompt panel's fields, the source canvas'
        resize mode and the model. Returns notes on what could not be applied
        (``from_infotext``: the request was read from an infotext, which names no control
        images)."""
        self.refresh_addons()
        notes: list[str] = []
        if request.vae and not is_plain_name(request.vae):  # an image names no files
            notes.append(f"the VAE path “{request.vae}” is not used: choose a VAE from your "
                         "VAE folders")
            request = request.replace(vae="")
        paths_given = [lo for lo in request.loras if not is_plain_name(lo.name)]
        if paths_given:
            notes += [f"the LoRA path “{lo.name}” is not used" for lo in paths_given]
            request = request.replace(loras=tuple(
                lo for lo in request.loras if lo not in paths_given))
        notes += self.prompt_panel.set_request(request)
        notes += self.prompt_panel.control_section.set_units(request.control_units,
                                                             infotext=from_infotext)
        if request.control_units:
            self.prompt_panel.show_control(True)
        if request.resize_mode in request_spec("resize_mode").choices:
            self.source_canvas.set_fit_mode(request.resize_mode)
        else:
            notes.append(f"resize mode “{request.resize_mode}” is not available here")
        lora_names = [n for n, _ in named_files(search_dirs("lora", self.settings.engine))]
        notes += [f"LoRA “{n}” is not installed (its tag is kept in the prompt)"
                  for n in missing_loras(request, lora_names)]
        recent = [{"path": p, "name": Path(p).name}
                  for p in self.settings.ui.get("recent_models", []) if isinstance(p, str)]
        model = find_model([*self._models, *recent], self._current_model, request.model,
                           model_name, model_hash)
        wanted = request.model or model_name
        if model is not None:
            if model != self._current_model:
                self.select_model(model)
        elif wanted:
            notes.append(f"model “{Path(wanted).name or wanted}” is not installed; the "
                         "current model is kept")
        return notes

    def refresh_addons(self) -> None:
        """The VAE choices from the VAE folders (a restored or saved VAE stays selected)."""
        entries = [("Automatic", "")] + [
            (name, name) for name, _ in named_files(search_dirs("vae", self.settings.engine))]
        self.prompt_panel.set_choices("vae", entries)
        control = self.prompt_panel.control("hires_upscaler")  # the hires fix's models
        assert isinstance(control, UpscalerControl)
        control.set_models(upscaler_names(self.settings.engine))
