"""Look and feel: Fusion with a light or dark palette that follows the system colour scheme,
and SVG icons from resources/icons drawn in the palette's text colour at any size (HiDPI)."""

from __future__ import annotations

from functools import cache
from pathlib import Path

from PySide6.QtCore import QByteArray, QRect, QRectF, QSize, Qt
from PySide6.QtGui import (
    QColor,
    QGuiApplication,
    QIcon,
    QIconEngine,
    QImage,
    QPainter,
    QPalette,
    QPixmap,
)
from PySide6.QtSvg import QSvgRenderer
from PySide6.QtWidgets import QApplication

from sdstudio.core.paths import resources_dir

ACCENT = QColor("#7c4dff")
ACCENT_DARK = QColor("#9e7bff")


def icons_dir() -> Path:
    return resources_dir() / "icons"


def is_dark() -> bool:
    app = QGuiApplication.instance()
    if app is None:
        return False
    pal = QGuiApplication.palette()
    return pal.color(QPalette.ColorRole.Window).lightness() < 128


def system_prefers_dark() -> bool:
    hints = QGuiApplication.styleHints()
    try:
        return hints.colorScheme() == Qt.ColorScheme.Dark
    except AttributeError:  # Qt < 6.5
        return False


def _palette(colours: dict[QPalette.ColorRole, str], disabled_text: str) -> QPalette:
    p = QPalette()
    for role, colour in colours.items():
        p.setColor(role, QColor(colour))
    for role in (QPalette.ColorRole.WindowText, QPalette.ColorRole.Text,
                 QPalette.ColorRole.ButtonText):
        p.setColor(QPalette.ColorGroup.Disabled, role, QColor(disabled_text))
    return p


def light_palette() -> QPalette:
    c = {
        QPalette.ColorRole.Window: "#f3f3f6",
        QPalette.ColorRole.WindowText: "#1d1d22",
        QPalette.ColorRole.Base: "#ffffff",
        QPalette.ColorRole.AlternateBase: "#f0eff5",
        QPalette.ColorRole.ToolTipBase: "#ffffff",
        QPalette.ColorRole.ToolTipText: "#1d1d22",
        QPalette.ColorRole.PlaceholderText: "#8a8a94",
        QPalette.ColorRole.Text: "#1d1d22",
        QPalette.ColorRole.Button: "#eceaf2",
        QPalette.ColorRole.ButtonText: "#1d1d22",
        QPalette.ColorRole.BrightText: "#ffffff",
        QPalette.ColorRole.Light: "#ffffff",
        QPalette.ColorRole.Midlight: "#e2e0ea",
        QPalette.ColorRole.Mid: "#c4c2cc",
        QPalette.ColorRole.Dark: "#a09eaa",
        QPalette.ColorRole.Shadow: "#6a6872",
        QPalette.ColorRole.Highlight: ACCENT.name(),
        QPalette.ColorRole.HighlightedText: "#ffffff",
        QPalette.ColorRole.Link: "#5b2ee0",
    }
    return _palette(c, disabled_text="#a3a3ab")


def dark_palette() -> QPalette:
    c = {
        QPalette.ColorRole.Window: "#232328",
        QPalette.ColorRole.WindowText: "#e8e8ed",
        QPalette.ColorRole.Base: "#1a1a1e",
        QPalette.ColorRole.AlternateBase: "#26262c",
        QPalette.ColorRole.ToolTipBase: "#2e2e35",
        QPalette.ColorRole.ToolTipText: "#e8e8ed",
        QPalette.ColorRole.PlaceholderText: "#7d7d87",
        QPalette.ColorRole.Text: "#e8e8ed",
        QPalette.ColorRole.Button: "#303037",
        QPalette.ColorRole.ButtonText: "#e8e8ed",
        QPalette.ColorRole.BrightText: "#ffffff",
        QPalette.ColorRole.Light: "#45454d",
        QPalette.ColorRole.Midlight: "#3a3a41",
        QPalette.ColorRole.Mid: "#2b2b31",
        QPalette.ColorRole.Dark: "#141417",
        QPalette.ColorRole.Shadow: "#000000",
        QPalette.ColorRole.Highlight: ACCENT_DARK.name(),
        QPalette.ColorRole.HighlightedText: "#ffffff",
        QPalette.ColorRole.Link: "#b39dff",
    }
    return _palette(c, disabled_text="#6c6c74")


STYLE_SHEET = """
QPushButton#generateButton {
    background: %(accent)s; color: white; border: none; border-radius: 6px;
    padding: 8px 18px; font-weight: 600; font-size: %(big)spt;
}
QPushButton#generateButton:hover { background: %(accent_hover)s; }
QPushButton#generateButton:pressed { background: %(accent_pressed)s; }
QPushButton#generateButton:focus { border: 2px solid %(focus)s; }
QFrame#messageBar[kind="error"] {
    background: %(error_bg)s; border: 1px solid %(error_border)s; border-radius: 6px;
}
QFrame#messageBar[kind="info"] {
    background: %(info_bg)s; border: 1px solid %(info_border)s; border-radius: 6px;
}
QLabel#sectionTitle { font-weight: 600; }
QLabel#tokenCounter { color: %(muted)s; }
QLabel#tokenCounter[over="true"] { color: %(warn)s; }
QLabel#demoBadge {
    background: %(warn_bg)s; color: %(warn)s; border-radius: 4px; padding: 2px 6px;
    font-weight: 600;
}
QTabWidget::pane { border-top: 1px solid %(mid)s; }
QStatusBar QLabel { padding: 0 6px; }
"""


