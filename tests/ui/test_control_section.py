"""The prompt panel's Control section, driven as a person drives it (pytest-qt, offscreen):
units added, removed and switched off; the request the window builds from them (images saved
under the inputs folder); the preprocessor's preview computed in the background; the model
picker filtered to the loaded architecture (tiny safetensors headers in a temp folder); a
painted scribble as the control image; restore from infotext and from SD Studio's own chunk."""

from __future__ import annotations

import json
import struct
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image
from PySide6.QtCore import QPointF, Qt
from PySide6.QtGui import QImage

from sdstudio.core import paths
from sdstudio.core.control import ControlUnit
from sdstudio.core.events import ModelReady
from sdstudio.core.metadata import parse_infotext
from sdstudio.core.preprocessors import preprocess
from sdstudio.core.request import GenerationRequest
from sdstudio.core.settings import EngineSettings, Settings
from sdstudio.testing.fake_engine import FakeScript
from sdstudio.ui.control_section import MAX_SECTION_UNITS, run_preview
from sdstudio.ui.control_unit import UnitEditor
from sdstudio.ui.imageutil import pil_to_qimage, qimage_to_pil

L = Qt.MouseButton.LeftButton


def write_header(path: Path, shapes: dict[str, list[int]]) -> Path:
    """A safetensors file holding only zeros, with these tensor names and shapes."""
    header: dict[str, Any] = {}
    offset = 0
    for name, shape in shapes.items():
        size = int(np.prod(shape)) * 2
        header[name] = {"dtype": "F16", "shape": shape, "data_offsets": [offset, offset + size]}
        offset += size
    raw = json.dumps(header).encode()
    path.write_bytes(struct.pack("<Q", len(raw)) + raw + bytes(offset))
    return path


def controlnet(path: Path, width: int, sdxl: bool = False) -> Path:
    shapes = {"input_hint_block.0.weight": [16, 3, 3, 3],
              "input_blocks.1.1.transformer_blocks.0.attn2.to_k.weight": [8, width]}
    if sdxl:
        shapes["label_emb.0.0.weight"] = [8, 8]
    return write_header(path, shapes)


def ip_adapter(path: Path, width: int) -> Path:
    return write_header(path, {"image_proj.proj.weight": [8, 8],
                               "ip_adapter.1.to_k_ip.weight": [8, width]})


@pytest.fixture
def control_dir(tmp_path: Path) -> Path:
    folder = tmp_path / "ControlNet"
    folder.mkdir()
    controlnet(folder / "control_v11p_sd15_canny.safetensors", 768)
    controlnet(folder / "controlnet-canny-sdxl.safetensors", 2048, sdxl=True)
    ip_adapter(folder / "ip-adapter_sd15.safetensors", 768)
    return folder


@pytest.fixture
def window(make_window: Any, tmp_path: Path, control_dir: Path) -> Any:
    settings = Settings(output_dir=str(tmp_path / "out"),
                        engine=EngineSettings(controlnet_dirs=(str(control_dir),)),
                        ui={"welcome": "dismissed"})
    return make_window(fake=FakeScript(), start=False, settings=settings)


