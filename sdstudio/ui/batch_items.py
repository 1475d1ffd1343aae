"""The batch panel's item table: one row per prompt of the list, with its line number, prompt,
images done and state (pending, running, done, failed with the reason), kept up to date from
the batch runner's events.

Widgets only, like the panel (sdstudio/ui/batch_panel.py), which owns one and feeds it.
"""

from __future__ import annotations

from collections.abc import Container, Iterable
from dataclasses import dataclass

from PySide6.QtCore import Qt
from PySide6.QtGui import QColor, QIcon, QPainter, QPixmap
from PySide6.QtWidgets import (
    QAbstractItemView,
    QHeaderView,
    QTableWidget,
    QTableWidgetItem,
    QWidget,
)

from sdstudio.batch.plan import WorkUnit
from sdstudio.core.prompts import PromptList

PENDING, RUNNING, DONE, FAILED = "pending", "running", "done", "failed"
COL_LINE, COL_PROMPT, COL_IMAGES, COL_STATE = range(4)


@dataclass
class ItemRow:
    line_no: int
    images: int
    done: int = 0
    failed: int = 0
    running: bool = False
    running_unit: int = -1  # the unit index that set ``running``
    reason: str = ""

    @property
    def state(self) -> str:
        if self.running:
            return RUNNING
        if self.failed and self.done + self.failed >= self.images:
            return FAILED
        if self.done >= self.images:
            return DONE
        return PENDING


class BatchItemTable(QTableWidget):
    """The list's items and their progress; read-only, whole rows selected."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(0, 4, parent)
        self._rows: dict[int, ItemRow] = {}  # item index -> row
        self._row_index: dict[int, int] = {}  # item index -> table row
        self.setHorizontalHeaderLabels(["Line", "Prompt", "Images", "State"])
        self.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        self.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        self.verticalHeader().setVisible(False)
        self.setWordWrap(False)
        self.setTextElideMode(Qt.TextElideMode.ElideRight)
        self.setAlternatingRowColors(True)
        self.setShowGrid(False)
        header = self.horizontalHeader()
        header.setDefaultAlignment(Qt.AlignmentFlag.AlignLeft | Qt.AlignmentFlag.AlignVCenter)
        for col, mode in ((COL_LINE, QHeaderView.ResizeMode.ResizeToContents),
                          (COL_PROMPT, QHeaderView.ResizeMode.Stretch),
                          (COL_IMAGES, QHeaderView.ResizeMode.ResizeToContents),
                          (COL_STATE, QHeaderView.ResizeMode.Stretch)):
            header.setSectionResizeMode(col, mode)

    def show_list(self, prompts: PromptList | None, per_prompt: int) -> None:
        """One pending row per item of ``prompts`` (none for None), ``per_prompt`` images for
        every image the item's request asks for."""
        self.setRowCount(0)
        self._rows.clear()
        self._row_index.clear()
        if prompts is None:
            return
        self.setRowCount(len(prompts.items))
        for i, item in enumerate(prompts.items):
            self._rows[i] = ItemRow(item.line_no, per_prompt * item.request.image_count)
            self._row_index[i] = i
            self.setItem(i, COL_LINE, QTableWidgetItem(str(item.line_no)))
            prompt = QTableWidgetItem(item.request.prompt.replace("\n", " "))
            prompt.setToolTip(item.request.prompt)
            self.setItem(i, COL_PROMPT, prompt)
            self.setItem(i, COL_IMAGES, QTableWidgetItem(""))
            self.setItem(i, COL_STATE, QTableWidgetItem(""))
            self._refresh_row(i)

    def planned(self, units: Iterable[WorkUnit], done_slots: Container[tuple[str, int]]
                ) -> None:
        """The batch was planned: every row restarts, counting the units already done."""
        for row in self._rows.values():
            row.done = row.failed = 0
            row.running = False
            row.reason = ""
        for unit in units:
            if unit.slot in done_slots and unit.item in self._rows:
                self._rows[unit.item].done += 1
        for item in self._rows:
            self._refresh_row(item)

    def unit_started(self, unit: WorkUnit) -> None:
        row = self._rows.get(unit.item)
        if row is not None:
            row.running, row.running_unit = True, unit.index
            self._refresh_row(unit.item)

    def unit_finished(self, unit: WorkUnit, ok: bool, reason: str | None = None) -> None:
        item = unit.item
        row = self._rows.get(item)
        if row is None:
            return
        if reason is not None:
            row.reason = reason
        # the runner saves a unit while it makes the next one, so a line's next image
        # may already run when this one's report arrives: that one keeps the row running
        if row.running_unit in (-1, unit.index):
            row.running = False
        if ok:
            row.done += 1
        else:
            row.failed += 1
        self._refresh_row(item)

    def item_states(self) -> list[tuple[int, str, str]]:
        """(line number, state, reason) per item, in list order."""
        return [(r.line_no, r.state, r.reason) for _, r in sorted(self._rows.items())]

    def _refresh_row(self, item: int) -> None:
        row = self._rows.get(item)
        r = self._row_index.get(item)
        if row is None or r is None:
            return
        images = self.item(r, COL_IMAGES)
        state = self.item(r, COL_STATE)
        if images is None or state is None:
            return
        images.setText(f"{row.done}/{row.images}")
        state.setIcon(_state_icon(row.state))
        text = row.state
        if row.state == FAILED or (row.failed and row.reason):
            text = f"{FAILED}: {row.reason}" if row.state == FAILED else \
                f"{row.state} ({row.failed} failed: {row.reason})"
        state.setText(text)
        state.setToolTip(row.reason)


_ICONS: dict[str, QIcon] = {}


def _state_icon(state: str) -> QIcon:
    """A coloured dot per item state (the queue's colours)."""
    icon = _ICONS.get(state)
    if icon is None:
        from sdstudio.ui.widgets import STATE_COLOURS

        colour = STATE_COLOURS.get({PENDING: "queued"}.get(state, state), "#8d8d97")
        pixmap = QPixmap(24, 24)
        pixmap.fill(Qt.GlobalColor.transparent)
        painter = QPainter(pixmap)
        painter.setRenderHint(QPainter.RenderHint.Antialiasing)
        painter.setPen(Qt.PenStyle.NoPen)
        painter.setBrush(QColor(colour))
        painter.drawEllipse(6, 6, 12, 12)
        painter.end()
        icon = _ICONS[state] = QIcon(pixmap)
    return icon
