"""The settings dialog: output, model folders, device, precision, memory mode, previews."""

from __future__ import annotations

import secrets
from collections.abc import Mapping, Sequence

from PySide6.QtCore import Qt
from PySide6.QtGui import QValidator
from PySide6.QtWidgets import (
    QCheckBox,
    QComboBox,
    QDialog,
    QDialogButtonBox,
    QFormLayout,
    QGroupBox,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QListWidget,
    QPushButton,
    QSpinBox,
    QTabWidget,
    QVBoxLayout,
    QWidget,
)

from sdstudio.core.settings import (
    API_DEFAULT_HOST,
    MAX_CACHED_CHECKPOINTS,
    MEMORY_MODES,
    PRECISIONS,
    PREVIEW_METHODS,
    ApiSettings,
    Settings,
)
from sdstudio.core.threads import MAX_CPU_THREADS
from sdstudio.ui import file_dialogs
from sdstudio.ui.theme import icon

PREVIEW_METHOD_LABELS = {"Approx cheap": "Approx cheap (a fast map of the latent)",
                         "TAESD": "TAESD (looks like the image; needs its decoder file)"}
DEVICE_CHOICES = (("auto", "Automatic (best available)"), ("cuda", "NVIDIA GPU (CUDA)"),
                  ("mps", "Apple GPU (Metal)"), ("cpu", "CPU (slow)"))
PRECISION_LABELS = {"auto": "Automatic", "fp16": "Half (fp16)", "bf16": "bfloat16 (bf16)",
                    "fp32": "Full (fp32)"}
MEMORY_LABELS = {"auto": "Automatic (decided from free memory)",
                 "low": "Low VRAM (every memory saver on)", "off": "Off (fastest, most memory)"}
PATTERN_HELP = ("Fields: {index} {seed} {prompt} {model} {date} {time} {steps} {cfg} "
                "{sampler} {width} {height}. A “/” makes sub-folders.")



class EveryStepsSpin(QSpinBox):
    """0 = "Never", 1 = "every step", n = "every n steps" (a suffix cannot say both)."""

    def textFromValue(self, value: int) -> str:
        if value <= 0:
            return "Never"
        return "every step" if value == 1 else f"every {value} steps"

    def valueFromText(self, text: str) -> int:
        digits = "".join(c for c in text if c.isdigit())
        if digits:
            return int(digits)
        return 1 if "step" in text.lower() else 0

    def validate(self, text: str, pos: int) -> tuple[QValidator.State, str, int]:
        lowered = text.strip().lower()
        if any(c.isdigit() for c in lowered):
            value = self.valueFromText(lowered)
            ok = self.minimum() <= value <= self.maximum()
            return (QValidator.State.Acceptable if ok else QValidator.State.Invalid, text, pos)
        if lowered in ("never", "every step"):
            return (QValidator.State.Acceptable, text, pos)
        return (QValidator.State.Intermediate, text, pos)

class FolderList(QWidget):
    """A list of folders with Add… and Remove."""

    def __init__(self, title: str, folders: tuple[str, ...], parent: QWidget | None = None
                 ) -> None:
        super().__init__(parent)
        self._title = title
        lay = QHBoxLayout(self)
        lay.setContentsMargins(0, 0, 0, 0)
        self.list = QListWidget(self)
        self.list.addItems(list(folders))
        self.list.setAccessibleName(title)
        self.list.setMinimumHeight(64)
        self.list.setMaximumHeight(96)
        lay.addWidget(self.list, 1)
        col = QVBoxLayout()
        self.add_button = QPushButton(icon("folder"), "Add…", self)
        self.add_button.setAccessibleName(f"Add to {title}")
        self.remove_button = QPushButton(icon("delete"), "Remove", self)
        self.remove_button.setAccessibleName(f"Remove from {title}")
        self.add_button.clicked.connect(self.add_dialog)
        self.remove_button.clicked.connect(self.remove_selected)
        col.addWidget(self.add_button)
        col.addWidget(self.remove_button)
        col.addStretch(1)
        lay.addLayout(col)

    def folders(self) -> tuple[str, ...]:
        return tuple(self.list.item(i).text() for i in range(self.list.count()))

    def add_folder(self, folder: str) -> None:
        if folder and folder not in self.folders():
            self.list.addItem(folder)

    def add_dialog(self) -> None:
        folder = file_dialogs.existing_dir(self, "model_folders",
                                           f"Add a folder to {self._title}")
        if folder:
            self.add_folder(folder)

    def remove_selected(self) -> None:
        for item in self.list.selectedItems():
            self.list.takeItem(self.list.row(item))


