"""The prompt boxes' helpers: text edits that keep undo, the prompt history and the styles.

* :func:`replace_text`, :func:`insert_at_cursor` and :func:`edit_weight_in` change a
  ``QPlainTextEdit`` through its cursor (one undo step each; only the changed span is
  replaced), converting between Qt's UTF-16 positions and Python string indices.
* :class:`HistoryDialog`: the prompts generated with, newest first, searched as you type
  (every word, any case); Enter or a double-click puts a prompt and its negative prompt back.
* :class:`StylesDialog`: the styles collection (A1111's ``styles.csv`` in SD Studio's config
  folder): apply one or more to the prompts, save the prompts as a style, delete, import an
  A1111 ``styles.csv``, export the collection as one.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from PySide6.QtCore import QEvent, QObject, Qt
from PySide6.QtGui import QKeyEvent, QKeySequence, QShortcut, QTextCursor
from PySide6.QtWidgets import (
    QAbstractItemView,
    QDialog,
    QDialogButtonBox,
    QHBoxLayout,
    QInputDialog,
    QLabel,
    QLineEdit,
    QListWidget,
    QListWidgetItem,
    QMessageBox,
    QPlainTextEdit,
    QPushButton,
    QSplitter,
    QVBoxLayout,
    QWidget,
)

from sdstudio.core.prompt_history import HistoryEntry, PromptHistory
from sdstudio.core.styles import (
    Style,
    StylesError,
    apply_style,
    merged,
    read_styles,
    styles_path,
    write_styles,
)
from sdstudio.core.weights import edit_weight
from sdstudio.ui import file_dialogs

EntryRole = Qt.ItemDataRole.UserRole + 1
ERROR_COLOUR = "#d0342c"  # readable on the light and the dark theme


# ------------------------------------------------------------------------------ text edits
def _qt_pos(text: str, index: int) -> int:
    """A Python index into ``text`` as a Qt (UTF-16) position."""
    return len(text[:index].encode("utf-16-le")) // 2


def _py_index(text: str, pos: int) -> int:
    """A Qt (UTF-16) position in ``text`` as a Python index."""
    return len(text.encode("utf-16-le")[:pos * 2].decode("utf-16-le", errors="ignore"))


def replace_text(edit: QPlainTextEdit, new: str, select: tuple[int, int] | None = None) -> None:
    """Make ``edit`` hold ``new`` by replacing only the span that differs (one undo step);
    then select ``select`` (Python indices into ``new``) or put the cursor after the change."""
    old = edit.toPlainText()
    start = 0
    limit = min(len(old), len(new))
    while start < limit and old[start] == new[start]:
        start += 1
    end_old, end_new = len(old), len(new)
    while end_old > start and end_new > start and old[end_old - 1] == new[end_new - 1]:
        end_old -= 1
        end_new -= 1
    cursor = edit.textCursor()
    if new != old:
        cursor.setPosition(_qt_pos(old, start))
        cursor.setPosition(_qt_pos(old, end_old), QTextCursor.MoveMode.KeepAnchor)
        cursor.insertText(new[start:end_new])
    a, b = select if select is not None else (end_new, end_new)
    cursor.setPosition(_qt_pos(new, a))
    cursor.setPosition(_qt_pos(new, b), QTextCursor.MoveMode.KeepAnchor)
    edit.setTextCursor(cursor)


def insert_at_cursor(edit: QPlainTextEdit, snippet: str) -> None:
    """Put ``snippet`` at the cursor (over the selection), with a space on either side where
    it would otherwise touch a word."""
    text = edit.toPlainText()
    cursor = edit.textCursor()
    start = _py_index(text, cursor.selectionStart())
    end = _py_index(text, cursor.selectionEnd())
    before = " " if start > 0 and not text[start - 1].isspace() else ""
    after = " " if end < len(text) and not text[end].isspace() else ""
    new = f"{text[:start]}{before}{snippet}{after}{text[end:]}"
    stop = start + len(before) + len(snippet)
    replace_text(edit, new, (stop, stop))


def edit_weight_in(edit: QPlainTextEdit, up: bool) -> bool:
    """Ctrl+Up (``up``) / Ctrl+Down on ``edit`` as A1111 does it (:mod:`sdstudio.core.weights`);
    whether the text changed."""
    text = edit.toPlainText()
    cursor = edit.textCursor()
    result = edit_weight(text, _py_index(text, cursor.selectionStart()),
                         _py_index(text, cursor.selectionEnd()), up)
    if result is None:
        return False
    replace_text(edit, result.text, (result.start, result.end))
    return True


# -------------------------------------------------------------------------- shared bits
def _one_line(text: str, limit: int = 400) -> str:
    flat = " ⏎ ".join(line.strip() for line in text.strip().splitlines() if line.strip())
    return flat if len(flat) <= limit else flat[:limit - 1] + "…"


class _ListNavigation(QObject):
    """Up / Down / Page keys typed in a search field move through the list below it;
    Enter activates the current item."""

    def __init__(self, search: QLineEdit, listing: QListWidget,
                 activate: Callable[[], None]) -> None:
        super().__init__(search)
        self._list = listing
        self._activate = activate
        search.installEventFilter(self)

    def eventFilter(self, watched: QObject, event: QEvent) -> bool:
        if event.type() == QEvent.Type.KeyPress and isinstance(event, QKeyEvent):
            if event.key() in (Qt.Key.Key_Up, Qt.Key.Key_Down, Qt.Key.Key_PageUp,
                               Qt.Key.Key_PageDown):
                self._list.keyPressEvent(event)
                return True
            if event.key() in (Qt.Key.Key_Return, Qt.Key.Key_Enter):
                self._activate()
                return True
        return False


def search_field(parent: QWidget, placeholder: str) -> QLineEdit:
    search = QLineEdit(parent)
    search.setPlaceholderText(placeholder)
    search.setClearButtonEnabled(True)
    search.setAccessibleName("Search")
    return search


# ------------------------------------------------------------------------------ history
class HistoryDialog(QDialog):
    """Pick a prompt from the history. ``chosen`` is the entry picked (None until then)."""

    def __init__(self, history: PromptHistory, on_change: Callable[[], None],
                 parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setWindowTitle("Prompt history")
        self.resize(640, 460)
        self._history = history
        self._on_change = on_change
        self.chosen: HistoryEntry | None = None

        self.search = search_field(self, "Search the prompts you generated with…")
        self.list = QListWidget(self)
        self.list.setAccessibleName("Prompts")
        self.list.setAlternatingRowColors(True)
        self.list.setTextElideMode(Qt.TextElideMode.ElideRight)
        self.list.setUniformItemSizes(True)
        self.list.itemActivated.connect(lambda _item: self.use_current())
        self.count_label = QLabel(self)

        buttons = QDialogButtonBox(self)
        self.use_button = buttons.addButton("Use", QDialogButtonBox.ButtonRole.AcceptRole)
        self.use_button.setToolTip("Put this prompt and its negative prompt back (Enter)")
        self.remove_button = buttons.addButton("Remove", QDialogButtonBox.ButtonRole.ActionRole)
        self.remove_button.setToolTip("Take this prompt out of the history (Delete)")
        self.clear_button = buttons.addButton("Clear all…",
                                              QDialogButtonBox.ButtonRole.ResetRole)
        buttons.addButton(QDialogButtonBox.StandardButton.Close)
        self.use_button.clicked.connect(self.use_current)
        self.remove_button.clicked.connect(self.remove_current)
        self.clear_button.clicked.connect(self.clear_all)
        buttons.rejected.connect(self.reject)

        lay = QVBoxLayout(self)
        lay.addWidget(self.search)
        lay.addWidget(self.list, 1)
        lay.addWidget(self.count_label)
        lay.addWidget(buttons)
        _ListNavigation(self.search, self.list, self.use_current)
        delete = QShortcut(QKeySequence(QKeySequence.StandardKey.Delete), self.list)
        delete.setContext(Qt.ShortcutContext.WidgetShortcut)
        delete.activated.connect(self.remove_current)
        self.search.textChanged.connect(self.refresh)
        self.list.currentRowChanged.connect(self._update_buttons)
        self.refresh()
        self.search.setFocus()

    def refresh(self) -> None:
        found = self._history.search(self.search.text())
        self.list.clear()
        for entry in found:
            text = _one_line(entry.prompt, 300)
            if entry.negative_prompt.strip():
                text += "\n    Negative: " + _one_line(entry.negative_prompt, 300)
            item = QListWidgetItem(text)
            item.setData(EntryRole, entry)
            tip = entry.prompt + (f"\n\nNegative prompt: {entry.negative_prompt}"
                                  if entry.negative_prompt else "")
            item.setToolTip(tip[:2000])
            self.list.addItem(item)
        if found:
            self.list.setCurrentRow(0)
        total = len(self._history)
        self.count_label.setText(
            "No prompts yet: every prompt you generate with is kept here." if not total
            else f"{len(found)} of {total} prompts" if self.search.text().strip()
            else f"{total} prompt{'s' if total != 1 else ''}, newest first")
        self._update_buttons()

    def _update_buttons(self) -> None:
        has = self.list.currentItem() is not None
        self.use_button.setEnabled(has)
        self.remove_button.setEnabled(has)
        self.clear_button.setEnabled(len(self._history) > 0)

    def current_entry(self) -> HistoryEntry | None:
        item = self.list.currentItem()
        return item.data(EntryRole) if item is not None else None

    def use_current(self) -> None:
        entry = self.current_entry()
        if entry is not None:
            self.chosen = entry
            self.accept()

    def remove_current(self) -> None:
        entry = self.current_entry()
        if entry is None:
            return
        row = self.list.currentRow()
        self._history.remove(entry)
        self._on_change()
        self.refresh()
        self.list.setCurrentRow(min(row, self.list.count() - 1))

    def clear_all(self) -> None:
        if self.confirm(f"Forget all {len(self._history)} prompts in the history?"):
            self._history.clear()
            self._on_change()
            self.refresh()

    def confirm(self, question: str) -> bool:
        answer = QMessageBox.question(self, "Prompt history", question)
        return answer == QMessageBox.StandardButton.Yes



# ------------------------------------------------------------------------------- styles
class StylesDialog(QDialog):
    """The styles collection. ``apply_to(prompt, negative) -> (prompt, negative)`` gives the
    chosen styles applied; ``current_prompts()`` is read when saving the prompts as a style."""

    def __init__(self, current_prompts: Callable[[], tuple[str, str]],
                 apply: Callable[[str, str], None], parent: QWidget | None = None,
                 path: Path | None = None) -> None:
        super().__init__(parent)
        self.setWindowTitle("Styles")
        self.resize(760, 480)
        self.path = path or styles_path()
        self._current_prompts = current_prompts
        self._apply = apply
        self.styles: list[Style] = []
        self._writable = True

        self.search = search_field(self, "Search styles…")
        self.list = QListWidget(self)
        self.list.setAccessibleName("Styles")
        self.list.setSelectionMode(QAbstractItemView.SelectionMode.ExtendedSelection)
        self.list.itemActivated.connect(lambda _item: self.apply_selected())
        self.prompt_view = self._viewer("The style's prompt")
        self.negative_view = self._viewer("The style's negative prompt")
        self.status = QLabel(self)
        self.status.setWordWrap(True)

        left = QWidget(self)
        left_lay = QVBoxLayout(left)
        left_lay.setContentsMargins(0, 0, 0, 0)
        left_lay.addWidget(self.search)
        left_lay.addWidget(self.list, 1)
        right = QWidget(self)
        right_lay = QVBoxLayout(right)
        right_lay.setContentsMargins(0, 0, 0, 0)
        right_lay.addWidget(QLabel("Prompt (<b>{prompt}</b> is where yours goes; without it, "
                                   "the style is added after it)", right))
        right_lay.addWidget(self.prompt_view, 3)
        right_lay.addWidget(QLabel("Negative prompt", right))
        right_lay.addWidget(self.negative_view, 2)
        split = QSplitter(self)
        split.addWidget(left)
        split.addWidget(right)
        split.setSizes([260, 480])
        split.setChildrenCollapsible(False)

        self.apply_button = self._button("&Apply", "Add the selected styles to the prompt "
                                         "and the negative prompt (Enter)", self.apply_selected)
        self.apply_button.setDefault(True)
        self.save_button = self._button("&Save prompts as style…", "A new style from the "
                                        "prompt and negative prompt now in the panel",
                                        self.save_current)
        self.delete_button = self._button("&Delete", "Delete the selected styles",
                                          self.delete_selected)
        self.import_button = self._button("&Import styles.csv…", "Add the styles of an "
                                          "AUTOMATIC1111 styles.csv (same names are replaced)",
                                          self.import_file)
        self.export_button = self._button("E&xport…", "Save the collection as an "
                                          "AUTOMATIC1111 styles.csv", self.export_file)
        close = self._button("Close", "", self.reject)
        row = QHBoxLayout()
        for b in (self.apply_button, self.save_button, self.delete_button):
            row.addWidget(b)
        row.addStretch(1)
        for b in (self.import_button, self.export_button, close):
            row.addWidget(b)

        lay = QVBoxLayout(self)
        lay.addWidget(split, 1)
        lay.addWidget(self.status)
        lay.addLayout(row)
        _ListNavigation(self.search, self.list, self.apply_selected)
        self.search.textChanged.connect(self.refresh)
        self.list.itemSelectionChanged.connect(self._show_selected)
        self.load()
        self.search.setFocus()

    def _viewer(self, name: str) -> QPlainTextEdit:
        view = QPlainTextEdit(self)
        view.setReadOnly(True)
        view.setAccessibleName(name)
        return view

    def _button(self, text: str, tip: str, slot: Callable[[], None]) -> QPushButton:
        button = QPushButton(text, self)
        button.setAutoDefault(False)
        if tip:
            button.setToolTip(tip)
        button.clicked.connect(slot)
        return button

    # ---------------------------------------------------------------- the collection
    def load(self) -> None:
        try:
            self.styles = read_styles(self.path)
            self._writable = True
            self.say(f"{len(self.styles)} styles in {self.path}" if self.styles else
                     "No styles yet: save the prompts as one, or import an AUTOMATIC1111 "
                     "styles.csv.")
        except StylesError as exc:
            self.styles, self._writable = [], False
            self.say(f"{exc} — the file is left as it is; fix or move it to use styles.",
                     error=True)
        self.refresh()

    def _save(self, styles: list[Style]) -> bool:
        try:
            write_styles(styles, self.path)
        except StylesError as exc:
            self.say(str(exc), error=True)
            return False
        self.styles = styles
        return True

    def say(self, text: str, error: bool = False) -> None:
        self.status.setText(text)
        self.status.setStyleSheet(f"color: {ERROR_COLOUR};" if error else "")

    def refresh(self) -> None:
        words = self.search.text().casefold().split()
        selected = {s.name for s in self.selected()}
        self.list.clear()
        for style in self.styles:
            hay = f"{style.name}\n{style.prompt}\n{style.negative_prompt}".casefold()
            if all(w in hay for w in words):
                item = QListWidgetItem(_one_line(style.name, 120))
                item.setData(EntryRole, style)
                item.setToolTip(style.name[:500])
                self.list.addItem(item)
                item.setSelected(style.name in selected)
        if not self.list.selectedItems() and self.list.count():
            self.list.setCurrentRow(0)
        self._show_selected()

    def selected(self) -> list[Style]:
        """The selected styles, in the collection's order (the order A1111 applies them)."""
        return [self.list.item(i).data(EntryRole) for i in range(self.list.count())
                if self.list.item(i).isSelected()]

    def _show_selected(self) -> None:
        chosen = self.selected()
        self.prompt_view.setPlainText("\n\n".join(s.prompt for s in chosen))
        self.negative_view.setPlainText("\n\n".join(s.negative_prompt for s in chosen))
        self.apply_button.setEnabled(bool(chosen))
        self.delete_button.setEnabled(bool(chosen) and self._writable)
        self.save_button.setEnabled(self._writable)
        self.import_button.setEnabled(self._writable)
        self.export_button.setEnabled(bool(self.styles))

    # ------------------------------------------------------------------- actions
    def apply_selected(self) -> None:
        chosen = self.selected()
        if not chosen:
            return
        prompt, negative = self._current_prompts()
        for style in chosen:
            prompt, negative = apply_style(style, prompt, negative)
        self._apply(prompt, negative)
        self.accept()

    def save_current(self) -> None:
        prompt, negative = self._current_prompts()
        if not prompt.strip() and not negative.strip():
            self.say("Write a prompt first: a style is made from the prompt and negative "
                     "prompt in the panel.", error=True)
            return
        name = self.ask_name().strip()
        if not name:
            return
        if name.startswith("#"):
            self.say("A style's name cannot start with # (A1111 skips such rows).", error=True)
            return
        exists = any(s.name == name for s in self.styles)
        if exists and not self.confirm(f"Replace the style “{name}”?"):
            return
        styles, _ = merged(self.styles, [Style(name, prompt, negative)])
        if self._save(styles):
            self.search.clear()
            self.refresh()
            self._select(name)
            self.say(f"Saved the style “{name}”.")

    def _select(self, name: str) -> None:
        for i in range(self.list.count()):
            item = self.list.item(i)
            item.setSelected(item.data(EntryRole).name == name)
            if item.isSelected():
                self.list.setCurrentItem(item)

    def delete_selected(self) -> None:
        chosen = self.selected()
        if not chosen:
            return
        what = f"the style “{chosen[0].name}”" if len(chosen) == 1 else \
            f"{len(chosen)} styles"
        if not self.confirm(f"Delete {what}?"):
            return
        names = {s.name for s in chosen}
        if self._save([s for s in self.styles if s.name not in names]):
            self.refresh()
            self.say(f"Deleted {what}.")

    def import_file(self) -> None:
        path = self.choose_import()
        if not path:
            return
        try:
            found = read_styles(path)
        except StylesError as exc:
            self.say(f"Not imported: {exc}", error=True)
            return
        if not found:
            self.say(f"{Path(path).name} holds no styles.", error=True)
            return
        styles, replaced = merged(self.styles, found)
        if self._save(styles):
            self.refresh()
            note = f" ({replaced} with the same name replaced)" if replaced else ""
            self.say(f"Imported {len(found)} styles from {Path(path).name}{note}.")

    def export_file(self) -> None:
        path = self.choose_export()
        if not path:
            return
        try:
            write_styles(self.styles, path)
        except StylesError as exc:
            self.say(f"Not exported: {exc}", error=True)
            return
        self.say(f"Exported {len(self.styles)} styles to {path}.")

    # ----------------------------------------------- questions (tests replace these)
    def ask_name(self) -> str:
        name, ok = QInputDialog.getText(self, "Save as style", "Name of the new style:")
        return name if ok else ""

    def confirm(self, question: str) -> bool:
        return QMessageBox.question(self, "Styles", question) == QMessageBox.StandardButton.Yes

    def choose_import(self) -> str:
        return file_dialogs.open_file(self, "prompt_lists", "Import AUTOMATIC1111 styles",
                                      "Styles (*.csv);;All files (*)")

    def choose_export(self) -> str:
        return file_dialogs.save_file(self, "prompt_lists", "Export styles", "styles.csv",
                                      "Styles (*.csv)")
