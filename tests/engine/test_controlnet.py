"""ControlNet units through the real engine: tiny random ControlNets saved in every layout
and loaded by the real loader; weight 0, guidance start/end, two units, control modes, the
architecture check, hostile files, img2img / inpaint / hires, kept loaded between runs."""

from __future__ import annotations

import os
import pickle
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image

from sdstudio.core.control import ControlUnit, list_control_models
from sdstudio.core.errors import ModelError, RequestError
from sdstudio.core.metadata import parse_infotext, to_infotext
from sdstudio.core.settings import EngineSettings
from sdstudio.engine import controlnet
from tests.engine._controlnet_fixtures import build_adapters, build_controlnets


@pytest.fixture(scope="module")
def cn(tiny_models: dict[str, Path], tmp_path_factory: pytest.TempPathFactory
       ) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("controlnets")
    files = build_controlnets(tiny_models["sd1"], root / "cn")
    files.update({f"xl-{k}": v for k, v in build_adapters(
        tiny_models["sdxl"], root / "adapters-xl").items()})
    files.update(build_adapters(tiny_models["sd1"], root / "adapters"))
    rng = np.random.RandomState(3)
    Image.fromarray((rng.rand(64, 64, 3) * 255).astype(np.uint8)).save(root / "hint.png")
    Image.fromarray((rng.rand(64, 64, 3) * 255).astype(np.uint8)).save(root / "hint2.png")
    files["hint"], files["hint2"] = root / "hint.png", root / "hint2.png"
    return files


def _image(eng: Any, request: Any) -> np.ndarray:
    return np.asarray(eng.generate(request)[0].image)


def _unit(cn: dict[str, Path], label: str = "original", **kw: Any) -> ControlUnit:
    return ControlUnit(str(cn[label]), image=str(kw.pop("image", cn["hint"])), **kw)


def test_every_layout_loads_the_same_controlnet(engines: Callable[[str], Any],
                                                make_request: Callable[..., Any],
                                                cn: dict[str, Path]) -> None:
    eng = engines("sd1")
    plain = _image(eng, make_request())
    got = {label: _image(eng, make_request(control_units=(_unit(cn, label),)))
           for label in ("folder", "diffusers-file", "original", "original-pth")}
    assert not np.array_equal(got["folder"], plain)  # the control changes the image
    for label, image in got.items():
        assert np.array_equal(image, got["folder"]), label


def test_weight_zero_is_exactly_the_image_without_controlnet(
        engines: Callable[[str], Any], make_request: Callable[..., Any],
        cn: dict[str, Path]) -> None:
    eng = engines("sd1")
    plain = _image(eng, make_request())
    zero = _image(eng, make_request(control_units=(_unit(cn, weight=0.0),)))
    assert np.array_equal(plain, zero)
    disabled = _image(eng, make_request(control_units=(_unit(cn, enabled=False),)))
    assert np.array_equal(plain, disabled)