class SettingsDialog(QDialog):
    def __init__(self, settings: Settings, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setWindowTitle("Settings — SD Studio")
        self.setMinimumWidth(620)
        self._settings = settings
        eng = settings.engine
        tabs = QTabWidget(self)

        # ---------------------------------------------------------------- output
        out = QWidget(self)
        form = QFormLayout(out)
        self.output_edit = QLineEdit(str(settings.output_path), out)
        self.output_edit.setAccessibleName("Output folder")
        browse = QPushButton(icon("folder"), "&Browse…", out)
        browse.clicked.connect(self._browse_output)
        row = QHBoxLayout()
        row.addWidget(self.output_edit, 1)
        row.addWidget(browse)
        label = QLabel("Output &folder", out)
        label.setBuddy(self.output_edit)
        form.addRow(label, row)
        self.pattern_edit = QLineEdit(settings.filename_pattern, out)
        self.pattern_edit.setAccessibleName("File name pattern")
        label = QLabel("File &name pattern", out)
        label.setBuddy(self.pattern_edit)
        form.addRow(label, self.pattern_edit)
        help_label = QLabel(PATTERN_HELP, out)
        help_label.setWordWrap(True)
        help_label.setEnabled(False)
        form.addRow("", help_label)
        self.preview_spin = EveryStepsSpin(out)
        self.preview_spin.setRange(0, 100)
        self.preview_spin.setValue(eng.preview_every)
        self.preview_spin.setAccessibleName("Preview every N steps")
        label = QLabel("Live &preview", out)
        label.setBuddy(self.preview_spin)
        form.addRow(label, self.preview_spin)
        self.preview_method_combo = _choice_row(form, out, "Live preview m&ethod",
                                                PREVIEW_METHODS, PREVIEW_METHOD_LABELS,
                                                eng.preview_method)
        self.preview_method_combo.setAccessibleName("Live preview method")
        self.preview_method_combo.setToolTip(
            "TAESD decodes each preview with a tiny autoencoder so that it looks like the "
            "image; it needs taesd_decoder.safetensors (SD 1.x/2.x) or taesdxl_decoder."
            "safetensors (SDXL), .pth also, in SD Studio's vae_approx models folder or "
            "AUTOMATIC1111's models/VAE-approx. Without the file, and with Approx cheap, "
            "previews are a fast linear map of the latent.")
        tabs.addTab(out, "&Output")

        # ---------------------------------------------------------------- models
        models = QWidget(self)
        mlay = QVBoxLayout(models)
        self.model_dirs = FolderList("Model folders", eng.model_dirs, models)
        self.lora_dirs = FolderList("LoRA folders", eng.lora_dirs, models)
        self.vae_dirs = FolderList("VAE folders", eng.vae_dirs, models)
        self.embedding_dirs = FolderList("Embedding folders", eng.embedding_dirs, models)
        self.upscaler_dirs = FolderList("Upscaler folders", eng.upscaler_dirs, models)
        self.controlnet_dirs = FolderList("ControlNet folders", eng.controlnet_dirs, models)
        for title, widget in (("Model folders (checkpoints and diffusers folders)",
                               self.model_dirs), ("LoRA folders", self.lora_dirs),
                              ("VAE folders", self.vae_dirs),
                              ("Textual-inversion embedding folders", self.embedding_dirs),
                              ("Upscaler model folders (ESRGAN, Real-ESRGAN, SwinIR, DAT...)",
                               self.upscaler_dirs),
                              ("ControlNet, T2I-Adapter and IP-Adapter folders",
                               self.controlnet_dirs)):
            box = QGroupBox(title, models)
            bl = QVBoxLayout(box)
            bl.setContentsMargins(8, 4, 8, 8)
            bl.addWidget(widget)
            mlay.addWidget(box)
        tabs.addTab(models, "&Models")

        # ---------------------------------------------------------------- device
        dev = QWidget(self)
        dform = QFormLayout(dev)
        self.device_combo = QComboBox(dev)
        for value, text in DEVICE_CHOICES:
            self.device_combo.addItem(text, value)
        if self.device_combo.findData(eng.device) < 0:
            self.device_combo.addItem(eng.device, eng.device)
        self.device_combo.setCurrentIndex(self.device_combo.findData(eng.device))
        label = QLabel("Devi&ce", dev)
        label.setBuddy(self.device_combo)
        dform.addRow(label, self.device_combo)
        self.precision_combo = _choice_row(dform, dev, "P&recision", PRECISIONS,
                                           PRECISION_LABELS, eng.precision)
        self.memory_combo = _choice_row(dform, dev, "Memor&y mode", MEMORY_MODES,
                                        MEMORY_LABELS, eng.memory_mode)
        self.threads_spin = QSpinBox(dev)
        self.threads_spin.setRange(0, MAX_CPU_THREADS)
        self.threads_spin.setSpecialValueText("Automatic")
        self.threads_spin.setValue(max(0, min(eng.cpu_threads, MAX_CPU_THREADS)))
        self.threads_spin.setAccessibleName("CPU threads")
        self.threads_spin.setToolTip(
            "Threads the CPU work uses. Automatic: the CPUs SD Studio may use, one fewer for "
            "each that other programs keep busy while it generates.")
        label = QLabel("CPU t&hreads", dev)
        label.setBuddy(self.threads_spin)
        dform.addRow(label, self.threads_spin)
        self.cache_spin = QSpinBox(dev)  # EngineSettings.checkpoint_cache (engine/model_cache)
        self.cache_spin.setRange(-1, MAX_CACHED_CHECKPOINTS)
        self.cache_spin.setSpecialValueText("Automatic")
        self.cache_spin.setValue(max(-1, min(eng.checkpoint_cache, MAX_CACHED_CHECKPOINTS)))
        self.cache_spin.setAccessibleName("Checkpoints to cache in RAM")
        self.cache_spin.setToolTip(
            "Models kept in memory besides the one in use, so that switching back to one is "
            "almost instant. Automatic: one, when the computer has room for it and 2 GiB to "
            "spare; 0: none. Kept models are freed first when memory runs short.")
        label = QLabel("Chec&kpoints to cache in RAM", dev)
        label.setBuddy(self.cache_spin)
        dform.addRow(label, self.cache_spin)
        self.compile_check = QCheckBox("&Speed: compile the model (torch.compile)", dev)
        self.compile_check.setChecked(bool(eng.compile_unet))
        self.compile_check.setToolTip(
            "Compiles the UNet for the GPU: the first image of each size takes longer (a "
            "minute or more), later ones run faster. Compiled kernels are kept between runs. "
            "Needs CUDA with Triton; elsewhere it is left off.")
        dform.addRow("", self.compile_check)
        note = QLabel("Device, precision and compile changes apply when the next model loads.",
                      dev)
        note.setWordWrap(True)
        note.setEnabled(False)
        dform.addRow("", note)
        tabs.addTab(dev, "&Device")
        tabs.addTab(self._api_tab(settings), "Other pro&grams")

        buttons = QDialogButtonBox(
            QDialogButtonBox.StandardButton.Ok | QDialogButtonBox.StandardButton.Cancel,
            Qt.Orientation.Horizontal, self)
        buttons.accepted.connect(self.accept)
        buttons.rejected.connect(self.reject)
        lay = QVBoxLayout(self)
        lay.addWidget(tabs)
        lay.addWidget(buttons)
        self.tabs = tabs

    def _api_tab(self, settings: Settings) -> QWidget:
        """AUTOMATIC1111's web API, served from the window (sdstudio.api)."""
        api = settings.api
        page = QWidget(self)
        form = QFormLayout(page)
        self.api_enabled = QCheckBox("&Allow other programs to use SD Studio", page)
        self.api_enabled.setChecked(api.enabled)
        self.api_enabled.setToolTip("Answer AUTOMATIC1111's web API (/sdapi/v1/...) so chat "
                                    "front-ends, editor plug-ins and scripts can make images "
                                    "here; their jobs join this window's queue")
        form.addRow(self.api_enabled)
        self.api_host = QLineEdit(api.host, page)
        self.api_host.setAccessibleName("Address to listen on")
        label = QLabel("&Host", page)
        label.setBuddy(self.api_host)
        form.addRow(label, self.api_host)
        self.api_port = QSpinBox(page)
        self.api_port.setRange(1, 65535)
        self.api_port.setValue(api.port or 7860)
        self.api_port.setAccessibleName("Port")
        label = QLabel("Por&t", page)
        label.setBuddy(self.api_port)
        form.addRow(label, self.api_port)
        self.api_token = QLineEdit(api.token, page)
        self.api_token.setAccessibleName("Token")
        self.api_token.setPlaceholderText("none (allowed for 127.0.0.1 only)")
        new_token = QPushButton("New", page)
        new_token.setAccessibleName("New token")
        new_token.clicked.connect(
            lambda: self.api_token.setText(secrets.token_urlsafe(24)))
        row = QHBoxLayout()
        row.addWidget(self.api_token, 1)
        row.addWidget(new_token)
        label = QLabel("To&ken", page)
        label.setBuddy(self.api_token)
        form.addRow(label, row)
        self.api_origins = QLineEdit(", ".join(api.cors_origins), page)
        self.api_origins.setAccessibleName("Browser origins allowed (CORS)")
        self.api_origins.setPlaceholderText("none")
        label = QLabel("Browser or&igins", page)
        label.setBuddy(self.api_origins)
        form.addRow(label, self.api_origins)
        note = QLabel("127.0.0.1 is this computer only. Another address lets other computers "
                      "in and needs a token, which clients send as “Authorization: Bearer "
                      "TOKEN” (or as the password of AUTOMATIC1111's --api-auth). Browser "
                      "origins: web pages allowed to call the API (CORS), separated by commas.",
                      page)
        note.setWordWrap(True)
        note.setEnabled(False)
        form.addRow("", note)
        return page

    def _api_settings(self) -> ApiSettings:
        origins = tuple(o.strip() for o in self.api_origins.text().split(",") if o.strip())
        return self._settings.api.replace(
            enabled=self.api_enabled.isChecked(),
            host=self.api_host.text().strip() or API_DEFAULT_HOST,
            port=self.api_port.value(), token=self.api_token.text().strip(),
            cors_origins=origins)

    def _browse_output(self) -> None:
        folder = file_dialogs.existing_dir(self, "output", "Output folder",
                                           self.output_edit.text())
        if folder:
            self.output_edit.setText(folder)

    def result_settings(self) -> Settings:
        """The settings as edited (the caller saves them)."""
        eng = self._settings.engine.replace(
            device=str(self.device_combo.currentData()),
            precision=str(self.precision_combo.currentData()),
            memory_mode=str(self.memory_combo.currentData()),
            preview_every=self.preview_spin.value(),
            preview_method=str(self.preview_method_combo.currentData()),
            cpu_threads=self.threads_spin.value(),
            checkpoint_cache=self.cache_spin.value(),
            compile_unet=self.compile_check.isChecked(),
            model_dirs=self.model_dirs.folders(),
            lora_dirs=self.lora_dirs.folders(),
            vae_dirs=self.vae_dirs.folders(),
            embedding_dirs=self.embedding_dirs.folders(),
            upscaler_dirs=self.upscaler_dirs.folders(),
            controlnet_dirs=self.controlnet_dirs.folders(),
        )
        output = self.output_edit.text().strip()
        from sdstudio.core.paths import default_output_dir

        if output == str(default_output_dir()):
            output = ""
        return self._settings.replace(
            output_dir=output,
            filename_pattern=self.pattern_edit.text().strip() or "{index}-{seed}",
            engine=eng,
            api=self._api_settings(),
        )


def _choice_row(form: QFormLayout, parent: QWidget, text: str, values: Sequence[str],
                labels: Mapping[str, str], current: str) -> QComboBox:
    """A labelled combo box of ``values`` (shown by ``labels``) added to ``form``."""
    combo = QComboBox(parent)
    for value in values:
        combo.addItem(labels.get(value, value), value)
    combo.setCurrentIndex(max(0, combo.findData(current)))
    label = QLabel(text, parent)
    label.setBuddy(combo)
    form.addRow(label, combo)
    return combo