def square(size: int = 64) -> Image.Image:
    a = np.zeros((size, size, 3), np.uint8)
    a[size // 4:3 * size // 4, size // 4:3 * size // 4] = 255
    return Image.fromarray(a)


def model_names(editor: UnitEditor) -> list[str]:
    combo = editor.model_combo
    return [str(combo.itemData(i) or "") for i in range(combo.count())]


def added(qtbot: Any, w: Any) -> UnitEditor:
    """Open the section and add a unit with the buttons; wait for the model list."""
    p = w.prompt_panel
    if not p.control_shown():
        qtbot.mouseClick(p.control_button, L)
    section = p.control_section
    with qtbot.waitSignal(section.modelsListed, timeout=5000, raising=False):
        qtbot.mouseClick(section.add_button, L)
    editor = section.editors[-1]
    qtbot.waitUntil(lambda: any(model_names(editor)), timeout=5000)
    return editor


def test_units_are_added_removed_and_switched_off(qtbot: Any, window: Any) -> None:
    p = window.prompt_panel
    section = p.control_section
    assert not p.control_shown() and not section.isVisible()
    qtbot.mouseClick(p.control_button, L)
    assert section.isVisible() and section.summary.isVisible()
    assert not section.remove_button.isEnabled()
    for _ in range(MAX_SECTION_UNITS):
        qtbot.mouseClick(section.add_button, L)
    assert section.tabs.count() == MAX_SECTION_UNITS
    assert not section.add_button.isEnabled()
    assert [section.tabs.tabText(i) for i in range(4)] == [f"Unit {i}" for i in range(1, 5)]
    assert p.control_button.text() == "Control (4 on)"
    section.editors[1].enabled_box.click()
    assert section.tabs.tabText(1) == "Unit 2 (off)"
    assert p.control_button.text() == "Control (3 on)"
    section.tabs.setCurrentIndex(0)
    qtbot.mouseClick(section.remove_button, L)
    assert section.tabs.count() == 3 and section.add_button.isEnabled()
    assert section.tabs.tabText(0) == "Unit 1 (off)"  # the second one moved up
    qtbot.waitUntil(lambda: all(e.model() for e in section.editors), timeout=5000)
    units = section.units()
    assert [u.enabled for u in units] == [False, True, True]
    assert {u.model for u in units} == {"control_v11p_sd15_canny"}  # the first that fits
    section.editors[0].model_combo.clear()  # off and without a model: left out
    assert len(section.units()) == 2
    qtbot.mouseClick(p.control_button, L)  # closed: the button still tells
    assert not section.isVisible() and p.control_button.text() == "Control (2 on)"


def test_the_request_carries_the_units_and_their_saved_images(
        qtbot: Any, window: Any, tmp_path: Path) -> None:
    editor = added(qtbot, window)
    source = tmp_path / "edges.png"
    square(96).save(source)
    assert editor.slot.load_file(str(source))
    editor.set_module("canny")
    assert [label.text() for label in editor.threshold_labels] == [
        "Low Threshold", "High Threshold"]
    assert [spin.value() for spin in editor.threshold_spins] == [100, 200]
    editor.threshold_spins[0].setValue(50)
    editor.weight.set_value(0.75)
    editor.start.set_value(0.1)
    editor.end.set_value(0.8)
    editor.control_mode.setCurrentText("My prompt is more important")
    editor.resize_mode.setCurrentText("Resize and Fill")
    editor.pixel_perfect_box.setChecked(True)
    assert not editor.res_spin.isEnabled()
    editor.set_model("control_v11p_sd15_canny")
    request = window.build_request()
    (unit,) = request.control_units
    assert unit.model == "control_v11p_sd15_canny" and unit.module == "canny"
    assert (unit.weight, unit.guidance_start, unit.guidance_end) == (0.75, 0.1, 0.8)
    assert unit.control_mode == "My prompt is more important"
    assert unit.resize_mode == "Resize and Fill" and unit.pixel_perfect
    assert (unit.threshold_a, unit.threshold_b, unit.processor_res) == (50, 200, 512)
    assert unit.image is not None
    saved = Path(unit.image)
    assert saved.parent == paths.inputs_dir() and saved.name.startswith("control-")
    assert np.array_equal(np.asarray(Image.open(saved).convert("RGB")), np.asarray(square(96)))
    assert request.validated() == request
    # the same pixels again: the same file, not a second one
    assert window.build_request().control_units[0].image == unit.image


def test_a_unit_may_use_the_source_image(qtbot: Any, window: Any) -> None:
    editor = added(qtbot, window)
    editor.set_image(pil_to_qimage(square()))
    editor.use_source_box.click()
    assert editor.image() is None and editor.slot.label.text().startswith("Uses the source")
    window.tabs.setCurrentIndex(1)
    window.source_canvas.set_image(pil_to_qimage(square(128)))
    request = window.build_request()
    assert request.control_units[0].image is None and request.init_image


def test_preview_shows_the_preprocessor_output(qtbot: Any, window: Any) -> None:
    editor = added(qtbot, window)
    image = square(64)
    editor.set_image(pil_to_qimage(image))
    editor.set_module("canny")
    editor.res_spin.setValue(64)
    assert editor.preview_button.isEnabled()
    qtbot.mouseClick(editor.preview_button, L)
    qtbot.waitUntil(lambda: not editor.preview.pixmap().isNull(), timeout=5000)
    shown = qimage_to_pil(editor.preview.pixmap().toImage().convertToFormat(
        QImage.Format.Format_RGB888))
    expected = run_preview("canny", image, None, 64, 100, 200, 0)
    assert shown.size == expected.size == (64, 64)
    assert np.array_equal(np.asarray(shown), np.asarray(expected))
    assert np.array_equal(np.asarray(expected), np.asarray(preprocess("canny", image,
                                                                      resolution=64)))
    # a shown preview follows the settings (the old one stays until the new one is there)
    editor.res_spin.setValue(128)
    assert not editor.preview.pixmap().isNull()
    qtbot.waitUntil(lambda: editor.preview.pixmap().width() == 128, timeout=5000)
    shown = qimage_to_pil(editor.preview.pixmap().toImage().convertToFormat(
        QImage.Format.Format_RGB888))
    expected = run_preview("canny", image, None, 128, 100, 200, 0)
    assert np.array_equal(np.asarray(shown), np.asarray(expected))
    # a module that needs a mask without one: the reason, not a crash
    editor.set_module("inpaint_only")
    qtbot.mouseClick(editor.preview_button, L)
    qtbot.waitUntil(lambda: "mask" in editor.preview.text(), timeout=5000)


def test_weight_needing_preprocessors_are_greyed(qtbot: Any, window: Any) -> None:
    editor = added(qtbot, window)
    model = editor.module_combo.model()
    index = editor.module_combo.findData("depth_midas")
    item = model.item(index)  # type: ignore[attr-defined]
    assert not item.isEnabled()
    assert "use a ready-made control image" in item.toolTip()
    assert model.item(editor.module_combo.findData("canny")).isEnabled()  # type: ignore[attr-defined]
    assert editor.module_combo.itemText(0) == "none"


def test_the_model_picker_follows_the_loaded_architecture(qtbot: Any, window: Any) -> None:
    editor = added(qtbot, window)
    section = window.prompt_panel.control_section
    window.queue.modelReady.emit(ModelReady(name="m", arch="sd1", device="cpu", dtype="fp32"))
    assert model_names(editor) == ["control_v11p_sd15_canny"]
    window.queue.modelReady.emit(ModelReady(name="x", arch="sdxl-inpaint", device="cpu",
                                            dtype="fp32"))
    assert model_names(editor) == ["controlnet-canny-sdxl"]
    section.set_arch("sd1")
    editor.set_module("ip-adapter_clip_sd15")
    assert model_names(editor) == ["ip-adapter_sd15"]
    assert not editor.control_mode.isEnabled() and not editor.res_spin.isVisible()
    section.set_arch(None)  # nothing loaded yet: every ControlNet
    editor.set_module("canny")
    assert model_names(editor) == ["control_v11p_sd15_canny", "controlnet-canny-sdxl"]


def test_a_painted_scribble_is_the_control_image(qtbot: Any, window: Any) -> None:
    window.prompt_panel.set_size(256, 192)
    editor = added(qtbot, window)
    editor.set_module("canny")
    section = window.prompt_panel.control_section
    qtbot.mouseClick(editor.paint_button, L)
    dialog = section.scribble_dialog
    assert dialog is not None
    canvas = dialog.canvas
    assert (canvas.image().width(), canvas.image().height()) == (256, 192)
    assert canvas.brush_size() == 8 and canvas.hardness() == 1.0
    assert not canvas.outpaint_bar.step_spin.isVisible()
    canvas.begin_stroke(QPointF(20, 50), erase=False, pressure=1.0)
    canvas.continue_stroke(QPointF(200, 50), pressure=1.0)
    canvas.end_stroke()
    qtbot.mouseClick(dialog.use_button, L)
    assert section.scribble_dialog is None
    assert editor.image_kind == "scribble" and editor.preprocessor().name == "none"
    assert editor.paint_button.text() == "Go on painting…"
    (unit,) = window.build_request().control_units
    assert unit.image is not None and unit.module == "none"
    pixels = np.asarray(Image.open(unit.image).convert("RGB"))
    assert pixels.shape == (192, 256, 3)
    assert (pixels[50, 20:200] == 255).all()  # the line, white
    assert not pixels[:40].any() and not pixels[60:].any()  # black elsewhere
    assert (pixels[:, :, 0] == pixels[:, :, 1]).all()  # grey: white lines, soft edges
    # go on painting the same scribble: it comes back into the canvas
    qtbot.mouseClick(editor.paint_button, L)
    dialog = section.scribble_dialog
    assert dialog is not None and dialog.canvas.has_mask()
    dialog.reject()


def test_restore_from_infotext_sets_the_units(qtbot: Any, window: Any) -> None:
    text = ('a cat\nSteps: 20, Sampler: Euler, CFG scale: 7, Seed: 1, Size: 512x512, '
            'ControlNet 0: "Module: canny, Model: control_v11p_sd15_canny [d14c016b], '
            'Weight: 0.8, Resize Mode: Just Resize, Processor Res: 384, Threshold A: 90.0, '
            'Threshold B: 180.0, Guidance Start: 0.2, Guidance End: 0.9, Pixel Perfect: '
            'False, Control Mode: ControlNet is more important", '
            'ControlNet 1: "Module: depth_midas, Model: control_v11f1p_sd15_depth [cfd03158], '
            'Weight: 1.0, Resize Mode: Crop and Resize, Processor Res: 512, Threshold A: -1.0, '
            'Threshold B: -1.0, Guidance Start: 0.0, Guidance End: 1.0, Pixel Perfect: True, '
            'Control Mode: Balanced"')
    request = parse_infotext(text).request
    assert len(request.control_units) == 2
    notes = window.apply_request(request, from_infotext=True)
    section = window.prompt_panel.control_section
    assert window.prompt_panel.control_shown() and section.tabs.count() == 2
    assert sum("hold no control image" in n for n in notes) == 2
    assert all(e.use_source_box.isChecked() for e in section.editors)
    first, second = section.editors
    assert first.preprocessor().name == "canny" and first.model() == "control_v11p_sd15_canny"
    assert [s.value() for s in first.threshold_spins] == [90, 180]
    assert (first.weight.value(), first.start.value(), first.end.value()) == (0.8, 0.2, 0.9)
    assert first.res_spin.value() == 384 and first.resize_mode.currentText() == "Just Resize"
    assert first.control_mode.currentText() == "ControlNet is more important"
    assert second.preprocessor().name == "none" and second.pixel_perfect_box.isChecked()
    assert second.model_combo.currentText() == "control_v11f1p_sd15_depth [cfd03158] (not found)"
    assert any("control unit 2: preprocessor depth_midas is not available here" in n
               for n in notes)
    assert any("control unit 2: control model" in n for n in notes)
    assert not any("control unit 1: control model" in n for n in notes)


def test_restore_loads_only_input_images_from_the_inputs_folder(
        qtbot: Any, window: Any, tmp_path: Path) -> None:
    from sdstudio.ui.imageutil import save_input_image

    kept = save_input_image(square(32), "control")
    outside = tmp_path / "elsewhere.png"
    square(32).save(outside)
    request = GenerationRequest(prompt="x", control_units=(
        ControlUnit(model="control_v11p_sd15_canny", image=str(kept)),
        ControlUnit(model="control_v11p_sd15_canny", image=str(outside)),
        ControlUnit(model="control_v11p_sd15_canny", image=str(kept.parent / ".." / ".." /
                                                              "x.png"))))
    notes = window.apply_request(request)
    first, second, third = window.prompt_panel.control_section.editors
    assert first.image() is not None and first.image().width() == 32
    assert second.image() is None and third.image() is None
    assert sum("its control image is not restored" in n for n in notes) == 2


def test_no_mnemonic_twice_with_the_section_open(qtbot: Any, window: Any) -> None:
    from PySide6.QtWidgets import QApplication

    from tests.ui.test_mnemonics import clashes

    window.resize(1600, 1000)
    added(qtbot, window)
    for index in range(3):
        window.tabs.setCurrentIndex(index)
        QApplication.processEvents()
        assert not clashes(window)


def test_the_preprocessor_picks_a_model_named_for_it(qtbot: Any) -> None:
    from sdstudio.core.control import ControlModel

    editor = UnitEditor()
    qtbot.addWidget(editor)
    names = ("control_v11f1e_sd15_tile", "control_v11p_sd15_canny", "control_v11p_sd15_scribble")
    editor.set_models([ControlModel(n, Path(n), "controlnet", "sd1") for n in names], "sd1")
    editor.set_module("canny")
    assert editor.model() == "control_v11p_sd15_canny"
    editor.set_module("scribble_xdog")
    assert editor.model() == "control_v11p_sd15_scribble"
    editor.set_model("control_v11f1e_sd15_tile")  # the person's choice stays on other edits
    editor.weight.set_value(0.5)
    editor.set_models(editor._models, "sd1")
    assert editor.model() == "control_v11f1e_sd15_tile"
    editor.set_module("none")  # no words to go by: the model stays
    assert editor.model() == "control_v11f1e_sd15_tile"


def test_the_units_are_kept_between_sessions(qtbot: Any, make_window: Any, tmp_path: Path,
                                             control_dir: Path) -> None:
    from sdstudio.core.settings import load_settings

    settings = Settings(output_dir=str(tmp_path / "out"),
                        engine=EngineSettings(controlnet_dirs=(str(control_dir),)),
                        ui={"welcome": "dismissed"})
    first = make_window(fake=FakeScript(), start=False, settings=settings)
    editor = added(qtbot, first)
    editor.set_image(pil_to_qimage(square(40)))
    editor.set_module("canny")
    editor.weight.set_value(0.6)
    source_only = first.prompt_panel.control_section.add_unit()
    source_only.use_source_box.setChecked(True)
    first.close()
    saved = load_settings()
    assert len(saved.ui["control_units"]) == 2 and saved.ui["control_open"] is True
    second = make_window(fake=FakeScript(), start=False, settings=saved)
    section = second.prompt_panel.control_section
    assert second.prompt_panel.control_shown() and section.tabs.count() == 2
    again, other = section.editors
    assert again.preprocessor().name == "canny" and again.weight.value() == 0.6
    assert again.image() is not None and again.image().width() == 40
    assert other.use_source_box.isChecked() and other.image() is None
    qtbot.waitUntil(lambda: again.model() == "control_v11p_sd15_canny", timeout=5000)


def test_a_damaged_saved_state_restores_no_units(qtbot: Any, window: Any) -> None:
    section = window.prompt_panel.control_section
    for bad in ("x", [1], [{"unit": {"model": "m", "weight": 9}}], [{"unit": {"mode": "?"}}],
                {"unit": {}}):
        section.restore_saved(bad)
        assert section.tabs.count() == 0, bad
    section.restore_saved([{"unit": "m,image=/etc/passwd"}])  # a file elsewhere: not read
    assert section.tabs.count() == 1 and section.editors[0].image() is None


def test_an_image_is_dropped_or_pasted_on_the_slot(qtbot: Any, window: Any,
                                                   tmp_path: Path) -> None:
    from PySide6.QtCore import QMimeData, QUrl
    from PySide6.QtGui import QKeySequence
    from PySide6.QtWidgets import QApplication

    from tests.ui.helpers import send_drag_and_drop

    editor = added(qtbot, window)
    path = tmp_path / "pose.png"
    square(48).save(path)
    mime = QMimeData()
    mime.setUrls([QUrl.fromLocalFile(str(path))])
    enter, drop = send_drag_and_drop(editor.slot, mime)
    assert enter.isAccepted() and drop.isAccepted()
    assert editor.image() is not None and editor.image().width() == 48
    editor.clear_image()
    QApplication.clipboard().setImage(pil_to_qimage(square(24)))
    editor.slot.setFocus()
    qtbot.keySequence(editor.slot, QKeySequence.StandardKey.Paste)
    assert editor.image() is not None and editor.image().width() == 24
    errors: list[str] = []
    window.prompt_panel.control_section.errorOccurred.connect(errors.append)
    broken = tmp_path / "broken.png"
    broken.write_bytes(path.read_bytes()[:40])
    assert not editor.slot.load_file(str(broken))
    assert errors and "truncated" in errors[0]
    assert editor.image().width() == 24  # the image before stays


def test_preview_of_an_inpaint_unit_uses_the_inpaint_tab(qtbot: Any, window: Any) -> None:
    from sdstudio.ui.imageutil import array_to_qimage
    from sdstudio.ui.main_window import TAB_INPAINT

    editor = added(qtbot, window)
    window.tabs.setCurrentIndex(TAB_INPAINT)
    window.mask_canvas.set_image(pil_to_qimage(Image.new("RGB", (64, 32), (200, 180, 40))))
    mask = np.zeros((32, 64), np.uint8)
    mask[:, :32] = 255  # the left half is repainted
    window.mask_canvas.set_mask(array_to_qimage(mask))
    editor.use_source_box.setChecked(True)
    editor.set_module("inpaint_only")
    qtbot.mouseClick(editor.preview_button, L)

    def shown() -> np.ndarray:
        return np.asarray(qimage_to_pil(editor.preview.pixmap().toImage().convertToFormat(
            QImage.Format.Format_RGB888)))

    def masked_black() -> bool:  # an earlier preview stays shown until the newest is there
        if editor.preview.pixmap().isNull():
            return False
        image = shown()
        return (image.shape == (32, 64, 3)
                and not image[:, :30].any()  # masked: black, as the inpaint ControlNet sees -1
                and bool((image[:, 34:] == (200, 180, 40)).all()))

    qtbot.waitUntil(masked_black, timeout=5000)