def _count_calls(eng: Any, monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Evaluation indices at which a ControlNet ran."""
    seen: list[int] = []
    original = controlnet.ControlConditioning.residuals

    def spy(self: Any, sample: Any, timestep: Any, kwargs: Any, index: int,
            total: int) -> Any:
        out = original(self, sample, timestep, kwargs, index, total)
        if out is not None:
            seen.append(index)
        return out

    monkeypatch.setattr(controlnet.ControlConditioning, "residuals", spy)
    return seen


@pytest.mark.parametrize(("start", "end", "expected"), [
    (0.0, 1.0, [0, 1, 2, 3]), (0.5, 1.0, [2, 3]), (0.0, 0.5, [0, 1, 2]), (0.3, 0.6, [2])])
def test_guidance_start_and_end_are_fractions_of_the_steps(
        engines: Callable[[str], Any], make_request: Callable[..., Any], cn: dict[str, Path],
        monkeypatch: pytest.MonkeyPatch, start: float, end: float,
        expected: list[int]) -> None:
    eng = engines("sd1")
    seen = _count_calls(eng, monkeypatch)
    eng.generate(make_request(steps=4, sampler="Euler", control_units=(
        _unit(cn, guidance_start=start, guidance_end=end),)))
    assert seen == expected


def test_a_unit_active_in_the_second_half_only_changes_the_second_half(
        engines: Callable[[str], Any], make_request: Callable[..., Any],
        cn: dict[str, Path]) -> None:
    eng = engines("sd1")
    full = _image(eng, make_request(steps=4, control_units=(_unit(cn),)))
    late = _image(eng, make_request(steps=4, control_units=(_unit(cn, guidance_start=0.5),)))
    plain = _image(eng, make_request(steps=4))
    assert not np.array_equal(late, full) and not np.array_equal(late, plain)


def test_two_units_at_once(engines: Callable[[str], Any], make_request: Callable[..., Any],
                           cn: dict[str, Path]) -> None:
    eng = engines("sd1")
    one = _image(eng, make_request(control_units=(_unit(cn),)))
    other = _image(eng, make_request(control_units=(_unit(cn, "other", image=cn["hint2"]),)))
    both = _image(eng, make_request(control_units=(
        _unit(cn), _unit(cn, "other", image=cn["hint2"]))))
    assert not np.array_equal(both, one) and not np.array_equal(both, other)
    assert len(eng._model.controlnets.models) == 2


def test_soft_injection_scales_as_the_extension() -> None:
    scales = controlnet.soft_scales(13, 1.0)
    assert scales[12] == 1.0 and scales[0] == pytest.approx(0.825 ** 12)
    assert controlnet.soft_scales(10, 2.0) == [2.0 * 0.825 ** (12 - k) for k in range(10)]


def test_control_modes(engines: Callable[[str], Any], make_request: Callable[..., Any],
                       cn: dict[str, Path]) -> None:
    eng = engines("sd1")
    images = {mode: _image(eng, make_request(control_units=(_unit(cn, control_mode=mode),)))
              for mode in ("Balanced", "My prompt is more important",
                           "ControlNet is more important")}
    values = list(images.values())
    assert not np.array_equal(values[0], values[1])
    assert not np.array_equal(values[1], values[2])


def test_controlnet_is_more_important_leaves_the_unconditional_half_alone(
        engines: Callable[[str], Any], cn: dict[str, Path]) -> None:
    eng = engines("sd1")
    unet = eng._model.pipes.base.unet
    model = controlnet.load_controlnet(cn["original"], unet, model_name="tiny",
                                       model_arch="sd1", device=torch.device("cpu"),
                                       dtype=torch.float32)
    hint = Image.open(cn["hint"]).convert("RGB")
    sample = torch.randn(2, 4, 8, 8)
    states = torch.randn(2, 77, int(unet.config.cross_attention_dim))
    for mode, uncond_zero in (("Balanced", False), ("ControlNet is more important", True)):
        active = controlnet.ActiveUnit(0, ControlUnit("x", control_mode=mode), model, hint)
        cond = controlnet.ControlConditioning([active], guidance=True)
        out = cond.residuals(sample, torch.tensor(500.0),
                             {"encoder_hidden_states": states}, 0, 4)
        assert out is not None
        down, mid = out
        assert bool((down[0][0] == 0).all()) is uncond_zero
        assert bool((mid[0] == 0).all()) is uncond_zero and not bool((mid[1] == 0).all())


def test_an_sd1_controlnet_on_an_sdxl_model_is_refused(
        engines: Callable[[str], Any], make_request: Callable[..., Any],
        cn: dict[str, Path]) -> None:
    eng = engines("sdxl")
    with pytest.raises(RequestError, match=r"is a ControlNet for .*the loaded model"):
        eng.generate(make_request("sdxl", control_units=(_unit(cn),)))


class _Boom:
    def __reduce__(self) -> tuple[Any, ...]:
        return (os.system, ("echo pwned > /tmp/sdstudio-controlnet-pwned",))


def test_a_hostile_pickle_is_refused(engines: Callable[[str], Any],
                                     make_request: Callable[..., Any], cn: dict[str, Path],
                                     tmp_path: Path) -> None:
    bad = tmp_path / "control_evil.pth"
    with open(bad, "wb") as fh:
        pickle.dump({"x": _Boom()}, fh)
    eng = engines("sd1")
    with pytest.raises(ModelError):
        eng.generate(make_request(control_units=(_unit(cn, image=cn["hint"]).replace(
            model=str(bad)),)))
    assert not Path("/tmp/sdstudio-controlnet-pwned").exists()
    junk = tmp_path / "control_junk.safetensors"
    junk.write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json at all}")
    with pytest.raises(ModelError):
        eng.generate(make_request(control_units=(_unit(cn).replace(model=str(junk)),)))


def test_a_missing_model_or_image_is_one_line(engines: Callable[[str], Any],
                                              make_request: Callable[..., Any],
                                              cn: dict[str, Path], tmp_path: Path) -> None:
    eng = engines("sd1")
    with pytest.raises(RequestError, match="no control model 'nowhere'"):
        eng.generate(make_request(control_units=(ControlUnit("nowhere", image=str(cn["hint"])),)))
    with pytest.raises(RequestError, match="needs a control image"):
        eng.generate(make_request(control_units=(ControlUnit(str(cn["original"])),)))


def test_kept_loaded_between_runs_and_freed_when_removed(
        engines: Callable[[str], Any], make_request: Callable[..., Any],
        cn: dict[str, Path], monkeypatch: pytest.MonkeyPatch) -> None:
    eng = engines("sd1")
    eng.generate(make_request(control_units=(_unit(cn),)))
    loads: list[Path] = []
    original = controlnet.load_controlnet

    def counting(path: Path, *args: Any, **kwargs: Any) -> Any:
        loads.append(path)
        return original(path, *args, **kwargs)

    monkeypatch.setattr(controlnet, "load_controlnet", counting)
    eng.generate(make_request(seed=5, control_units=(_unit(cn),)))
    assert loads == []
    eng.generate(make_request())
    assert eng._model.controlnets is None


def test_by_name_from_the_controlnet_folders_and_the_infotext(
        tiny_models: dict[str, Path], make_request: Callable[..., Any],
        cn: dict[str, Path]) -> None:
    from sdstudio.engine import Engine

    settings = EngineSettings(controlnet_dirs=(str(cn["original"].parent),))
    names = {m.name: m for m in list_control_models(settings)}
    assert names["control_tiny_sd15"].kind == "controlnet"
    assert names["tiny_controlnet_folder"].kind == "controlnet"
    eng = Engine(settings)
    try:
        unit = ControlUnit("control_tiny_sd15", image=str(cn["hint"]), weight=0.5)
        made = eng.generate(make_request(control_units=(unit,)))[0]
        text = to_infotext(made.request, made.info)
        title = made.info.control_models["control_tiny_sd15"]
        assert title.startswith("control_tiny_sd15 [") and f"Model: {title}" in text
        parsed = parse_infotext(text).request.control_units
        assert parsed[0].model == title and parsed[0].weight == 0.5
        again = eng.generate(make_request(control_units=(parsed[0].replace(
            image=str(cn["hint"])),)))[0]  # the restored unit finds the same model by name
        assert np.array_equal(np.asarray(again.image), np.asarray(made.image))
    finally:
        eng.unload()


def test_img2img_and_inpaint_and_only_masked(engines: Callable[[str], Any],
                                             make_request: Callable[..., Any],
                                             cn: dict[str, Path],
                                             input_images: dict[str, Path]) -> None:
    eng = engines("sd1")
    for extra in ({"init_image": str(input_images["init"])},
                  {"init_image": str(input_images["init"]), "mask": str(input_images["mask"])},
                  {"init_image": str(input_images["init"]), "mask": str(input_images["mask"]),
                   "inpaint_only_masked": True}):
        plain = _image(eng, make_request(**extra))
        # image None: the init image is the control image
        with_cn = _image(eng, make_request(**extra, control_units=(
            ControlUnit(str(cn["original"])),)))
        assert with_cn.shape == plain.shape and not np.array_equal(with_cn, plain), extra


def test_hires_second_pass_gets_the_control_at_the_target_size(
        engines: Callable[[str], Any], make_request: Callable[..., Any],
        cn: dict[str, Path]) -> None:
    eng = engines("sd1")
    request = make_request(steps=2, hires=True, hires_scale=1.5, hires_steps=2,
                           control_units=(_unit(cn, resize_mode="Just Resize"),))
    made = eng.generate(request)[0]
    assert made.image.size == (96, 96)
    plain = eng.generate(request.replace(control_units=()))[0]
    assert not np.array_equal(np.asarray(made.image), np.asarray(plain.image))


def test_canny_module_runs_through_the_preprocessor(engines: Callable[[str], Any],
                                                    make_request: Callable[..., Any],
                                                    cn: dict[str, Path]) -> None:
    eng = engines("sd1")
    none = _image(eng, make_request(control_units=(_unit(cn),)))
    canny = _image(eng, make_request(control_units=(_unit(cn, module="canny"),)))
    assert not np.array_equal(none, canny)


def test_t2i_adapters_in_diffusers_layout(engines: Callable[[str], Any],
                                          make_request: Callable[..., Any],
                                          cn: dict[str, Path],
                                          monkeypatch: pytest.MonkeyPatch) -> None:
    # the tiny UNets begin with a plain block, as SDXL's: SDXL's adapter type fits them
    eng = engines("sdxl")

    def make(**kw: Any) -> Any:
        return make_request("sdxl", **kw)

    plain = _image(eng, make())
    folder = _image(eng, make(control_units=(_unit(cn, "xl-adapter-folder"),)))
    single = _image(eng, make(control_units=(_unit(cn, "xl-adapter-file"),)))
    assert not np.array_equal(folder, plain) and np.array_equal(folder, single)
    zero = _image(eng, make(control_units=(_unit(cn, "xl-adapter-file", weight=0.0),)))
    assert np.array_equal(zero, plain)
    soft = _image(eng, make(control_units=(_unit(
        cn, "xl-adapter-file", control_mode="My prompt is more important"),)))
    assert not np.array_equal(soft, single)
    seen: list[int] = []
    original = controlnet.ControlConditioning.adapter_residuals

    def spy(self: Any, sample: Any, index: int, total: int) -> Any:
        out = original(self, sample, index, total)
        if out is not None:
            seen.append(index)
        return out

    monkeypatch.setattr(controlnet.ControlConditioning, "adapter_residuals", spy)
    eng.generate(make(steps=4, sampler="Euler", control_units=(
        _unit(cn, "xl-adapter-file", guidance_start=0.5),)))
    assert seen == [2, 3]


def test_an_sd1_adapter_file_reads_its_shape(engines: Callable[[str], Any],
                                             cn: dict[str, Path]) -> None:
    from safetensors.torch import load_file

    config = controlnet.adapter_config(load_file(str(cn["adapter-file"])))
    assert config == {"in_channels": 3, "channels": [32, 64], "num_res_blocks": 2,
                      "downscale_factor": 8, "adapter_type": "full_adapter"}
    unet = engines("sd1")._model.pipes.base.unet
    adapter = controlnet.load_adapter(cn["adapter-file"], unet, model_name="tiny",
                                      model_arch="sd1", device=torch.device("cpu"),
                                      dtype=torch.float32)
    features = adapter(torch.rand(1, 3, 64, 64))
    assert [tuple(f.shape) for f in features] == [(1, 32, 8, 8), (1, 64, 4, 4)]


def test_a_t2i_adapter_for_another_model_or_layout_is_refused(
        engines: Callable[[str], Any], make_request: Callable[..., Any],
        cn: dict[str, Path], tmp_path: Path) -> None:
    with pytest.raises(RequestError, match="is a T2I-Adapter for"):
        engines("sdxl").generate(make_request("sdxl", control_units=(
            _unit(cn, "adapter-file"),)))
    with pytest.raises(RequestError, match="is a T2I-Adapter for SDXL"):
        engines("sd1").generate(make_request(control_units=(
            _unit(cn, "xl-adapter-file"),)))
    from safetensors.torch import load_file, save_file

    state = load_file(str(cn["adapter-file"]))
    original = tmp_path / "t2iadapter_canny_sd14v1.safetensors"  # TencentARC's names
    save_file({k.removeprefix("adapter."): v for k, v in state.items()}, original)
    with pytest.raises(ModelError, match="original layout are not supported"):
        engines("sd1").generate(make_request(control_units=(
            _unit(cn).replace(model=str(original)),)))
