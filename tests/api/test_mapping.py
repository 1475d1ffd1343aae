"""A1111's request JSON -> GenerationRequest (sdstudio.api.mapping): pure, no server."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from sdstudio.api.mapping import ApiError, ApiOptions, parse_call, run_requests
from sdstudio.core.request import GenerationRequest
from tests.api.conftest import b64_png


def _parse(body: dict[str, Any], kind: str = "txt2img", known: Any = None,
           options: ApiOptions | None = None, styles: Any = None) -> Any:
    return parse_call(body, kind, options or ApiOptions(), known or (lambda k, n: True), styles)


def test_a1111_defaults_and_aliases() -> None:
    call = _parse({"prompt": "p"})
    r = call.request
    assert (r.steps, r.sampler, r.schedule_type, r.cfg_scale, r.width) == (50, "Euler",
                                                                           "Automatic", 7, 512)
    r = _parse({"prompt": "p", "sampler_name": "DPM++ 2M Karras", "n_iter": 3,
                "subseed": 9, "subseed_strength": 0.5, "seed_resize_from_w": -1,
                "seed_resize_from_h": -1, "scheduler": None}).request
    assert (r.sampler, r.schedule_type, r.batch_count) == ("DPM++ 2M", "Karras", 3)
    assert (r.variation_seed, r.variation_strength, r.seed_resize_from_w) == (9, 0.5, 0)
    # sampler_index only when sampler_name is not given (A1111's "sampler_name or index")
    assert _parse({"prompt": "p", "sampler_index": "Heun"}).request.sampler == "Heun"
    assert _parse({"prompt": "p", "sampler_index": "Heun", "sampler_name": "DDIM"}
                  ).request.sampler == "DDIM"
    # the hires pass's denoising strength is not the image-to-image strength
    r = _parse({"prompt": "p", "denoising_strength": 0.3}).request
    assert r.strength == 0.75
    if hasattr(r, "hr_denoising_strength"):  # the hires fix's field, once it exists
        assert r.hr_denoising_strength == 0.3


def test_options_and_overrides() -> None:
    options = ApiOptions(CLIP_stop_at_last_layers=2, sd_vae="Automatic")
    assert _parse({"prompt": "p"}, options=options).request.clip_skip == 2
    r = _parse({"prompt": "p", "override_settings": {"CLIP_stop_at_last_layers": 3,
                                                     "sd_vae": "my-vae"}}, options=options
               ).request
    assert (r.clip_skip, r.vae) == (3, "my-vae")
    with pytest.raises(ApiError, match="samples_save"):
        _parse({"prompt": "p", "override_settings": {"samples_save": False}})


@pytest.mark.parametrize("body, words", [
    ({"tiling": True}, "tiling"), ({"eta": 0.5}, "eta"), ({"s_churn": 1}, "s_churn"),
    ({"enable_hr": True, "hr_checkpoint_name": "other.safetensors"}, "hr_checkpoint_name"),
    ({"script_name": "x/y/z plot"}, "script_name"), ({"infotext": "a\nSteps: 3"}, "infotext"),
    ({"styles": ["missing"]}, "missing"), ({"mask": "x"}, None),
    ({"model": "/etc/x"}, "not a path"), ({"vae": "../vae"}, "not a path"),
    ({"loras": ["../../a:1"]}, "not a path"), ({"mask_image": "/tmp/m.png"}, "base64"),
])
def test_refused(body: dict[str, Any], words: str | None) -> None:
    if words is None:  # txt2img ignores img2img keys it has no use for
        _parse({"prompt": "p", **body})
        return
    with pytest.raises(ApiError) as info:
        _parse({"prompt": "p", **body})
    assert info.value.status == 422 and words in info.value.detail


def test_neutral_values_accepted() -> None:
    body = {"prompt": "p", "restore_faces": False, "tiling": None, "eta": 1.0, "s_churn": 0,
            "s_tmax": 0, "s_tmin": 0, "s_noise": 1, "styles": [], "script_args": [],
            "enable_hr": False, "hr_resize_x": 512, "alwayson_scripts": {
                "ControlNet": {"args": []}, "ADetailer": {"args": [False]}},
            "do_not_save_samples": True, "firstphase_width": 0, "unknown_key": 1}
    assert _parse(body).request.prompt == "p"


def test_unknown_names_refused() -> None:
    with pytest.raises(ApiError, match="lora 'nope' was not found"):
        _parse({"prompt": "<lora:nope:0.5>"}, known=lambda kind, name: kind != "lora")


def test_styles_applied() -> None:
    from sdstudio.core.styles import Style

    call = _parse({"prompt": "cat", "negative_prompt": "", "styles": ["film"]},
                  styles=lambda: [Style("film", "{prompt}, on film", "digital")])
    assert (call.request.prompt, call.request.negative_prompt) == ("cat, on film", "digital")


def test_img2img_images_and_codes(tmp_path: Path) -> None:
    init = "data:image/png;base64," + b64_png(Image.new("RGB", (40, 24), "red"))
    mask_img = Image.new("L", (40, 24), 0)
    mask_img.paste(255, (0, 0, 10, 24))
    call = _parse({"prompt": "p", "init_images": [init], "mask": b64_png(mask_img),
                   "inpainting_mask_invert": 1, "resize_mode": 2, "mask_blur_x": 6,
                   "mask_blur_y": 6, "denoising_strength": 0.4}, "img2img")
    r = call.request
    assert (r.resize_mode, r.mask_blur, r.strength, r.inpaint_only_masked,
            r.inpaint_padding) == ("fill", 6, 0.4, True, 0)
    mask = Image.open(r.mask)
    assert mask.getpixel((0, 0)) == 0 and mask.getpixel((39, 0)) == 255  # inverted
    assert Path(r.init_image).name.startswith("api-init-")
    with pytest.raises(ApiError, match="latent upscale"):
        _parse({"prompt": "p", "init_images": [init], "resize_mode": 3}, "img2img")
    with pytest.raises(ApiError) as info:
        _parse({"prompt": "p"}, "img2img")
    assert info.value.status == 404
    with pytest.raises(ApiError, match="one source image"):
        _parse({"prompt": "p", "init_images": [init, init]}, "img2img")


def test_bomb_and_truncated_images_refused(tmp_path: Path) -> None:
    import base64

    from tests.cli.conftest import write_bomb_png

    bomb = base64.b64encode(write_bomb_png(tmp_path / "b.png").read_bytes()).decode()
    with pytest.raises(ApiError, match="too large"):
        _parse({"prompt": "p", "init_images": [bomb]}, "img2img")
    whole = b64_png(Image.new("RGB", (64, 64), "blue"))
    cut = base64.b64encode(base64.b64decode(whole)[:60]).decode()
    with pytest.raises(ApiError, match="truncated"):
        _parse({"prompt": "p", "init_images": [cut]}, "img2img")


def test_runs_keep_the_seeds_of_the_whole() -> None:
    r = GenerationRequest(prompt="p", seed=10, batch_size=2, batch_count=3)
    runs = run_requests(r)
    assert [x.seed for x in runs] == [10, 12, 14]
    assert [s for x in runs for s in x.seeds(x.seed)] == r.seeds(10)
    v = r.replace(variation_seed=100, variation_strength=0.3)
    runs = run_requests(v)
    assert [x.seed for x in runs] == [10, 10, 10]
    assert [x.variation_seed for x in runs] == [100, 102, 104]
    random = run_requests(r.replace(seed=-1))
    assert random[0].seed >= 0 and random[1].seed == random[0].seed + 2