def style_sheet(app: QApplication | None = None) -> str:
    dark = is_dark()
    accent = ACCENT_DARK if dark else ACCENT
    big = max(10, (app.font().pointSize() if app else 10) + 1)
    return STYLE_SHEET % {
        "accent": accent.name(),
        "accent_hover": accent.lighter(110).name(),
        "accent_pressed": accent.darker(115).name(),
        "focus": "#ffffff" if dark else "#2b1a66",
        "error_bg": "#4a2126" if dark else "#fde8ea",
        "error_border": "#7a3038" if dark else "#f2b8bf",
        "info_bg": "#23304a" if dark else "#e7efff",
        "info_border": "#34507d" if dark else "#b9cdf5",
        "muted": "#8d8d97" if dark else "#6e6e78",
        "warn": "#ffb74d" if dark else "#9a5b00",
        "warn_bg": "#4a3a1e" if dark else "#fff1d6",
        "mid": "#3a3a41" if dark else "#d4d2dc",
        "big": big,
    }


def apply_theme(app: QApplication, scheme: str = "system") -> None:
    """Fusion + a palette from the system colour scheme ("system", "light" or "dark")."""
    app.setStyle("Fusion")
    dark = system_prefers_dark() if scheme == "system" else scheme == "dark"
    app.setPalette(dark_palette() if dark else light_palette())
    app.setStyleSheet(style_sheet(app))
    icon.cache_clear()


class _SvgIconEngine(QIconEngine):
    def __init__(self, svg: bytes, colour: QColor, disabled: QColor) -> None:
        super().__init__()
        self._svg = svg
        self._colour = colour
        self._disabled = disabled

    def _renderer(self, mode: QIcon.Mode) -> QSvgRenderer:
        colour = self._disabled if mode == QIcon.Mode.Disabled else self._colour
        data = self._svg.replace(b"currentColor", colour.name().encode())
        return QSvgRenderer(QByteArray(data))

    def paint(self, painter: QPainter, rect: QRect, mode: QIcon.Mode,
              state: QIcon.State) -> None:
        self._renderer(mode).render(painter, QRectF(rect))

    def pixmap(self, size: QSize, mode: QIcon.Mode, state: QIcon.State) -> QPixmap:
        return self.scaledPixmap(size, mode, state, 1.0)

    def scaledPixmap(self, size: QSize, mode: QIcon.Mode, state: QIcon.State,
                     scale: float) -> QPixmap:
        w, h = max(1, round(size.width() * scale)), max(1, round(size.height() * scale))
        img = QImage(w, h, QImage.Format.Format_ARGB32_Premultiplied)
        img.fill(Qt.GlobalColor.transparent)
        p = QPainter(img)
        p.setRenderHint(QPainter.RenderHint.Antialiasing)
        self._renderer(mode).render(p, QRectF(0, 0, w, h))
        p.end()
        pm = QPixmap.fromImage(img)
        pm.setDevicePixelRatio(scale)
        return pm

    def actualSize(self, size: QSize, mode: QIcon.Mode, state: QIcon.State) -> QSize:
        return size

    def clone(self) -> QIconEngine:
        return _SvgIconEngine(self._svg, self._colour, self._disabled)


@cache
def icon(name: str, colour: str = "") -> QIcon:
    """An icon from resources/icons/<name>.svg in ``colour`` (default: the palette's text)."""
    path = icons_dir() / f"{name}.svg"
    try:
        svg = path.read_bytes()
    except OSError:
        return QIcon()
    pal = QGuiApplication.palette()
    fg = QColor(colour) if colour else pal.color(QPalette.ColorRole.ButtonText)
    disabled = pal.color(QPalette.ColorGroup.Disabled, QPalette.ColorRole.ButtonText)
    return QIcon(_SvgIconEngine(svg, fg, disabled))


def app_icon() -> QIcon:
    path = icons_dir() / "sdstudio.svg"
    ic = QIcon()
    if path.is_file():
        renderer = QSvgRenderer(str(path))
        for side in (16, 24, 32, 48, 64, 128, 256):
            img = QImage(side, side, QImage.Format.Format_ARGB32_Premultiplied)
            img.fill(Qt.GlobalColor.transparent)
            p = QPainter(img)
            renderer.render(p)
            p.end()
            ic.addPixmap(QPixmap.fromImage(img))
    return ic


__all__ = ["app_icon", "apply_theme", "icon", "is_dark"]
