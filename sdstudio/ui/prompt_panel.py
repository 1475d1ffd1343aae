"""The prompt panel: everything that goes into a GenerationRequest except the images and model.

``request()`` builds the request from the widgets; ``set_request()`` puts one back (restoring
parameters from a PNG); ``values()`` / ``restore()`` persist the panel between launches.
Token counters are computed in a background runner after a short pause in typing, so the
keystroke path does no tokenising.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from PySide6.QtCore import QEvent, QRegularExpression, QSize, Qt, QTimer, Signal
from PySide6.QtGui import QKeyEvent, QRegularExpressionValidator
from PySide6.QtWidgets import (
    QCheckBox,
    QComboBox,
    QDoubleSpinBox,
    QFormLayout,
    QFrame,
    QGridLayout,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QMenu,
    QPlainTextEdit,
    QPushButton,
    QSizePolicy,
    QSpinBox,
    QToolButton,
    QVBoxLayout,
    QWidget,
)

from sdstudio.core.request import MAX_SEED, SAMPLER_NAMES, GenerationRequest, Mode
from sdstudio.ui.background import BackgroundRunner
from sdstudio.ui.theme import icon

SIZE_PRESETS: tuple[tuple[str, tuple[tuple[int, int], ...]], ...] = (
    ("SD 1.x / 2.x", ((512, 512), (512, 768), (768, 512), (768, 768))),
    ("SDXL", ((1024, 1024), (1152, 896), (896, 1152), (1216, 832), (832, 1216),
              (1344, 768), (768, 1344), (1536, 640), (640, 1536))),
)

PERSISTED = ("prompt", "negative_prompt", "sampler", "steps", "cfg_scale", "seed", "width",
             "height", "batch_size", "batch_count", "strength", "mask_blur",
             "inpaint_only_masked", "inpaint_padding")


def count_label(text: str) -> tuple[str, bool]:
    """The "12/75" text for a prompt, and whether it spills past the first chunk."""
    from sdstudio.core.tokens import chunk_info, count_tokens

    n, capacity = chunk_info(count_tokens(text))
    return f"{n}/{capacity}", capacity > 75


class PromptEdit(QPlainTextEdit):
    """A plain-text editor where Tab moves focus (so the panel stays keyboard-usable) and
    Ctrl+Enter is left to the window's Generate shortcut."""

    def __init__(self, placeholder: str, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setPlaceholderText(placeholder)
        self.setTabChangesFocus(True)
        self.setLineWrapMode(QPlainTextEdit.LineWrapMode.WidgetWidth)

    @staticmethod
    def _is_generate_key(event: QKeyEvent) -> bool:
        return (event.key() in (Qt.Key.Key_Return, Qt.Key.Key_Enter)
                and bool(event.modifiers() & Qt.KeyboardModifier.ControlModifier))

    def event(self, event: QEvent) -> bool:
        if (event.type() == QEvent.Type.ShortcutOverride and isinstance(event, QKeyEvent)
                and self._is_generate_key(event)):
            event.ignore()  # not ours: the window's Generate shortcut takes it
            return False
        return super().event(event)

    def keyPressEvent(self, event: QKeyEvent) -> None:
        if self._is_generate_key(event):
            event.ignore()
            return
        super().keyPressEvent(event)


class PromptPanel(QWidget):
    generateRequested = Signal()
    cancelRequested = Signal()
    changed = Signal()
    sizeChanged = Signal(int, int)

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setObjectName("promptPanel")
        self._mode = Mode.TXT2IMG
        self._last_seed: int | None = None
        self._counter = BackgroundRunner("sdstudio-tokens", self)
        self._count_timer = QTimer(self)
        self._count_timer.setSingleShot(True)
        self._count_timer.setInterval(120)
        self._count_timer.timeout.connect(self._count_tokens)

        lay = QVBoxLayout(self)
        lay.setContentsMargins(10, 8, 10, 10)
        lay.setSpacing(6)

        # ------------------------------------------------------------- prompts
        self.prompt_edit = PromptEdit("Describe the image: a lighthouse on a cliff at dusk, "
                                      "oil painting…", self)
        self.prompt_edit.setAccessibleName("Prompt")
        self.prompt_edit.setMinimumHeight(90)
        self.prompt_counter = self._counter_label()
        lay.addLayout(self._titled("&Prompt", self.prompt_edit, self.prompt_counter))
        lay.addWidget(self.prompt_edit, 3)

        self.negative_edit = PromptEdit("What to avoid: blurry, low quality…", self)
        self.negative_edit.setAccessibleName("Negative prompt")
        self.negative_edit.setMinimumHeight(56)
        self.negative_counter = self._counter_label()
        lay.addLayout(self._titled("&Negative prompt", self.negative_edit,
                                   self.negative_counter))
        lay.addWidget(self.negative_edit, 2)

        # ------------------------------------------------------------- sampling
        form = QFormLayout()
        form.setFieldGrowthPolicy(QFormLayout.FieldGrowthPolicy.AllNonFixedFieldsGrow)
        form.setLabelAlignment(Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter)
        form.setHorizontalSpacing(10)
        form.setVerticalSpacing(6)

        self.sampler_combo = QComboBox(self)
        self.sampler_combo.addItems(list(SAMPLER_NAMES))
        self.sampler_combo.setAccessibleName("Sampler")
        form.addRow(self._label("Sa&mpler", self.sampler_combo), self.sampler_combo)

        self.steps_spin = QSpinBox(self)
        self.steps_spin.setRange(1, 150)
        self.steps_spin.setValue(20)
        self.steps_spin.setAccessibleName("Steps")
        self.cfg_spin = QDoubleSpinBox(self)
        self.cfg_spin.setRange(0.0, 30.0)
        self.cfg_spin.setSingleStep(0.5)
        self.cfg_spin.setDecimals(1)
        self.cfg_spin.setValue(7.0)
        self.cfg_spin.setAccessibleName("CFG scale")
        self.cfg_spin.setToolTip("Classifier-free guidance: how strongly the image follows "
                                 "the prompt")
        row = QHBoxLayout()
        row.setSpacing(6)
        row.addWidget(self.steps_spin, 1)
        row.addSpacing(12)  # an inline label needs air on its left, like the form's labels
        cfg_label = self._label("C&FG", self.cfg_spin)
        row.addWidget(cfg_label)
        row.addWidget(self.cfg_spin, 1)
        form.addRow(self._label("S&teps", self.steps_spin), row)

        # seed
        self.seed_edit = QLineEdit("-1", self)
        self.seed_edit.setValidator(QRegularExpressionValidator(
            QRegularExpression(r"-1|\d{1,10}"), self.seed_edit))
        self.seed_edit.setAccessibleName("Seed")
        self.seed_edit.setToolTip("-1 picks a new random seed for every run")
        self.random_seed_button = self._tool("dice", "Random seed (-1)")
        self.random_seed_button.clicked.connect(lambda: self.seed_edit.setText("-1"))
        self.reuse_seed_button = self._tool("reuse", "Reuse the last seed")
        self.reuse_seed_button.setEnabled(False)
        self.reuse_seed_button.clicked.connect(self.reuse_last_seed)
        row = QHBoxLayout()
        row.setSpacing(4)
        row.addWidget(self.seed_edit, 1)
        row.addWidget(self.random_seed_button)
        row.addWidget(self.reuse_seed_button)
        form.addRow(self._label("S&eed", self.seed_edit), row)

        # size
        self.width_spin = self._size_spin("Width")
        self.height_spin = self._size_spin("Height")
        self.swap_button = self._tool("swap", "Swap width and height")
        self.swap_button.clicked.connect(self.swap_size)
        self.preset_button = QToolButton(self)
        self.preset_button.setText("Presets")
        self.preset_button.setToolTip("Common sizes for SD 1.x/2.x and SDXL")
        self.preset_button.setPopupMode(QToolButton.ToolButtonPopupMode.InstantPopup)
        self.preset_button.setAccessibleName("Size presets")
        menu = QMenu(self.preset_button)
        for title, sizes in SIZE_PRESETS:
            menu.addSection(title)
            for w, h in sizes:
                action = menu.addAction(f"{w} × {h}")
                action.triggered.connect(lambda _=False, w=w, h=h: self.set_size(w, h))
        self.preset_button.setMenu(menu)
        row = QHBoxLayout()
        row.setSpacing(4)
        row.addWidget(self.width_spin, 1)
        times = QLabel("×", self)
        row.addWidget(times)
        row.addWidget(self.height_spin, 1)
        row.addWidget(self.swap_button)
        row.addWidget(self.preset_button)
        form.addRow(self._label("Si&ze", self.width_spin), row)

        # batch
        self.batch_size_spin = QSpinBox(self)
        self.batch_size_spin.setRange(1, 16)
        self.batch_size_spin.setAccessibleName("Images per run")
        self.batch_size_spin.setToolTip("Images made together in one run (uses more memory)")
        self.batch_count_spin = QSpinBox(self)
        self.batch_count_spin.setRange(1, 1000)
        self.batch_count_spin.setAccessibleName("Number of runs")
        self.batch_count_spin.setToolTip("Runs made one after the other")
        row = QHBoxLayout()
        row.setSpacing(6)
        row.addWidget(self.batch_size_spin, 1)
        row.addSpacing(12)
        row.addWidget(self._label("R&uns", self.batch_count_spin))
        row.addWidget(self.batch_count_spin, 1)
        form.addRow(self._label("&Images", self.batch_size_spin), row)

        # img2img / inpaint
        self.strength_spin = QDoubleSpinBox(self)
        self.strength_spin.setRange(0.0, 1.0)
        self.strength_spin.setSingleStep(0.05)
        self.strength_spin.setDecimals(2)
        self.strength_spin.setValue(0.75)
        self.strength_spin.setAccessibleName("Denoising strength")
        self.strength_spin.setToolTip("How much the source image changes: 0 keeps it, "
                                      "1 ignores it")
        self.strength_label = self._label("Stren&gth", self.strength_spin)
        form.addRow(self.strength_label, self.strength_spin)

        self.mask_blur_spin = QSpinBox(self)
        self.mask_blur_spin.setRange(0, 64)
        self.mask_blur_spin.setValue(4)
        self.mask_blur_spin.setSuffix(" px")
        self.mask_blur_spin.setAccessibleName("Mask blur")
        self.mask_blur_label = self._label("Mask b&lur", self.mask_blur_spin)
        form.addRow(self.mask_blur_label, self.mask_blur_spin)

        self.only_masked_check = QCheckBox("Only &masked area", self)
        self.only_masked_check.setToolTip("Inpaint the masked area's bounding box at full "
                                          "resolution, then paste it back")
        self.padding_spin = QSpinBox(self)
        self.padding_spin.setRange(0, 256)
        self.padding_spin.setValue(32)
        self.padding_spin.setSuffix(" px")
        self.padding_spin.setAccessibleName("Padding around the masked area")
        self.padding_spin.setToolTip("Pixels of context around the masked area")
        row = QHBoxLayout()
        row.addWidget(self.only_masked_check)
        row.addStretch(1)
        pad_label = self._label("Pa&dding", self.padding_spin)
        row.addWidget(pad_label)
        row.addWidget(self.padding_spin)
        self.only_masked_row = QWidget(self)
        self.only_masked_row.setLayout(row)
        row.setContentsMargins(0, 0, 0, 0)
        self.only_masked_check.toggled.connect(self.padding_spin.setEnabled)
        self.padding_spin.setEnabled(False)
        form.addRow("", self.only_masked_row)
        self._form = form
        lay.addLayout(form)

        line = QFrame(self)
        line.setFrameShape(QFrame.Shape.HLine)
        line.setFrameShadow(QFrame.Shadow.Sunken)
        lay.addWidget(line)

        # ------------------------------------------------------------- buttons
        self.generate_button = QPushButton(icon("generate", "#ffffff"), "&Generate", self)
        self.generate_button.setObjectName("generateButton")
        self.generate_button.setToolTip("Generate (Ctrl+Enter). While a job runs, this "
                                        "queues another.")
        self.generate_button.setIconSize(QSize(20, 20))
        self.generate_button.setSizePolicy(QSizePolicy.Policy.Expanding,
                                           QSizePolicy.Policy.Fixed)
        self.generate_button.setMinimumHeight(40)
        self.generate_button.clicked.connect(self.generateRequested)
        self.cancel_button = QPushButton(icon("stop"), "&Cancel", self)
        self.cancel_button.setToolTip("Cancel the running job (Esc)")
        self.cancel_button.setMinimumHeight(40)
        self.cancel_button.setEnabled(False)
        self.cancel_button.clicked.connect(self.cancelRequested)
        buttons = QGridLayout()
        buttons.addWidget(self.generate_button, 0, 0)
        buttons.addWidget(self.cancel_button, 0, 1)
        buttons.setColumnStretch(0, 3)
        buttons.setColumnStretch(1, 1)
        lay.addLayout(buttons)

        for w in (self.steps_spin, self.batch_size_spin, self.batch_count_spin,
                  self.mask_blur_spin, self.padding_spin):
            w.valueChanged.connect(self.changed)
        for d in (self.cfg_spin, self.strength_spin):
            d.valueChanged.connect(self.changed)
        self.sampler_combo.currentIndexChanged.connect(self.changed)
        self.seed_edit.textChanged.connect(self.changed)
        self.only_masked_check.toggled.connect(self.changed)
        self.width_spin.valueChanged.connect(self._size_changed)
        self.height_spin.valueChanged.connect(self._size_changed)
        self.prompt_edit.textChanged.connect(self._text_changed)
        self.negative_edit.textChanged.connect(self._text_changed)
        self.set_mode(Mode.TXT2IMG)
        self._count_timer.start(0)

    # ============================================================== building
    def _label(self, text: str, buddy: QWidget) -> QLabel:
        label = QLabel(text, self)
        label.setBuddy(buddy)
        return label

    def _titled(self, text: str, buddy: QWidget, counter: QLabel) -> QHBoxLayout:
        row = QHBoxLayout()
        label = self._label(text, buddy)
        label.setObjectName("sectionTitle")
        row.addWidget(label)
        row.addStretch(1)
        row.addWidget(counter)
        return row

    def _counter_label(self) -> QLabel:
        label = QLabel("0/75", self)
        label.setObjectName("tokenCounter")
        label.setToolTip("Tokens used / tokens available (CLIP reads prompts in chunks of 75)")
        return label

    def _tool(self, name: str, tip: str) -> QToolButton:
        button = QToolButton(self)
        button.setIcon(icon(name))
        button.setIconSize(QSize(18, 18))
        button.setToolTip(tip)
        button.setAccessibleName(tip)
        button.setAutoRaise(True)
        return button

    def _size_spin(self, name: str) -> QSpinBox:
        spin = QSpinBox(self)
        spin.setRange(64, 4096)
        spin.setSingleStep(64)
        spin.setValue(512)
        spin.setAccessibleName(name)
        spin.setToolTip(f"{name} in pixels (a multiple of 8)")
        spin.editingFinished.connect(lambda s=spin: s.setValue(max(64, round(s.value() / 8) * 8)))
        return spin

    # =================================================================== API
    def request(self) -> GenerationRequest:
        """A request from the panel (no init image, mask or model: the window adds those)."""
        return GenerationRequest(
            prompt=self.prompt_edit.toPlainText(),
            negative_prompt=self.negative_edit.toPlainText(),
            width=self.width_spin.value(),
            height=self.height_spin.value(),
            steps=self.steps_spin.value(),
            cfg_scale=round(self.cfg_spin.value(), 2),
            seed=self.seed(),
            sampler=self.sampler_combo.currentText(),
            batch_size=self.batch_size_spin.value(),
            batch_count=self.batch_count_spin.value(),
            strength=round(self.strength_spin.value(), 3),
            mask_blur=self.mask_blur_spin.value(),
            inpaint_only_masked=self.only_masked_check.isChecked(),
            inpaint_padding=self.padding_spin.value(),
        )

    def seed(self) -> int:
        text = self.seed_edit.text().strip()
        try:
            value = int(text)
        except ValueError:
            return -1
        return value if -1 <= value <= MAX_SEED else -1

    def set_request(self, request: GenerationRequest) -> list[str]:
        """Show ``request``'s values; returns a short list of what was restored."""
        self.prompt_edit.setPlainText(request.prompt)
        self.negative_edit.setPlainText(request.negative_prompt)
        index = self.sampler_combo.findText(request.sampler)
        if index >= 0:
            self.sampler_combo.setCurrentIndex(index)
        self.steps_spin.setValue(min(request.steps, self.steps_spin.maximum()))
        self.cfg_spin.setValue(request.cfg_scale)
        self.seed_edit.setText(str(request.seed))
        self.set_size(request.width, request.height)
        self.batch_size_spin.setValue(request.batch_size)
        self.batch_count_spin.setValue(request.batch_count)
        self.strength_spin.setValue(request.strength)
        self.mask_blur_spin.setValue(min(request.mask_blur, self.mask_blur_spin.maximum()))
        self.only_masked_check.setChecked(request.inpaint_only_masked)
        self.padding_spin.setValue(min(request.inpaint_padding, self.padding_spin.maximum()))
        parts = ["prompt"]
        if request.negative_prompt:
            parts.append("negative prompt")
        parts += [f"seed {request.seed}", f"{request.steps} steps", request.sampler,
                  f"CFG {request.cfg_scale:g}", f"{request.width}×{request.height}"]
        if request.mode is not Mode.TXT2IMG:
            parts.append(f"strength {request.strength:g}")
        return parts

    def values(self) -> dict[str, Any]:
        data = self.request().to_dict()
        return {k: data[k] for k in PERSISTED}

    def restore(self, values: Mapping[str, Any]) -> None:
        known = {k: v for k, v in values.items() if k in PERSISTED}
        if "prompt" not in known:
            known["prompt"] = ""
        try:
            request = GenerationRequest.from_dict(known)
        except Exception:  # a bad saved value: keep the defaults
            return
        self.set_request(request)

    def set_mode(self, mode: Mode) -> None:
        """Show strength for img2img/inpaint, the mask options for inpaint."""
        self._mode = mode
        uses_image = mode is not Mode.TXT2IMG
        for w in (self.strength_label, self.strength_spin):
            w.setVisible(uses_image)
        inpaint = mode is Mode.INPAINT
        for w in (self.mask_blur_label, self.mask_blur_spin, self.only_masked_row):
            w.setVisible(inpaint)

    def set_size(self, width: int, height: int) -> None:
        self.width_spin.setValue(width)
        self.height_spin.setValue(height)

    def swap_size(self) -> None:
        w, h = self.width_spin.value(), self.height_spin.value()
        self.set_size(h, w)

    def set_last_seed(self, seed: int) -> None:
        self._last_seed = seed
        self.reuse_seed_button.setEnabled(True)
        self.reuse_seed_button.setToolTip(f"Reuse the last seed ({seed})")

    def reuse_last_seed(self) -> None:
        if self._last_seed is not None:
            self.seed_edit.setText(str(self._last_seed))

    def set_running(self, running: bool) -> None:
        self.cancel_button.setEnabled(running)
        self.generate_button.setText("&Queue another" if running else "&Generate")

    def shutdown(self) -> None:
        self._count_timer.stop()
        self._counter.stop()

    # ============================================================== internals
    def _size_changed(self) -> None:
        self.sizeChanged.emit(self.width_spin.value(), self.height_spin.value())
        self.changed.emit()

    def _text_changed(self) -> None:
        self._count_timer.start()
        self.changed.emit()

    def _count_tokens(self) -> None:
        texts = (self.prompt_edit.toPlainText(), self.negative_edit.toPlainText())

        def work() -> tuple[tuple[str, bool], tuple[str, bool]]:
            return count_label(texts[0]), count_label(texts[1])

        self._counter.submit(work, self._show_counts)

    def _show_counts(self, result: tuple[tuple[str, bool], tuple[str, bool]]) -> None:
        for label, (text, over) in zip((self.prompt_counter, self.negative_counter), result,
                                   strict=True):
            label.setText(text)
            label.setProperty("over", "true" if over else "false")
            label.style().unpolish(label)
            label.style().polish(label)
