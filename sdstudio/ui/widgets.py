"""Small widgets of the main window: the non-modal message bar, the details dialog and the
job queue view."""

from __future__ import annotations

from PySide6.QtCore import QModelIndex, QPersistentModelIndex, QRect, QSize, Qt, Signal
from PySide6.QtGui import QColor, QFont, QKeyEvent, QPainter, QPalette
from PySide6.QtWidgets import (
    QApplication,
    QDialog,
    QDialogButtonBox,
    QFrame,
    QHBoxLayout,
    QLabel,
    QListView,
    QMessageBox,
    QPlainTextEdit,
    QPushButton,
    QStyle,
    QStyledItemDelegate,
    QStyleOptionViewItem,
    QToolButton,
    QVBoxLayout,
    QWidget,
)

from sdstudio.ui.flow_layout import FlowLayout
from sdstudio.ui.theme import icon

STATE_COLOURS = {
    "queued": "#8d8d97",
    "running": "#7c4dff",
    "done": "#2e9d5b",
    "failed": "#d64550",
    "cancelled": "#b08a2e",
}


class DetailsDialog(QDialog):
    def __init__(self, title: str, message: str, details: str,
                 parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setWindowTitle(title)
        self.resize(720, 420)
        lay = QVBoxLayout(self)
        head = QLabel(message, self)
        head.setWordWrap(True)
        head.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        font = head.font()
        font.setBold(True)
        head.setFont(font)
        lay.addWidget(head)
        text = QPlainTextEdit(details or "(no details)", self)
        text.setReadOnly(True)
        text.setFont(QFont("monospace"))
        text.setLineWrapMode(QPlainTextEdit.LineWrapMode.NoWrap)
        lay.addWidget(text, 1)
        buttons = QDialogButtonBox(QDialogButtonBox.StandardButton.Close, self)
        copy = buttons.addButton("&Copy", QDialogButtonBox.ButtonRole.ActionRole)
        copy.clicked.connect(
            lambda: QApplication.clipboard().setText(f"{message}\n\n{details}"))
        buttons.rejected.connect(self.reject)
        lay.addWidget(buttons)
        self.text = text


def confirm(parent: QWidget, title: str, text: str, yes_text: str,
            destructive: bool = True) -> bool:
    """Ask before doing something (Cancel is the default button): True when the person
    pressed ``yes_text``."""
    box = QMessageBox(QMessageBox.Icon.Question, title, text,
                      QMessageBox.StandardButton.Cancel, parent)
    role = (QMessageBox.ButtonRole.DestructiveRole if destructive
            else QMessageBox.ButtonRole.AcceptRole)
    yes = box.addButton(yes_text, role)
    box.setDefaultButton(QMessageBox.StandardButton.Cancel)
    box.exec()
    return box.clickedButton() is yes


class MessageBar(QFrame):
    """A one-line message above the canvases: an error (with "Details…") or an information.
    Non-modal; the person closes it, or the next message replaces it."""

    closed = Signal()

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setObjectName("messageBar")
        self.setProperty("kind", "info")
        lay = QHBoxLayout(self)
        lay.setContentsMargins(10, 6, 6, 6)
        lay.setSpacing(8)
        self.icon_label = QLabel(self)
        self.icon_label.setFixedSize(20, 20)
        self.text_label = QLabel(self)
        self.text_label.setWordWrap(True)
        self.text_label.setTextFormat(Qt.TextFormat.PlainText)
        self.text_label.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.details_button = QPushButton("Details…", self)
        self.details_button.clicked.connect(self.show_details)
        self.close_button = QToolButton(self)
        self.close_button.setIcon(icon("close"))
        self.close_button.setAutoRaise(True)
        self.close_button.setToolTip("Dismiss")
        self.close_button.setAccessibleName("Dismiss message")
        self.close_button.clicked.connect(self.dismiss)
        lay.addWidget(self.icon_label)
        lay.addWidget(self.text_label, 1)
        lay.addWidget(self.details_button)
        lay.addWidget(self.close_button)
        self.message = ""
        self.details = ""
        self.kind = "info"
        self.count = 0
        self.hide()

    def show_error(self, message: str, details: str = "") -> None:
        self._show("error", message, details)

    def show_info(self, message: str, details: str = "") -> None:
        self._show("info", message, details)

    def hide_info(self) -> None:
        """Hide an information (it belonged to where it was shown); errors stay."""
        if self.kind == "info" and self.isVisible():
            self.dismiss()

    def hide_error(self, prefix: str) -> None:
        """Hide the error shown when it starts with ``prefix`` (its cause went away)."""
        if self.kind == "error" and self.isVisible() and self.message.startswith(prefix):
            self.dismiss()

    def _show(self, kind: str, message: str, details: str) -> None:
        self.count = self.count + 1 if (self.isVisible() and kind == self.kind == "error") else 1
        self.kind, self.message, self.details = kind, message, details
        self.setProperty("kind", kind)
        self.style().unpolish(self)
        self.style().polish(self)
        colour = "#d64550" if kind == "error" else self.palette().color(
            QPalette.ColorRole.Highlight).name()
        self.icon_label.setPixmap(icon("error" if kind == "error" else "info", colour)
                                  .pixmap(QSize(20, 20)))
        suffix = f"  (+{self.count - 1} earlier)" if self.count > 1 else ""
        self.text_label.setText(message + suffix)
        self.text_label.setAccessibleName(message)
        self.details_button.setVisible(bool(details))
        self.show()

    def show_details(self) -> None:
        title = "Error details" if self.kind == "error" else "Details"
        DetailsDialog(title, self.message, self.details, self.window()).exec()

    def dismiss(self) -> None:
        self.hide()
        self.count = 0
        self.closed.emit()


class JobDelegate(QStyledItemDelegate):
    """Two lines per job (title, then state and progress) with a coloured state dot."""

    def sizeHint(self, option: QStyleOptionViewItem,
                 index: QModelIndex | QPersistentModelIndex) -> QSize:
        fm = option.fontMetrics
        return QSize(200, fm.height() * 2 + 16)

    def paint(self, painter: QPainter, option: QStyleOptionViewItem,
              index: QModelIndex | QPersistentModelIndex) -> None:
        from sdstudio.worker.queue import ProgressRole, StateRole

        painter.save()
        style = option.widget.style() if option.widget else QApplication.style()
        opt = QStyleOptionViewItem(option)
        self.initStyleOption(opt, index)
        opt.text = ""
        style.drawControl(QStyle.ControlElement.CE_ItemViewItem, opt, painter, option.widget)
        text = str(index.data(Qt.ItemDataRole.DisplayRole) or "")
        title, _, summary = text.partition("\n")
        state = str(index.data(StateRole) or "queued")
        r: QRect = option.rect.adjusted(8, 6, -8, -6)
        painter.setRenderHint(QPainter.RenderHint.Antialiasing)
        painter.setPen(Qt.PenStyle.NoPen)
        painter.setBrush(QColor(STATE_COLOURS.get(state, "#8d8d97")))
        dot = 8
        painter.drawEllipse(r.left(), r.top() + (option.fontMetrics.height() - dot) // 2,
                            dot, dot)
        selected = bool(option.state & QStyle.StateFlag.State_Selected)
        pal = option.palette
        fg = pal.color(QPalette.ColorRole.HighlightedText if selected else QPalette.ColorRole.Text)
        painter.setPen(fg)
        fm = option.fontMetrics
        x = r.left() + dot + 8
        width = r.right() - x
        painter.drawText(QRect(x, r.top(), width, fm.height()),
                         int(Qt.AlignmentFlag.AlignLeft | Qt.AlignmentFlag.AlignVCenter),
                         fm.elidedText(title, Qt.TextElideMode.ElideRight, width))
        muted = QColor(fg)
        muted.setAlphaF(0.65)
        painter.setPen(muted)
        painter.drawText(QRect(x, r.top() + fm.height() + 2, width, fm.height()),
                         int(Qt.AlignmentFlag.AlignLeft | Qt.AlignmentFlag.AlignVCenter),
                         fm.elidedText(summary, Qt.TextElideMode.ElideRight, width))
        fraction = index.data(ProgressRole)
        if isinstance(fraction, float):  # a thin progress line under a running job
            y = r.top() + 2 * fm.height() + 4
            track = QColor(fg)
            track.setAlphaF(0.15)
            painter.setPen(Qt.PenStyle.NoPen)
            painter.setBrush(track)
            painter.drawRoundedRect(QRect(x, y, width, 3), 1.5, 1.5)
            painter.setBrush(QColor(STATE_COLOURS.get("running", "#3d7bd9")))
            painter.drawRoundedRect(QRect(x, y, max(3, int(width * fraction)), 3), 1.5, 1.5)
        painter.restore()


class QueueView(QWidget):
    """The job list with Cancel / Remove / Clear finished."""

    def __init__(self, queue: object, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        from sdstudio.worker.queue import JobIdRole, JobQueue

        assert isinstance(queue, JobQueue)
        self.queue = queue
        self._id_role = JobIdRole
        lay = QVBoxLayout(self)
        lay.setContentsMargins(6, 4, 6, 6)
        lay.setSpacing(4)
        self.list = QListView(self)
        self.list.setModel(queue)
        self.list.setItemDelegate(JobDelegate(self.list))
        self.list.setSelectionMode(QListView.SelectionMode.ExtendedSelection)
        self.list.setAccessibleName("Job queue")
        self.list.setUniformItemSizes(True)
        self.list.setAlternatingRowColors(False)
        self.placeholder = QLabel("No jobs yet. Press Generate (Ctrl+Enter).", self)
        self.placeholder.setAlignment(Qt.AlignmentFlag.AlignCenter)
        self.placeholder.setWordWrap(True)
        pal = self.placeholder.palette()
        pal.setColor(QPalette.ColorRole.WindowText,
                     pal.color(QPalette.ColorGroup.Disabled, QPalette.ColorRole.WindowText))
        self.placeholder.setPalette(pal)
        lay.addWidget(self.list, 1)
        lay.addWidget(self.placeholder, 1)  # the list's room while there is no job
        row = FlowLayout(spacing=4, line_spacing=4)  # wraps in a narrow dock
        self.cancel_button = QPushButton(icon("stop"), "Cancel", self)
        self.cancel_button.setToolTip("Cancel the running job (Esc)")
        self.remove_button = QPushButton(icon("delete"), "Remove", self)
        self.remove_button.setToolTip("Remove the selected jobs (Delete); a running job is "
                                      "cancelled")
        self.clear_button = QPushButton("Clear finished", self)
        self.clear_button.setToolTip("Take the finished, failed and cancelled jobs off the list")
        for b in (self.cancel_button, self.remove_button, self.clear_button):
            row.addWidget(b)
        lay.addLayout(row)
        self.cancel_button.clicked.connect(queue.cancel_running)
        self.remove_button.clicked.connect(self.remove_selected)
        self.clear_button.clicked.connect(queue.clear_finished)
        for sig in (queue.rowsInserted, queue.rowsRemoved, queue.dataChanged,
                    queue.modelReset):
            sig.connect(self._update)
        self.list.selectionModel().selectionChanged.connect(self._update)
        self._update()

    def remove_selected(self) -> None:
        ids = [int(i.data(self._id_role)) for i in self.list.selectionModel().selectedRows()]
        for job_id in ids:
            self.queue.remove(job_id)

    def keyPressEvent(self, event: QKeyEvent) -> None:
        if event.key() == Qt.Key.Key_Delete:
            self.remove_selected()
            return
        super().keyPressEvent(event)

    def _update(self, *args: object) -> None:
        empty = self.queue.rowCount() == 0
        self.placeholder.setVisible(empty)
        self.list.setVisible(not empty)
        self.cancel_button.setEnabled(self.queue.running_job is not None)
        self.remove_button.setEnabled(self.list.selectionModel().hasSelection())
        self.clear_button.setEnabled(any(j.state.finished for j in self.queue.jobs()))
