"""Restoring parameters applies every field exactly, and says what it could not apply.

The field table decides what the window shows: every field the table gives a panel control is
checked here by walking the table, so a new field is covered without touching this file."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from PIL import Image
from PySide6.QtGui import QImage

from sdstudio.core.outpaint import FIELDS as OUTPAINT_FIELDS
from sdstudio.core.request import (
    FIELDS,
    GenerationInfo,
    GenerationRequest,
    LoraSpec,
    request_spec,
)
from sdstudio.core.settings import EngineSettings, Settings
from sdstudio.storage.png import read_image_metadata, save_image
from sdstudio.testing.fake_engine import FakeScript
from sdstudio.ui.field_controls import SeedControl
from sdstudio.ui.prompt_panel import PANEL_FIELDS
from tests.field_values import other_value

# what restore does not bring back: the canvases' images (use Send to image to image) and
# the model, which a window only switches to when it is installed (checked separately)
NOT_RESTORED = {"init_image", "mask", "model"}


def _settings(tmp_path: Path) -> Settings:
    vaes, loras, ups = tmp_path / "vae", tmp_path / "lora", tmp_path / "upscalers"
    control = tmp_path / "ControlNet"
    for folder in (vaes, loras, ups, control):
        folder.mkdir()
    (vaes / "vae-ft-mse.safetensors").write_bytes(b"x")
    (loras / "film grain.safetensors").write_bytes(b"x")
    (ups / f"{other_value(request_spec('hires_upscaler'))}.pth").write_bytes(b"x")
    for unit in other_value(request_spec("control_units")):
        (control / f"{unit.model}.pth").write_bytes(b"x")
    return Settings(output_dir=str(tmp_path / "out"),
                    engine=EngineSettings(vae_dirs=(str(vaes),), lora_dirs=(str(loras),),
                                          upscaler_dirs=(str(ups),),
                                          controlnet_dirs=(str(control),)))


def _window_request(w: Any) -> GenerationRequest:
    # an infotext names no control image: a person adds one to each restored unit (in text
    # to image a unit needs one); the units' settings are what round-trips
    for editor in w.prompt_panel.control_section.editors:
        if editor.image() is None:
            editor.set_image(QImage(8, 8, QImage.Format.Format_RGB888))
    request = w.build_request()  # on the text-to-image tab: no init image is saved
    units = tuple(u.replace(image=None) for u in request.control_units)
    # the outpaint sides extend the inpaint tab's image: another tab's request leaves them
    # out (they need an init image), the panel keeps them
    panel = w.prompt_panel.request()
    return request.replace(control_units=units,
                           **{name: getattr(panel, name) for name in OUTPAINT_FIELDS})


def test_every_field_round_trips_window_png_window(qtbot: Any, make_window: Any,
                                                    tmp_path: Path) -> None:
    w = make_window(fake=FakeScript(), settings=_settings(tmp_path))
    made = GenerationRequest(prompt="a lighthouse, <lora:film grain:0.6>", **{
        s.name: other_value(s) for s in FIELDS
        if s.name not in NOT_RESTORED | {"prompt", "loras"}})
    made = made.replace(hires_resize_x=1024, hires_resize_y=768)  # a hires target that fits
    assert all(getattr(made, s.name) != s.default for s in FIELDS
               if s.name not in NOT_RESTORED | {"loras"}), "the test sets every field"
    notes = w.apply_request(made)
    assert notes == []
    first = _window_request(w)
    assert first == made  # window -> request, nothing lost
    png = save_image(Image.new("RGB", (16, 16)), first, GenerationInfo(), tmp_path / "made",
                     "{seed}")
    w.apply_request(GenerationRequest(prompt="something else"))  # the window moves on
    assert w.restore_parameters_from(str(png))
    assert _window_request(w) == first  # -> PNG -> parse -> window: no value changed
    assert "Not applied" not in w.message_bar.message


def test_every_panel_field_has_a_control_with_the_tables_range(qtbot: Any,
                                                               make_window: Any) -> None:
    w = make_window(fake=FakeScript(), start=False)
    panel = w.prompt_panel
    for spec in PANEL_FIELDS:
        if spec.name in ("prompt", "negative_prompt"):
            continue
        control = panel.control(spec.name)
        if isinstance(control, SeedControl):  # typed digits: the range is the validator's
            assert control.set_value(spec.maximum) is None, spec.name
            assert control.set_value(spec.maximum + 1) is not None, spec.name
        elif spec.kind in ("int", "float"):
            box = control.widget
            assert box.minimum() == spec.minimum, spec.name
            assert box.maximum() == min(spec.maximum, 2**31 - 1), spec.name
    for spec in FIELDS:  # every field is edited by the panel or by another part
        assert spec in PANEL_FIELDS or (spec.ui is not None and spec.ui.section == "external")


def test_restore_keeps_the_exact_values_that_used_to_be_clamped(
        qtbot: Any, make_window: Any, tmp_path: Path) -> None:
    """Steps 200, CFG 40, mask blur 100, 32 images per run, width 6144, clip skip 2, GPU RNG,
    a VAE and a resize mode came back as 150 / 30 / 64 / 16 / 4096 / 1 / lost."""
    w = make_window(fake=FakeScript(), settings=_settings(tmp_path))
    request = GenerationRequest(
        prompt="a harbour", steps=200, cfg_scale=40.0, mask_blur=100, batch_size=32,
        width=6144, height=512, clip_skip=2, rng="device", vae="vae-ft-mse",
        resize_mode="crop").validated()
    png = save_image(Image.new("RGB", (16, 16)), request, GenerationInfo(), tmp_path / "m",
                     "{seed}")
    assert w.restore_parameters_from(str(png))
    got = _window_request(w)
    assert (got.steps, got.cfg_scale, got.mask_blur, got.batch_size, got.width) == (
        200, 40.0, 100, 32, 6144)
    assert (got.clip_skip, got.rng, got.vae, got.resize_mode) == (2, "device", "vae-ft-mse",
                                                                   "crop")
    message = w.message_bar.message
    assert "200 steps" in message and "CFG 40" in message and "6144×512" in message
    assert "Not applied" not in message


def test_what_cannot_be_applied_is_listed_and_kept(qtbot: Any, make_window: Any,
                                                   tmp_path: Path) -> None:
    w = make_window(fake=FakeScript(), settings=_settings(tmp_path))
    made = GenerationRequest(prompt="a fox <lora:not here:0.5>", vae="some-other-vae",
                             sampler="DPM adaptive", model=str(tmp_path / "gone.safetensors"))
    notes = w.apply_request(made)
    text = " ".join(notes)
    assert "not here" in text and "some-other-vae" in text and "DPM adaptive" in text
    assert "gone.safetensors" in text
    got = w.prompt_panel.request()  # kept, so they are written back unchanged
    assert (got.prompt, got.vae, got.sampler) == (made.prompt, made.vae, made.sampler)


def test_a1111_infotext_extras_are_named(qtbot: Any, make_window: Any, tmp_path: Path) -> None:
    from PIL import PngImagePlugin

    w = make_window(fake=FakeScript(), settings=_settings(tmp_path))
    png = tmp_path / "a1111.png"
    info = PngImagePlugin.PngInfo()
    info.add_text("parameters", "a dog\nSteps: 12, Sampler: DPM++ 2M, Schedule type: Karras, "
                  "CFG scale: 4, Seed: 42, Size: 512x640, Model hash: abc123, Model: dream, "
                  "VAE: vae-ft-mse.safetensors, Clip skip: 2, Face restoration: CodeFormer, "
                  "Version: v1.10.1")
    Image.new("RGB", (8, 8)).save(png, pnginfo=info)
    assert read_image_metadata(png).source != "sdstudio"
    assert w.restore_parameters_from(str(png))
    got = w.prompt_panel.request()
    assert (got.sampler, got.schedule_type, got.clip_skip, got.vae, got.rng) == (
        "DPM++ 2M", "Karras", 2, "vae-ft-mse", "device")
    message = w.message_bar.message
    assert "Face restoration: CodeFormer" in message and "dream" in message
    assert "schedule type Karras" in message
    assert "Version" not in message


def test_paths_named_by_an_image_are_not_used(qtbot: Any, make_window: Any,
                                              tmp_path: Path) -> None:
    w = make_window(fake=FakeScript(), settings=_settings(tmp_path))
    made = GenerationRequest(prompt="a fox", vae="/home/someone/.ssh/id_rsa",
                             loras=(LoraSpec("/etc/passwd", 1.0), LoraSpec("film grain", 0.6)),
                             model="/")
    notes = " ".join(w.apply_request(made))
    assert "id_rsa" in notes and "/etc/passwd" in notes and "not installed" in notes
    got = w.prompt_panel.request()
    assert got.vae == "" and "/etc/passwd" not in got.prompt
    assert got.prompt == "a fox <lora:film grain:0.6>"
    assert w.current_model == ""
