"""The prompt panel: everything that goes into a GenerationRequest except the images and model.

``request()`` builds the request from the widgets; ``set_request()`` puts one back (restoring
parameters from a PNG); ``values()`` / ``restore()`` persist the panel between launches.
Token counters are computed in a background runner after a short pause in typing, so the
keystroke path does no tokenising.

The prompt boxes' tools (``ui.prompt_tools``, ``ui.addon_picker``): Ctrl+Up / Ctrl+Down edit
the weight under the cursor as AUTOMATIC1111 does; **History** (Ctrl+H) brings back a prompt
generated with (``remember_prompts()``, called when a job is queued, keeps it); **Styles**
applies A1111 styles; **LoRA…** inserts LoRAs and embeddings at the cursor of the prompt box
used last, or picks the VAE.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from PySide6.QtCore import QEvent, QSize, Qt, QTimer, Signal
from PySide6.QtGui import QFocusEvent, QKeyEvent, QKeySequence, QShortcut
from PySide6.QtWidgets import (
    QFormLayout,
    QFrame,
    QGridLayout,
    QHBoxLayout,
    QLabel,
    QMenu,
    QPlainTextEdit,
    QPushButton,
    QSizePolicy,
    QSpinBox,
    QToolButton,
    QVBoxLayout,
    QWidget,
)

from sdstudio.core.fields import FieldSpec, Mode
from sdstudio.core.prompt_history import PromptHistory, load_history, save_history
from sdstudio.core.request import FIELDS, GenerationRequest, request_spec
from sdstudio.core.settings import EngineSettings, load_settings
from sdstudio.ui.addon_picker import AddonPicker
from sdstudio.ui.background import BackgroundRunner
from sdstudio.ui.control_section import ControlSection
from sdstudio.ui.field_controls import ChoiceControl, FieldControl, make_control
from sdstudio.ui.prompt_tools import (
    HistoryDialog,
    StylesDialog,
    edit_weight_in,
    insert_at_cursor,
    replace_text,
)
from sdstudio.ui.theme import icon

log = logging.getLogger(__name__)
HISTORY_KEY = "Ctrl+H"

SIZE_PRESETS: tuple[tuple[str, tuple[tuple[int, int], ...]], ...] = (
    ("SD 1.x / 2.x", ((512, 512), (512, 768), (768, 512), (768, 768))),
    ("SDXL", ((1024, 1024), (1152, 896), (896, 1152), (1216, 832), (832, 1216),
              (1344, 768), (768, 1344), (1536, 640), (640, 1536))),
)
FORM_SECTIONS = ("sampling", "image", "inpaint")  # the main form, in this order
HIRES = "hires"  # under "Hires fix" (text to image), collapsed until opened
ADVANCED = "advanced"  # under "More options"
# Fields the panel edits: the rest ("external") belong to the model bar, the canvases and
# the prompt's LoRA tags; the window sets and reads those.
PANEL_FIELDS: tuple[FieldSpec, ...] = tuple(
    s for s in FIELDS if s.ui is None or s.ui.section != "external")
PERSISTED: tuple[str, ...] = tuple(s.name for s in PANEL_FIELDS if s.persist)


def count_label(text: str, emphasis: str = "Original") -> tuple[str, bool]:
    """The "12/75" text for a prompt as the engine encodes it with that emphasis mode, and
    whether it spills past the first chunk."""
    from sdstudio.core.tokens import chunk_info, count_tokens

    n, capacity = chunk_info(count_tokens(text, emphasis=emphasis))
    return f"{n}/{capacity}", capacity > 75


class PromptEdit(QPlainTextEdit):
    """A plain-text editor where Tab moves focus (so the panel stays keyboard-usable),
    Ctrl+Enter is left to the window's Generate shortcut and Ctrl+Up / Ctrl+Down change the
    weight of the text under the cursor (AUTOMATIC1111's keys)."""

    focused = Signal()

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
        mods = event.modifiers() & ~Qt.KeyboardModifier.KeypadModifier
        if event.key() in (Qt.Key.Key_Up, Qt.Key.Key_Down) \
                and mods == Qt.KeyboardModifier.ControlModifier:
            edit_weight_in(self, event.key() == Qt.Key.Key_Up)
            event.accept()  # as in A1111: the keys never move the cursor here
            return
        super().keyPressEvent(event)

    def focusInEvent(self, event: QFocusEvent) -> None:
        super().focusInEvent(event)
        self.focused.emit()


class PromptPanel(QWidget):
    """Prompts, then a control for every other field the panel edits (the field table's
    ``Ui`` hints place them), then Generate / Cancel."""

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
        self.controls: dict[str, FieldControl] = {}
        self._rows: list[tuple[FieldSpec, list[QWidget]]] = []  # shown in the spec's modes
        self._row_layouts: list[QHBoxLayout] = []
        self._history: PromptHistory | None = None  # read on first use
        self.tool_dialog: HistoryDialog | StylesDialog | None = None  # the one open
        self.addon_picker: AddonPicker | None = None

        lay = QVBoxLayout(self)
        lay.setContentsMargins(10, 8, 10, 10)
        lay.setSpacing(6)

        # ------------------------------------------------------------- prompts
        self.prompt_edit = PromptEdit("Describe the image: a lighthouse on a cliff at dusk, "
                                      "oil painting…", self)
        self.prompt_edit.setAccessibleName("Prompt")
        self.prompt_edit.setMinimumHeight(90)
        self.prompt_counter = self._counter_label()
        title = self._titled("&Prompt", self.prompt_edit, self.prompt_counter)
        self.history_button = self._text_tool(
            "History", f"Prompts you generated with, searchable ({HISTORY_KEY})",
            self.show_history)
        self.styles_button = self._text_tool(
            "Styles", "Apply, save and import styles (AUTOMATIC1111's styles.csv)",
            self.show_styles)
        self.addons_button = self._text_tool(
            "LoRA…", "Insert a LoRA or an embedding at the cursor, or choose the VAE",
            self.show_addons)
        for i, button in enumerate((self.history_button, self.styles_button,
                                    self.addons_button)):
            title.insertWidget(2 + i, button)
        lay.addLayout(title)
        lay.addWidget(self.prompt_edit, 3)

        self.negative_edit = PromptEdit("What to avoid: blurry, low quality…", self)
        self.negative_edit.setAccessibleName("Negative prompt")
        self.negative_edit.setMinimumHeight(56)
        self.negative_counter = self._counter_label()
        lay.addLayout(self._titled("&Negative prompt", self.negative_edit,
                                   self.negative_counter))
        lay.addWidget(self.negative_edit, 2)

        # ------------------------------------------------------------- fields
        self._form = self._new_form()
        lay.addLayout(self._form)
        self.more_button = self._section_button("More options", "More options",
                                                self.show_more)
        self.hires_button = self._section_button("Hi&res fix", "Hires fix", self.show_hires)
        self.hires_button.setToolTip("Make the image at its size, upscale it, then refine it "
                                     "at the larger size (text to image)")
        self.control_button = self._section_button("Control", "Control", self.show_control)
        self.control_button.setToolTip("ControlNet, T2I-Adapter and IP-Adapter units: guide "
                                       "the composition with an image, or use an image as a "
                                       "prompt")
        self.control_section = ControlSection(self)
        self.control_section.target_size = lambda: (int(self.control("width").value()),
                                                    int(self.control("height").value()))
        self.control_section.engine_settings = self._engine_settings
        self.control_section.changed.connect(self._control_changed)
        self.control_section.changed.connect(self.changed)
        for section in (*FORM_SECTIONS, HIRES, ADVANCED):
            if section == ADVANCED:  # one form, so the labels line up; rows shown on demand
                self._form.addRow(self.control_button)
                self._form.addRow(self.control_section)
                self._form.addRow(self.more_button)
            if section == HIRES:
                self._form.addRow(self.hires_button)
            for spec in PANEL_FIELDS:
                if spec.name not in ("prompt", "negative_prompt") and _section(spec) == section:
                    self._add_field(spec)

        line = QFrame(self)
        line.setFrameShape(QFrame.Shape.HLine)
        line.setFrameShadow(QFrame.Shadow.Sunken)
        lay.addWidget(line)

        # ------------------------------------------------------------- buttons
        self.generate_button = QPushButton(icon("generate", "#ffffff"), "Generate", self)
        self.generate_button.setObjectName("generateButton")
        self.generate_button.setToolTip("Generate (Ctrl+Enter). While a job runs, this "
                                        "queues another.")
        self.generate_button.setIconSize(QSize(20, 20))
        self.generate_button.setSizePolicy(QSizePolicy.Policy.Expanding,
                                           QSizePolicy.Policy.Fixed)
        self.generate_button.setMinimumHeight(40)
        self.generate_button.clicked.connect(self.generateRequested)
        self.cancel_button = QPushButton(icon("stop"), "Cancel", self)
        self.cancel_button.setToolTip("Cancel the running job (Esc)")
        self.cancel_button.setMinimumHeight(40)
        self.cancel_button.setEnabled(False)
        self.cancel_button.clicked.connect(self.cancelRequested)
        # Generate and Cancel: a bar of their own, which the window keeps in view below the
        # panel's scroll area (with More options open on a laptop the panel scrolls)
        self.action_bar = QWidget(self)
        buttons = QGridLayout(self.action_bar)
        buttons.setContentsMargins(0, 0, 0, 0)
        buttons.addWidget(self.generate_button, 0, 0)
        buttons.addWidget(self.cancel_button, 0, 1)
        buttons.setColumnStretch(0, 3)
        buttons.setColumnStretch(1, 1)
        lay.addWidget(self.action_bar)

        for control in self.controls.values():
            control.on_change(self.changed.emit)
        self.control("width").on_change(self._size_changed)
        self.control("height").on_change(self._size_changed)
        self.control("emphasis").on_change(self._count_timer.start)  # it changes the count
        self.control("hires").on_change(self._hires_changed)
        only_masked = self.widget("inpaint_only_masked")
        padding = self.widget("inpaint_padding")
        only_masked.toggled.connect(padding.setEnabled)
        padding.setEnabled(False)
        self.prompt_edit.textChanged.connect(self._text_changed)
        self.negative_edit.textChanged.connect(self._text_changed)
        self._last_edit: PromptEdit = self.prompt_edit  # where LoRAs and embeddings go
        for edit in (self.prompt_edit, self.negative_edit):
            edit.focused.connect(lambda e=edit: setattr(self, "_last_edit", e))
        history_key = QShortcut(QKeySequence(HISTORY_KEY), self)
        history_key.setContext(Qt.ShortcutContext.WindowShortcut)
        history_key.activated.connect(self.show_history)
        self.set_mode(Mode.TXT2IMG)
        self._count_timer.start(0)

    # ============================================================== building
    @staticmethod
    def _new_form() -> QFormLayout:
        form = QFormLayout()
        form.setFieldGrowthPolicy(QFormLayout.FieldGrowthPolicy.AllNonFixedFieldsGrow)
        form.setLabelAlignment(Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter)
        form.setHorizontalSpacing(10)
        form.setVerticalSpacing(6)
        return form

    def _add_field(self, spec: FieldSpec) -> None:
        """A control for ``spec``: a row of its own, or on the previous row (``inline``)."""
        control = make_control(spec, self)
        self.controls[spec.name] = control
        ui = spec.ui
        widget = control.widget
        text = (ui.label if ui is not None and ui.label else spec.label)
        if ui is not None and ui.inline and self._rows:
            _, widgets = self._rows[-1]
            row = self._row_layouts[-1]
            if ui.widget == "size":
                times = QLabel("×", self)
                row.addWidget(times)
                widgets.append(times)
            else:
                row.addSpacing(12)  # an inline label needs air on its left
                label = self._label(text, widget)
                row.addWidget(label)
                widgets.append(label)
            row.addWidget(widget, 1)
            widgets.append(widget)
        else:
            row = QHBoxLayout()
            row.setSpacing(6)
            row.setContentsMargins(0, 0, 0, 0)
            row.addWidget(widget, 1)
            holder = QWidget(self)
            holder.setLayout(row)
            form = self._form
            if spec.kind == "bool":
                form.addRow("", holder)
                widgets = [holder]
            else:
                label = self._label(text, widget)
                form.addRow(label, holder)
                widgets = [label, holder]
            self._rows.append((spec, widgets))
            self._row_layouts.append(row)
        self._decorate(spec, control, self._row_layouts[-1])

    def _decorate(self, spec: FieldSpec, control: FieldControl, row: QHBoxLayout) -> None:
        """The few extras around particular fields' controls."""
        widget = spec.ui.widget if spec.ui is not None else ""
        if widget == "seed":
            self.random_seed_button = self._tool("dice", "Random seed (-1)")
            self.random_seed_button.clicked.connect(lambda: control.set_value(-1))
            self.reuse_seed_button = self._tool("reuse", "Reuse the last seed")
            self.reuse_seed_button.setEnabled(False)
            self.reuse_seed_button.clicked.connect(self.reuse_last_seed)
            row.setSpacing(4)
            row.addWidget(self.random_seed_button)
            row.addWidget(self.reuse_seed_button)
        elif widget == "size":
            spin = control.widget
            assert isinstance(spin, QSpinBox)
            spin.editingFinished.connect(
                lambda s=spin: s.setValue(max(64, round(s.value() / 8) * 8)))
            if spec.name == "height":
                self.swap_button = self._tool("swap", "Swap width and height")
                self.swap_button.clicked.connect(self.swap_size)
                row.setSpacing(4)
                row.addWidget(self.swap_button)
                row.addWidget(self._preset_button())

    def _preset_button(self) -> QToolButton:
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
        return self.preset_button

    def _section_button(self, text: str, name: str, slot: Any) -> QToolButton:
        """The arrow button that opens and closes a collapsible section."""
        button = QToolButton(self)
        button.setText(text)
        button.setCheckable(True)
        button.setToolButtonStyle(Qt.ToolButtonStyle.ToolButtonTextBesideIcon)
        button.setArrowType(Qt.ArrowType.RightArrow)
        button.setAutoRaise(True)
        button.setAccessibleName(name)
        button.toggled.connect(slot)
        return button

    def _open_section(self, button: QToolButton, shown: bool) -> None:
        button.setChecked(shown)
        button.setArrowType(Qt.ArrowType.DownArrow if shown else Qt.ArrowType.RightArrow)
        self.set_mode(self._mode)

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

    def _text_tool(self, text: str, tip: str, slot: Any) -> QToolButton:
        button = QToolButton(self)
        button.setText(text)
        button.setToolTip(tip)
        button.setAccessibleName(text.rstrip("…"))
        button.setAutoRaise(True)
        button.clicked.connect(slot)
        return button

    def _tool(self, name: str, tip: str) -> QToolButton:
        button = QToolButton(self)
        button.setIcon(icon(name))
        button.setIconSize(QSize(18, 18))
        button.setToolTip(tip)
        button.setAccessibleName(tip)
        button.setAutoRaise(True)
        return button

    # =================================================================== API
    def control(self, name: str) -> FieldControl:
        """The control of a request field the panel edits (KeyError for others)."""
        return self.controls[name]

    def widget(self, name: str) -> Any:
        return self.controls[name].widget

    def request(self) -> GenerationRequest:
        """A request from the panel (no init image, mask or model: the window adds those)."""
        values = {name: c.value() for name, c in self.controls.items()}
        return GenerationRequest(prompt=self.prompt_edit.toPlainText(),
                                 negative_prompt=self.negative_edit.toPlainText(), **values)

    def seed(self) -> int:
        return int(self.control("seed").value())

    def set_request(self, request: GenerationRequest) -> list[str]:
        """Show every value of ``request`` the panel edits (LoRAs given apart from the prompt
        become ``<lora:name:w>`` tags in it). Returns what could not be shown exactly, one
        note per value (empty when everything was applied)."""
        self.prompt_edit.setPlainText(request.prompt_with_lora_tags())
        self.negative_edit.setPlainText(request.negative_prompt)
        notes = []
        for name, control in self.controls.items():
            note = control.set_value(getattr(request, name))
            if note:
                notes.append(note)
        return notes

    def set_choices(self, name: str, entries: list[tuple[str, str]]) -> None:
        """(label, value) entries of a choice control whose choices are found at run time
        (the VAE files); the current value stays."""
        control = self.controls[name]
        assert isinstance(control, ChoiceControl)
        control.set_entries(entries)

    def values(self) -> dict[str, Any]:
        data = self.request().to_dict()
        return {k: data[k] for k in PERSISTED}

    def restore(self, values: Mapping[str, Any]) -> None:
        """Put back what ``values()`` saved; a bad saved value keeps that field's default."""
        known: dict[str, Any] = {"prompt": ""}
        for key, value in values.items():
            if key not in PERSISTED:
                continue
            try:
                candidate = GenerationRequest.from_dict({"prompt": "", key: value})
            except Exception:
                continue
            if request_spec(key).problem(getattr(candidate, key)) is None:
                known[key] = getattr(candidate, key)
        self.set_request(GenerationRequest(**known))

    def show_more(self, shown: bool) -> None:
        self._open_section(self.more_button, shown)

    def more_shown(self) -> bool:
        return self.more_button.isChecked()

    def show_hires(self, shown: bool) -> None:
        """Open or close the hires fix section."""
        self._open_section(self.hires_button, shown)

    def hires_shown(self) -> bool:
        return self.hires_button.isChecked()

    def show_control(self, shown: bool) -> None:
        """Open or close the Control section."""
        self._open_section(self.control_button, shown)

    def control_shown(self) -> bool:
        return self.control_button.isChecked()

    def _control_changed(self) -> None:
        """The closed section still says how many units are on."""
        n = self.control_section.active_count()
        self.control_button.setText(f"Control ({n} on)" if n else "Control")

    def _hires_changed(self) -> None:
        """The closed section still says whether the hires fix is on."""
        on = bool(self.control("hires").value())
        self.hires_button.setText("Hi&res fix (on)" if on else "Hi&res fix")

    def set_mode(self, mode: Mode) -> None:
        """Show each control in the modes where its value matters (strength for img2img and
        inpaint, the mask options for inpaint, the hires fix for text to image); "More
        options" and "Hires fix" rows only when expanded."""
        self._mode = mode
        opened = {ADVANCED: self.more_button.isChecked(), HIRES: self.hires_button.isChecked()}
        for spec, widgets in self._rows:
            shown = mode in spec.modes and opened.get(_section(spec), True)
            for w in widgets:
                w.setVisible(shown)
        self.hires_button.setVisible(mode is Mode.TXT2IMG)
        self.control_section.setVisible(self.control_button.isChecked())

    def set_size(self, width: int, height: int) -> None:
        self.control("width").set_value(width)
        self.control("height").set_value(height)

    def swap_size(self) -> None:
        w, h = self.control("width").value(), self.control("height").value()
        self.set_size(h, w)

    def set_last_seed(self, seed: int) -> None:
        self._last_seed = seed
        self.reuse_seed_button.setEnabled(True)
        self.reuse_seed_button.setToolTip(f"Reuse the last seed ({seed})")

    def reuse_last_seed(self) -> None:
        if self._last_seed is not None:
            self.control("seed").set_value(self._last_seed)

    def set_running(self, running: bool) -> None:
        self.cancel_button.setEnabled(running)
        self.generate_button.setText("Queue another" if running else "Generate")

    def shutdown(self) -> None:
        self._count_timer.stop()
        self._counter.stop()
        self.control_section.shutdown()
        for dialog in (self.addon_picker, self.tool_dialog):
            if dialog is not None:
                dialog.reject()

    # ========================================================= prompt tools
    def history(self) -> PromptHistory:
        """The prompt history (read from the data folder on first use)."""
        if self._history is None:
            self._history = load_history()
        return self._history

    def remember_prompts(self) -> None:
        """Put the prompt and negative prompt at the top of the history (the window calls
        this when it queues a job) and save it."""
        if self.history().add(self.prompt_edit.toPlainText(),
                              self.negative_edit.toPlainText()):
            self._save_history()

    def _save_history(self) -> None:
        try:
            save_history(self.history())
        except OSError as exc:  # the history is a convenience: never stop a generation
            log.warning("could not save the prompt history: %s", exc)

    def set_prompts(self, prompt: str, negative: str) -> None:
        """Show ``prompt`` and ``negative`` (Ctrl+Z in each box brings its old text back)."""
        replace_text(self.prompt_edit, prompt)
        replace_text(self.negative_edit, negative)

    def show_history(self) -> None:
        if self.tool_dialog is not None:
            return
        dialog = HistoryDialog(self.history(), self._save_history, self)

        def chosen() -> None:
            if dialog.chosen is not None:
                self.set_prompts(dialog.chosen.prompt, dialog.chosen.negative_prompt)

        dialog.accepted.connect(chosen)
        self._open_tool(dialog, self.prompt_edit)

    def show_styles(self) -> None:
        if self.tool_dialog is not None:
            return
        dialog = StylesDialog(lambda: (self.prompt_edit.toPlainText(),
                                       self.negative_edit.toPlainText()),
                              self.set_prompts, self)
        self._open_tool(dialog, self.prompt_edit)

    def _open_tool(self, dialog: HistoryDialog | StylesDialog, focus: QWidget) -> None:
        self.tool_dialog = dialog

        def closed() -> None:
            self.tool_dialog = None
            dialog.deleteLater()
            focus.setFocus()

        dialog.finished.connect(closed)
        dialog.open()

    def _engine_settings(self) -> EngineSettings:
        """The folders the window uses (its settings), else the saved ones."""
        settings = getattr(self.window(), "settings", None)
        engine = getattr(settings, "engine", None)
        return engine if isinstance(engine, EngineSettings) else load_settings().engine

    def show_addons(self) -> None:
        if self.addon_picker is not None:
            self.addon_picker.raise_()
            self.addon_picker.activateWindow()
            return
        target = "negative" if self._last_edit is self.negative_edit else "prompt"
        picker = AddonPicker(self._engine_settings(), self.insert_into, self.use_vae,
                             target, self)
        self.addon_picker = picker

        def closed() -> None:
            self.addon_picker = None
            picker.deleteLater()

        picker.finished.connect(closed)
        picker.show()

    def insert_into(self, target: str, text: str) -> None:
        """Put ``text`` at the cursor of the prompt (``"prompt"``) or negative prompt."""
        insert_at_cursor(self.negative_edit if target == "negative" else self.prompt_edit,
                         text)

    def use_vae(self, name: str, names: list[str]) -> None:
        """Choose the VAE ``name`` ("" = automatic); ``names`` are the VAE files found."""
        self.set_choices("vae", [("Automatic", ""), *((n, n) for n in names)])
        self.control("vae").set_value(name)

    # ============================================================== internals
    def _size_changed(self) -> None:
        self.sizeChanged.emit(self.control("width").value(), self.control("height").value())

    def _text_changed(self) -> None:
        self._count_timer.start()
        self.changed.emit()

    def _count_tokens(self) -> None:
        texts = (self.prompt_edit.toPlainText(), self.negative_edit.toPlainText())
        emphasis = str(self.control("emphasis").value())

        def work() -> tuple[tuple[str, bool], tuple[str, bool]]:
            return count_label(texts[0], emphasis), count_label(texts[1], emphasis)

        self._counter.submit(work, self._show_counts)

    def _show_counts(self, result: tuple[tuple[str, bool], tuple[str, bool]]) -> None:
        for label, (text, over) in zip((self.prompt_counter, self.negative_counter), result,
                                   strict=True):
            label.setText(text)
            label.setProperty("over", "true" if over else "false")
            label.style().unpolish(label)
            label.style().polish(label)


def _section(spec: FieldSpec) -> str:
    return spec.ui.section if spec.ui is not None else ADVANCED
