"""The Control section end to end with the real engine: a tiny random ControlNet (built by the
engine tests' fixture, in the original single-file layout) in a ControlNet folder, a scribble
painted in the window, Generate: the image is made with the unit and records it as the
ControlNet extension does; restoring that image brings the unit back."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image
from PySide6.QtCore import QPointF, Qt

from sdstudio.core.settings import EngineSettings, Settings
from sdstudio.worker import JobState
from tests.engine._controlnet_fixtures import build_controlnets
from tests.ui.test_main_window import small, wait_jobs, wait_model

L = Qt.MouseButton.LeftButton


def test_a_scribble_unit_generates_and_restores(qtbot: Any, make_window: Any,
                                                tiny_models: dict[str, Path],
                                                tmp_path: Path) -> None:
    files = build_controlnets(tiny_models["sd1"], tmp_path / "build")
    folder = tmp_path / "ControlNet"
    folder.mkdir()
    (folder / "control_tiny_scribble.safetensors").write_bytes(files["original"].read_bytes())
    settings = Settings(output_dir=str(tmp_path / "out"),
                        engine=EngineSettings(default_model=str(tiny_models["sd1"]),
                                              controlnet_dirs=(str(folder),)),
                        ui={"welcome": "dismissed"})
    w = make_window(model=str(tiny_models["sd1"]), settings=settings)
    wait_model(qtbot, w)
    small(w, "a house", size=64, steps=2)
    p = w.prompt_panel
    qtbot.mouseClick(p.control_button, L)
    section = p.control_section
    qtbot.mouseClick(section.add_button, L)
    (editor,) = section.editors
    qtbot.waitUntil(lambda: editor.model() == "control_tiny_scribble", timeout=10_000)
    qtbot.mouseClick(editor.paint_button, L)
    dialog = section.scribble_dialog
    assert dialog is not None
    canvas = dialog.canvas
    canvas.begin_stroke(QPointF(8, 8), erase=False, pressure=1.0)
    canvas.continue_stroke(QPointF(56, 56), pressure=1.0)
    canvas.end_stroke()
    qtbot.mouseClick(dialog.use_button, L)
    editor.weight.set_value(0.9)
    qtbot.mouseClick(p.generate_button, L)
    (job,) = wait_jobs(qtbot, w, 1)
    assert job.state is JobState.DONE, job.failure
    (unit,) = job.request.control_units
    assert unit.model == "control_tiny_scribble" and unit.weight == 0.9
    out = Path(job.images[0])
    with Image.open(out) as im:
        assert im.size == (64, 64)
        text = im.info["parameters"]
    assert 'ControlNet 0: "Module: none, Model: control_tiny_scribble [' in text
    assert "Weight: 0.9" in text
    saved = np.asarray(Image.open(unit.image).convert("L"))
    assert saved[32, 32] == 255 and saved[8, 56] == 0  # the diagonal stroke, white on black

    section.clear_units()
    assert w.restore_parameters_from(str(out))
    (restored,) = section.editors
    assert restored.model() == "control_tiny_scribble" and restored.weight.value() == 0.9
    # SD Studio's own chunk names the saved input: the scribble comes back too
    assert restored.image() is not None and restored.image().width() == 64
