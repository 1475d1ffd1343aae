"""The prompt boxes' tools in the panel: Ctrl+Up/Down weights, the prompt history (Ctrl+H),
A1111 styles, and the LoRA / embedding / VAE picker inserting at the cursor."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from PySide6.QtCore import Qt
from PySide6.QtGui import QTextCursor

from sdstudio.core.prompt_history import history_path, load_history
from sdstudio.core.settings import EngineSettings, Settings, save_settings
from sdstudio.core.styles import Style, format_styles, read_styles, styles_path
from sdstudio.testing.fake_engine import FakeScript

CTRL = Qt.KeyboardModifier.ControlModifier


@pytest.fixture
def data_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    folder = tmp_path / "data"
    monkeypatch.setenv("SDSTUDIO_DATA_DIR", str(folder))
    return folder


@pytest.fixture
def panel(qtbot: Any, isolated_config: Path, data_dir: Path) -> Iterator[Any]:
    from sdstudio.ui.prompt_panel import PromptPanel

    p = PromptPanel()
    qtbot.addWidget(p)
    p.resize(420, 800)
    p.show()
    qtbot.waitExposed(p)
    yield p
    p.shutdown()


def put_cursor(edit: Any, pos: int, end: int | None = None) -> None:
    cursor = edit.textCursor()
    cursor.setPosition(pos)
    if end is not None:
        cursor.setPosition(end, QTextCursor.MoveMode.KeepAnchor)
    edit.setTextCursor(cursor)
    edit.setFocus()


def a1111_styles_csv(styles: list[Style]) -> bytes:
    """The bytes A1111's save_styles writes (tests/core/test_styles.py checks that
    format_styles gives exactly those)."""
    return format_styles(styles).encode("utf-8-sig")


def safetensors(path: Path, metadata: dict[str, str]) -> Path:
    header = json.dumps({"__metadata__": metadata,
                         "w": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]}}).encode()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(len(header).to_bytes(8, "little") + header + b"\0" * 4)
    return path


# ------------------------------------------------------------------------------ weights
def test_ctrl_up_down_edit_the_weight_in_the_focused_box(qtbot: Any, panel: Any) -> None:
    edit = panel.prompt_edit
    edit.setPlainText("a red cat")
    put_cursor(edit, 4)  # in "red"
    qtbot.keyClick(edit, Qt.Key.Key_Up, CTRL)
    assert edit.toPlainText() == "a (red:1.1) cat"
    assert edit.textCursor().selectedText() == "red"  # still selected: press again
    qtbot.keyClick(edit, Qt.Key.Key_Up, CTRL)
    assert edit.toPlainText() == "a (red:1.2) cat"
    qtbot.keyClick(edit, Qt.Key.Key_Down, CTRL)
    qtbot.keyClick(edit, Qt.Key.Key_Down, CTRL)
    assert edit.toPlainText() == "a red cat"  # back to 1: the parentheses go
    qtbot.keyClick(edit, Qt.Key.Key_Down, CTRL)
    assert edit.toPlainText() == "a (red:0.9) cat"
    edit.undo()
    assert edit.toPlainText() == "a red cat"  # each press is one undo step

    negative = panel.negative_edit
    negative.setPlainText("blurry, <lora:bad:1>")
    put_cursor(negative, 12)  # in the LoRA tag
    qtbot.keyClick(negative, Qt.Key.Key_Down, CTRL)
    assert negative.toPlainText() == "blurry, <lora:bad:0.95>"
    assert edit.toPlainText() == "a red cat"  # the other box is left alone


def test_positions_are_right_after_characters_qt_counts_twice(qtbot: Any,
                                                              panel: Any) -> None:
    edit = panel.prompt_edit
    edit.setPlainText("🌸 cherry 🌸 (blossom:1.3)")
    text = edit.toPlainText()
    put_cursor(edit, 5)  # Qt positions: the flower is two UTF-16 units; inside "cherry"
    qtbot.keyClick(edit, Qt.Key.Key_Up, CTRL)
    assert edit.toPlainText() == "🌸 (cherry:1.1) 🌸 (blossom:1.3)"
    assert edit.textCursor().selectedText() == "cherry"
    at = len(text.encode("utf-16-le")) // 2 - 6  # inside "blossom"... of the old text
    put_cursor(edit, at + len("(:1.1)"))
    qtbot.keyClick(edit, Qt.Key.Key_Up, CTRL)
    assert edit.toPlainText() == "🌸 (cherry:1.1) 🌸 (blossom:1.4)"


def test_the_token_counter_follows_weight_edits(qtbot: Any, panel: Any) -> None:
    edit = panel.prompt_edit
    edit.setPlainText("cat")
    qtbot.waitUntil(lambda: panel.prompt_counter.text() == "1/75", timeout=3000)
    put_cursor(edit, 1)
    qtbot.keyClick(edit, Qt.Key.Key_Up, CTRL)
    assert edit.toPlainText() == "(cat:1.1)"
    qtbot.wait(300)  # emphasis syntax is not counted: still one token
    qtbot.waitUntil(lambda: panel.prompt_counter.text() == "1/75", timeout=3000)


# ------------------------------------------------------------------------------ history
def test_generating_keeps_the_prompts_and_ctrl_h_brings_them_back(
        qtbot: Any, make_window: Any, data_dir: Path) -> None:
    window = make_window(fake=FakeScript())
    panel = window.prompt_panel
    for prompt, negative in (("a lighthouse at dusk", "blurry"), ("a red fox", ""),
                             ("a lighthouse at dusk", "blurry")):
        panel.set_prompts(prompt, negative)
        assert window.generate() is not None
    history = load_history(history_path())  # persisted in the data folder, newest first
    assert [(e.prompt, e.negative_prompt) for e in history.entries] == [
        ("a lighthouse at dusk", "blurry"), ("a red fox", "")]
    qtbot.waitUntil(lambda: all(j.state.finished for j in window.queue.jobs()), timeout=20_000)

    panel.set_prompts("something else", "")
    panel.prompt_edit.setFocus()
    qtbot.keyClick(panel.prompt_edit, Qt.Key.Key_H, CTRL)
    dialog = panel.tool_dialog
    assert dialog is not None and dialog.isVisible()
    assert dialog.list.count() == 2
    qtbot.keyClicks(dialog.search, "FOX")
    assert dialog.list.count() == 1 and "a red fox" in dialog.list.item(0).text()
    dialog.search.clear()
    qtbot.keyClick(dialog.search, Qt.Key.Key_Down)  # the list follows the arrows
    assert dialog.list.currentRow() == 1
    qtbot.keyClick(dialog.search, Qt.Key.Key_Up)
    qtbot.keyClick(dialog.search, Qt.Key.Key_Return)
    assert panel.tool_dialog is None
    assert panel.prompt_edit.toPlainText() == "a lighthouse at dusk"
    assert panel.negative_edit.toPlainText() == "blurry"
    panel.prompt_edit.undo()
    assert panel.prompt_edit.toPlainText() == "something else"


def test_history_remove_and_clear(qtbot: Any, panel: Any, data_dir: Path) -> None:
    for prompt in ("one", "two", "three"):
        panel.set_prompts(prompt, "")
        panel.remember_prompts()
    panel.show_history()
    dialog = panel.tool_dialog
    assert [dialog.list.item(i).text() for i in range(3)] == ["three", "two", "one"]
    dialog.list.setCurrentRow(1)
    dialog.activateWindow()
    dialog.list.setFocus()
    qtbot.waitUntil(dialog.list.hasFocus, timeout=3000)
    qtbot.keyClick(dialog.list, Qt.Key.Key_Delete)
    assert [e.prompt for e in load_history().entries] == ["three", "one"]
    dialog.confirm = lambda question: True
    dialog.clear_button.click()
    assert dialog.list.count() == 0 and len(load_history()) == 0
    assert "No prompts yet" in dialog.count_label.text()
    dialog.reject()
    assert panel.tool_dialog is None


# ------------------------------------------------------------------------------- styles
def test_styles_import_apply_save_delete(qtbot: Any, panel: Any, tmp_path: Path) -> None:
    theirs = tmp_path / "stable-diffusion-webui" / "styles.csv"
    theirs.parent.mkdir()
    theirs.write_bytes(a1111_styles_csv([
        Style("Cinematic", "cinematic still of {prompt}, film grain", "cartoon, drawing"),
        Style("Quality", "masterpiece, best quality", "lowres"),
    ]))
    panel.set_prompts("a lighthouse", "blurry")
    panel.styles_button.click()
    dialog = panel.tool_dialog
    assert dialog.list.count() == 0 and "No styles yet" in dialog.status.text()
    dialog.choose_import = lambda: str(theirs)
    dialog.import_button.click()
    assert "Imported 2 styles from styles.csv" in dialog.status.text()
    assert read_styles(styles_path()) == read_styles(theirs)  # our copy, A1111's format
    assert styles_path().read_bytes() == theirs.read_bytes()

    qtbot.keyClicks(dialog.search, "cinema")
    assert dialog.list.count() == 1
    assert "{prompt}" in dialog.prompt_view.toPlainText()
    qtbot.keyClick(dialog.search, Qt.Key.Key_Return)
    assert panel.tool_dialog is None
    assert panel.prompt_edit.toPlainText() == "cinematic still of a lighthouse, film grain"
    assert panel.negative_edit.toPlainText() == "blurry, cartoon, drawing"

    panel.show_styles()  # two at once: applied in the collection's order, as A1111 does
    dialog = panel.tool_dialog
    panel.set_prompts("a cat", "")
    for i in range(dialog.list.count()):
        dialog.list.item(i).setSelected(True)
    dialog.apply_button.click()
    assert panel.prompt_edit.toPlainText() == (
        "cinematic still of a cat, film grain, masterpiece, best quality")
    assert panel.negative_edit.toPlainText() == "cartoon, drawing, lowres"

    panel.set_prompts("oil painting of {prompt}", "photo")
    panel.show_styles()
    dialog = panel.tool_dialog
    dialog.ask_name = lambda: "Oil"
    dialog.save_button.click()
    assert read_styles(styles_path())[-1] == Style("Oil", "oil painting of {prompt}", "photo")
    assert [i.text() for i in dialog.list.selectedItems()] == ["Oil"]
    dialog.confirm = lambda question: "Delete the style “Oil”" in question
    dialog.delete_button.click()
    assert [s.name for s in read_styles(styles_path())] == ["Cinematic", "Quality"]
    dialog.reject()


def test_a_bad_styles_file_is_reported_and_left_alone(qtbot: Any, panel: Any,
                                                      tmp_path: Path) -> None:
    styles_path().parent.mkdir(parents=True, exist_ok=True)
    styles_path().write_bytes(b"title,body\nx,y\n")
    panel.show_styles()
    dialog = panel.tool_dialog
    assert "no “name” column" in dialog.status.text()
    assert not dialog.save_button.isEnabled() and not dialog.import_button.isEnabled()
    dialog.reject()
    assert styles_path().read_bytes() == b"title,body\nx,y\n"
    styles_path().unlink()
    panel.show_styles()
    dialog = panel.tool_dialog
    bad = tmp_path / "bad.csv"
    bad.write_bytes("name,prompt\nCafé,x\n".encode("latin-1"))
    dialog.choose_import = lambda: str(bad)
    dialog.import_button.click()
    assert dialog.status.text().startswith("Not imported: bad.csv is not UTF-8")
    assert not styles_path().exists()
    dialog.reject()


# ------------------------------------------------------------------------------- picker
@pytest.fixture
def addon_folders(tmp_path: Path, isolated_config: Path) -> dict[str, Path]:
    from PIL import Image

    loras, emb, vae = tmp_path / "loras", tmp_path / "embeddings", tmp_path / "vae"
    safetensors(loras / "detail.safetensors", {
        "modelspec.trigger_phrase": "zxc style",
        "ss_tag_frequency": json.dumps({"1_set": {"zxc": 9, "red coat": 4}})})
    Image.new("RGB", (300, 200), (200, 30, 30)).save(loras / "detail.preview.png")
    safetensors(loras / "styles" / "film.safetensors", {})
    (loras / "styles" / "film.json").write_text(json.dumps(
        {"activation text": "film look", "preferred weight": 0.6}))
    (loras / "broken.safetensors").write_bytes((2**40).to_bytes(8, "little") + b"{}")
    safetensors(emb / "EasyNegative.safetensors", {})
    safetensors(vae / "sdxl_vae.safetensors", {})
    save_settings(Settings(engine=EngineSettings(
        lora_dirs=(str(loras),), embedding_dirs=(str(emb),), vae_dirs=(str(vae),))))
    return {"lora": loras, "embedding": emb, "vae": vae}


def _open_picker(qtbot: Any, panel: Any) -> Any:
    panel.addons_button.click()
    picker = panel.addon_picker
    assert picker is not None and picker.isVisible()
    qtbot.waitUntil(lambda: picker.list.count() > 0, timeout=5000)
    return picker


def _select(picker: Any, name: str) -> None:
    for i in range(picker.list.count()):
        if picker.list.item(i).text() == name:
            picker.list.setCurrentRow(i)
            return
    raise AssertionError(f"{name} not listed")


def test_picker_lists_previews_and_trigger_words_and_inserts_at_the_cursor(
        qtbot: Any, panel: Any, addon_folders: dict[str, Path]) -> None:
    panel.set_prompts("a cat, in the rain", "")
    put_cursor(panel.prompt_edit, len("a cat,"))
    picker = _open_picker(qtbot, panel)
    assert [picker.list.item(i).text() for i in range(picker.list.count())] == [
        "broken", "detail", "film"]
    detail = picker.list.item(1)
    qtbot.waitUntil(lambda: not detail.icon().isNull(), timeout=5000)  # its preview

    _select(picker, "detail")
    qtbot.waitUntil(lambda: "zxc style" in picker.words.text(), timeout=5000)
    assert "red coat" in picker.words.text() and "Training tags" in picker.words.text()
    picker.insert_button.click()
    assert panel.prompt_edit.toPlainText() == "a cat, <lora:detail:1> in the rain"
    picker._link("#0")  # the trigger phrase's link
    assert panel.prompt_edit.toPlainText() == "a cat, <lora:detail:1> zxc style in the rain"

    _select(picker, "film")  # A1111's notes: its weight, and its activation text with it
    qtbot.waitUntil(lambda: "film look" in picker.words.text(), timeout=5000)
    panel.set_prompts("", "")
    picker.list.itemActivated.emit(picker.list.currentItem())  # a double-click / Enter
    assert panel.prompt_edit.toPlainText() == "<lora:film:0.6> film look"

    _select(picker, "broken")  # hostile header: one clear line, no trigger words
    qtbot.waitUntil(lambda: "too large" in picker.note.text(), timeout=5000)
    assert "\n" not in picker.note.text()

    qtbot.keyClicks(picker.search, "fil")
    shown = [picker.list.item(i).text() for i in range(picker.list.count())
             if not picker.list.item(i).isHidden()]
    assert shown == ["film"]
    picker.reject()
    assert panel.addon_picker is None


def test_embeddings_go_to_the_box_used_last_and_the_vae_is_chosen(
        qtbot: Any, panel: Any, addon_folders: dict[str, Path]) -> None:
    panel.set_prompts("a cat", "lowres")
    put_cursor(panel.negative_edit, 0)
    picker = _open_picker(qtbot, panel)
    assert picker.target.currentData() == "negative"
    picker.tabs.setCurrentIndex(1)
    assert [picker.list.item(i).text() for i in range(picker.list.count())] == ["EasyNegative"]
    picker.insert_button.click()
    assert panel.negative_edit.toPlainText() == "EasyNegative lowres"
    assert panel.prompt_edit.toPlainText() == "a cat"

    picker.tabs.setCurrentIndex(2)
    assert picker.insert_button.text() == "&Use this VAE" and not picker.target.isVisible()
    _select(picker, "sdxl_vae")
    picker.insert_button.click()
    assert panel.request().vae == "sdxl_vae"
    _select(picker, "Automatic (the model's own VAE)")
    picker.insert_button.click()
    assert panel.request().vae == ""
    picker.reject()


def test_picker_without_folders_says_where_to_set_them(qtbot: Any, panel: Any) -> None:
    panel.addons_button.click()
    picker = panel.addon_picker
    qtbot.waitUntil(lambda: bool(picker.empty_label.text()), timeout=5000)
    assert "No LoRA folder is set: add one in Settings" in picker.empty_label.text()
    assert not picker.insert_button.isEnabled()
    picker.reject()
