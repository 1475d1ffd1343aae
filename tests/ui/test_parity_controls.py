"""The A1111-parity fields in the prompt panel: schedule type beside the sampler, variation
seed (a full 32-bit seed, typed), variation strength, seed resize and emphasis under More
options; the request the window sends carries them, and a bad pair is refused by name."""

from __future__ import annotations

from typing import Any

from sdstudio.testing.fake_engine import FakeScript


def test_parity_fields_reach_the_request(qtbot: Any, make_window: Any) -> None:
    w = make_window(fake=FakeScript())
    p = w.prompt_panel
    p.prompt_edit.setPlainText("a lighthouse")
    p.widget("sampler").setCurrentText("DPM++ 2M")
    p.widget("schedule_type").setCurrentText("Exponential")
    p.show_more(True)
    p.widget("variation_seed").setText("4000000000")
    p.widget("variation_strength").setValue(0.35)
    p.widget("seed_resize_from_w").setValue(768)
    p.widget("seed_resize_from_h").setValue(512)
    p.widget("emphasis").setCurrentText("No norm")
    got = p.request()
    assert (got.sampler, got.schedule_type) == ("DPM++ 2M", "Exponential")
    assert (got.variation_seed, got.variation_strength) == (4000000000, 0.35)
    assert (got.seed_resize_from_w, got.seed_resize_from_h, got.emphasis) == (768, 512,
                                                                               "No norm")
    p.widget("variation_seed").setText("-1")
    assert p.request().variation_seed == -1


def test_old_combined_sampler_names_restore_as_sampler_and_schedule(qtbot: Any,
                                                                     make_window: Any) -> None:
    from sdstudio.core.request import GenerationRequest

    w = make_window(fake=FakeScript())
    w.prompt_panel.set_request(GenerationRequest(prompt="x", sampler="DPM++ SDE Karras"))
    assert w.prompt_panel.widget("sampler").currentText() == "DPM++ SDE"
    assert w.prompt_panel.widget("schedule_type").currentText() == "Karras"


def test_a_schedule_the_sampler_cannot_run_is_refused(qtbot: Any, make_window: Any) -> None:
    w = make_window(fake=FakeScript())
    p = w.prompt_panel
    p.prompt_edit.setPlainText("a lighthouse")
    p.widget("sampler").setCurrentText("DDIM")
    p.widget("schedule_type").setCurrentText("Karras")
    assert w.generate() is None
    assert "DDIM" in w.message_bar.message and "schedule" in w.message_bar.message
    assert w.queue.rowCount() == 0
