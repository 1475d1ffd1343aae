"""The ControlNet extension's API units (``alwayson_scripts.controlnet.args``) as control
units: images from base64 into the inputs folder, names only, refusals in one line."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from sdstudio.api.mapping import ApiError, ApiOptions, parse_call
from sdstudio.core.control import ControlUnit
from tests.api.conftest import b64_png


def _parse(body: dict[str, Any]) -> Any:
    return parse_call({"prompt": "a cat", **body}, "txt2img", ApiOptions(), lambda k, n: True)


def _scripts(*units: Any) -> dict[str, Any]:
    return {"alwayson_scripts": {"controlnet": {"args": list(units)}}}


def test_extension_units_become_control_units() -> None:
    pose = b64_png(Image.new("RGB", (64, 64), (10, 200, 30)))
    call = _parse(_scripts(
        {"input_image": pose, "module": "canny", "model": "control_v11p_sd15_canny [d14c016b]",
         "weight": 0.7, "resize_mode": 0, "control_mode": 2, "guidance_start": 0.1,
         "processor_res": -1, "threshold_a": 64, "threshold_b": 128, "lowvram": False,
         "pixel_perfect": True, "guessmode": None},
        {"enabled": False, "model": "x", "image": pose},
        {"model": "None", "image": pose},
        {"image": {"image": pose, "mask": None}, "model": "control_depth",
         "control_mode": "My prompt is more important"}))
    units = call.request.control_units
    assert len(units) == 2
    first = units[0]
    assert first.model == "control_v11p_sd15_canny [d14c016b]" and first.module == "canny"
    assert (first.weight, first.guidance_start, first.processor_res) == (0.7, 0.1, 512)
    assert first.control_mode == "ControlNet is more important"
    assert first.resize_mode == "Just Resize" and first.pixel_perfect
    assert first.image is not None and Path(first.image).is_file()
    with Image.open(first.image) as saved:
        assert saved.getpixel((0, 0))[:3] == (10, 200, 30)
    assert units[1] == ControlUnit("control_depth", image=units[1].image,
                                   control_mode="My prompt is more important")


@pytest.mark.parametrize(("body", "message"), [
    (_scripts({"model": "/etc/passwd", "image": "x"}), "not a path"),
    (_scripts({"model": "cn", "image": "https://example.com/a.png"}), "fetches no URLs"),
    (_scripts({"model": "cn", "image": "not base64!"}), "image"),
    (_scripts({"model": "cn", "weight": 5}), "weight must be between 0 and 2"),
    (_scripts({"model": "cn", "frobnicate": 1, "module": "nonsense"}), "nonsense"),
    (_scripts(*[{"model": "cn"}] * 9), "at most 8 units"),
    ({"control_units": [{"model": "cn", "image": "/etc/passwd"}]}, "not as paths"),
])
def test_bad_units_are_refused_in_one_line(body: dict[str, Any], message: str) -> None:
    with pytest.raises(ApiError) as err:
        _parse(body)
    assert err.value.status in (413, 422) and message in err.value.detail
    assert "\n" not in err.value.detail
