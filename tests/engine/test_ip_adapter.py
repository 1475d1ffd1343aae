"""IP-Adapter (engine/ip_adapter.py): tiny random adapters and CLIP image encoders written as
people get them (safetensors / .bin adapters, a transformers encoder folder or one file) and
loaded through the engine's own code, in real generations on the tiny models."""

from __future__ import annotations

import os
import pickle
from collections.abc import Callable, Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image

from sdstudio.core import paths
from sdstudio.core.control import ControlUnit
from sdstudio.core.errors import ModelError, RequestError
from sdstudio.core.metadata import parse_infotext, to_infotext
from sdstudio.engine import clip_vision, ip_adapter
from sdstudio.engine.tiny_ip_adapter import (
    build_tiny_clip_vision,
    build_tiny_ip_adapter,
    save_ip_adapter,
    tiny_ip_adapter_state,
)

MODULE = "ip-adapter_clip_sd15"


@pytest.fixture(scope="module")
def files(engines: Callable[[str], Any], tmp_path_factory: pytest.TempPathFactory
          ) -> dict[str, Path]:
    """Adapters for the tiny SD1 UNet (plain as safetensors and .bin, Plus, full-face, one
    needing an encoder nobody has), reference images, and the encoder in SD Studio's own
    clip_vision folder."""
    root = tmp_path_factory.mktemp("ip-adapter")
    unet = engines("sd1")._model.pipes.base.unet
    encoder = paths.model_dir("clip_vision") / "tiny-clip-vit"
    if not encoder.exists():
        build_tiny_clip_vision(encoder)
    out = {"encoder": encoder}
    for variant in ("plain", "plus", "full-face"):
        out[variant] = build_tiny_ip_adapter(root / f"ip-adapter-{variant}_tiny.safetensors",
                                             unet, variant=variant, seed=1)
    out["bin"] = build_tiny_ip_adapter(root / "ip-adapter-plain_tiny.bin", unet, seed=1)
    out["other"] = build_tiny_ip_adapter(root / "ip-adapter-b_tiny.safetensors", unet, seed=2)
    out["wide"] = build_tiny_ip_adapter(root / "ip-adapter-wide.safetensors", unet,
                                        encoder={"projection_dim": 24})
    rng = np.random.RandomState(5)
    for name in ("ref1", "ref2"):
        out[name] = root / f"{name}.png"
        Image.fromarray((rng.rand(40, 56, 3) * 255).astype(np.uint8)).save(out[name])
    return out


@pytest.fixture()
def sd1(engines: Callable[[str], Any]) -> Iterator[Any]:
    eng = engines("sd1")
    yield eng
    if eng._model is not None and eng._model.ip_adapters is not None:  # leave it plain
        eng._model.ip_adapters.unload()
        eng._model.ip_adapters = None


def _unit(path: Path, image: Path | None = None, **kw: Any) -> ControlUnit:
    return ControlUnit(model=str(path), image=None if image is None else str(image),
                       module=kw.pop("module", MODULE), **kw)


def _pixels(events: list[Any]) -> list[np.ndarray]:
    return [np.asarray(e.image, dtype=np.int16) for e in events]


def _gen(eng: Any, make_request: Callable[..., Any], *units: ControlUnit, **kw: Any
         ) -> np.ndarray:
    return _pixels(eng.generate(make_request(control_units=units, **kw)))[0]


def _scales_per_call(eng: Any) -> tuple[list[list[float]], Any]:
    """The first adapter processor's scales as each UNet evaluation used them."""
    seen: list[list[float]] = []
    unet = eng._model.pipes.base.unet

    def after(_module: Any, _args: Any, _out: Any) -> None:
        procs = [p for p in unet.attn_processors.values() if ip_adapter._is_ip_processor(p)]
        seen.append(list(procs[0].scale) if procs else [])

    return seen, unet.register_forward_hook(after)


def test_weight_zero_equals_no_adapter_and_weight_changes_it(
        sd1: Any, make_request: Callable[..., Any], files: dict[str, Path]) -> None:
    plain = _gen(sd1, make_request)
    zero = _gen(sd1, make_request, _unit(files["plain"], files["ref1"], weight=0.0))
    assert np.array_equal(zero, plain)
    one = _gen(sd1, make_request, _unit(files["plain"], files["ref1"], weight=1.0))
    assert np.abs(one - plain).max() > 8
    other_image = _gen(sd1, make_request, _unit(files["plain"], files["ref2"], weight=1.0))
    assert not np.array_equal(other_image, one)  # the reference image matters
    # no unit: the adapter is removed and the UNet is its own again
    assert np.array_equal(_gen(sd1, make_request), plain)
    assert sd1._model.ip_adapters is None
    assert sd1._model.pipes.base.unet.encoder_hid_proj is None


def test_adapter_kept_loaded_between_generations(
        sd1: Any, make_request: Callable[..., Any], files: dict[str, Path]) -> None:
    first = _gen(sd1, make_request, _unit(files["plain"], files["ref1"]))
    loaded = sd1._model.ip_adapters
    assert loaded is not None and loaded.nbytes > 0
    again = _gen(sd1, make_request, _unit(files["plain"], files["ref1"], weight=1.0))
    assert sd1._model.ip_adapters is loaded  # not read or loaded again
    assert np.array_equal(first, again)
    _gen(sd1, make_request, _unit(files["other"], files["ref1"]))
    assert sd1._model.ip_adapters is not loaded  # another file: the set is replaced


def test_memory_policy_counts_adapter_and_encoder(
        sd1: Any, make_request: Callable[..., Any], files: dict[str, Path],
        monkeypatch: pytest.MonkeyPatch) -> None:
    sizes: list[int] = []
    original = sd1._plan

    def plan(choice: Any, model_bytes: int, *args: Any, **kwargs: Any) -> Any:
        sizes.append(model_bytes)
        return original(choice, model_bytes, *args, **kwargs)

    monkeypatch.setattr(sd1, "_plan", plan)
    _gen(sd1, make_request, _unit(files["plain"], files["ref1"]))
    loaded = sd1._model.ip_adapters
    encoder = next(iter(loaded.encoders.values()))
    assert loaded.nbytes >= clip_vision.module_bytes(encoder) > 0
    assert sizes[-1] == sd1._model.model_bytes + loaded.nbytes


@pytest.mark.parametrize(("start", "end", "expected"), [
    (0.5, 1.0, [0.0, 0.0, 0.8, 0.8]),
    (0.0, 0.25, [0.8, 0.8, 0.0, 0.0]),
    (0.25, 0.5, [0.0, 0.8, 0.8, 0.0]),
])
def test_guidance_start_and_end(sd1: Any, make_request: Callable[..., Any],
                                files: dict[str, Path], start: float, end: float,
                                expected: list[float]) -> None:
    _gen(sd1, make_request, _unit(files["plain"], files["ref1"]), steps=4)  # loaded
    seen, handle = _scales_per_call(sd1)
    try:
        windowed = _gen(sd1, make_request, _unit(files["plain"], files["ref1"], weight=0.8,
                                                 guidance_start=start, guidance_end=end),
                        steps=4)
    finally:
        handle.remove()
    assert [s[0] for s in seen] == pytest.approx(expected)  # step i of 4 at i/4
    full = _gen(sd1, make_request, _unit(files["plain"], files["ref1"], weight=0.8), steps=4)
    assert not np.array_equal(windowed, full)


def test_window_past_every_step_equals_no_adapter(
        sd1: Any, make_request: Callable[..., Any], files: dict[str, Path]) -> None:
    plain = _gen(sd1, make_request, steps=4)
    late = _gen(sd1, make_request, _unit(files["plain"], files["ref1"], guidance_start=1.0,
                                         guidance_end=1.0), steps=4)
    assert np.array_equal(late, plain)  # fractions 0, 1/4, 2/4, 3/4: never inside [1, 1]


def test_two_reference_images(sd1: Any, make_request: Callable[..., Any],
                              files: dict[str, Path]) -> None:
    one = _gen(sd1, make_request, _unit(files["plain"], files["ref1"]))
    two = _gen(sd1, make_request, _unit(files["plain"], files["ref1"]),
               _unit(files["plain"], files["ref2"], weight=0.7))
    unet = sd1._model.pipes.base.unet
    assert len(unet.encoder_hid_proj.image_projection_layers) == 2
    assert not np.array_equal(one, two)
    second_off = _gen(sd1, make_request, _unit(files["plain"], files["ref1"]),
                      _unit(files["plain"], files["ref2"], weight=0.0))
    assert np.array_equal(second_off, one)  # each unit has its own scale
    disabled = _gen(sd1, make_request, _unit(files["plain"], files["ref1"]),
                    _unit(files["plain"], files["ref2"], enabled=False))
    assert np.array_equal(disabled, one)


@pytest.mark.parametrize("variant", ["plus", "full-face"])
def test_plus_and_full_face_adapters(sd1: Any, make_request: Callable[..., Any],
                                     files: dict[str, Path], variant: str) -> None:
    plain = _gen(sd1, make_request)
    zero = _gen(sd1, make_request, _unit(files[variant], files["ref1"], weight=0.0))
    used = _gen(sd1, make_request, _unit(files[variant], files["ref1"]))
    assert np.array_equal(zero, plain)
    assert not np.array_equal(used, plain)
    assert ip_adapter.read_adapter(files[variant]).variant == variant


def test_bin_adapter_loads_safely_as_the_safetensors_one(
        sd1: Any, make_request: Callable[..., Any], files: dict[str, Path]) -> None:
    a = _gen(sd1, make_request, _unit(files["plain"], files["ref1"]))
    b = _gen(sd1, make_request, _unit(files["bin"], files["ref1"]))
    assert np.array_equal(a, b)


def test_image_modes_and_hires_pass(sd1: Any, make_request: Callable[..., Any],
                                    files: dict[str, Path], input_images: dict[str, Path]
                                    ) -> None:
    init = str(input_images["init"])
    for extra in ({"init_image": init, "strength": 0.8},
                  {"init_image": init, "mask": str(input_images["mask"])}):
        plain = _gen(sd1, make_request, **extra)
        # no image in the unit: the init image is the reference
        used = _gen(sd1, make_request, _unit(files["plain"]), **extra)
        assert not np.array_equal(used, plain), extra
    hires = {"hires": True, "hires_scale": 1.5, "hires_upscaler": "Latent",
             "hires_steps": 2, "hires_denoising": 0.6}
    _gen(sd1, make_request, _unit(files["plain"], files["ref1"]), **hires)
    seen, handle = _scales_per_call(sd1)
    try:
        events = sd1.generate(make_request(control_units=(
            _unit(files["plain"], files["ref1"], weight=0.9),), **hires))
    finally:
        handle.remove()
    assert events[0].image.size == (96, 96)
    assert len(seen) > 3 and all(s == [pytest.approx(0.9)] for s in seen)  # both passes


@pytest.mark.parametrize("sampler", ["DPM++ 2M", "Heun", "Euler a"])
def test_a1111_samplers_with_an_adapter(sd1: Any, make_request: Callable[..., Any],
                                        files: dict[str, Path], sampler: str) -> None:
    plain = _gen(sd1, make_request, sampler=sampler)
    zero = _gen(sd1, make_request, _unit(files["plain"], files["ref1"], weight=0.0),
                sampler=sampler)
    used = _gen(sd1, make_request, _unit(files["plain"], files["ref1"]), sampler=sampler)
    assert np.array_equal(zero, plain)
    assert not np.array_equal(used, plain)


def test_sd1_adapter_on_sdxl_is_refused(engines: Callable[[str], Any],
                                        make_request: Callable[..., Any],
                                        files: dict[str, Path]) -> None:
    eng = engines("sdxl")
    with pytest.raises(RequestError) as err:
        eng.generate(make_request("sdxl", control_units=(_unit(files["plain"], files["ref1"],
                                                                module="ip-adapter_clip_sdxl"),)))
    text = str(err.value)
    assert "\n" not in text and "cross-attention 32" in text and "cross-attention 64" in text
    assert eng._model.ip_adapters is None
    assert eng._model.pipes.base.unet.encoder_hid_proj is None
    assert len(eng.generate(make_request("sdxl"))) == 1  # still usable


def test_refusal_names_the_real_families() -> None:
    state = {"image_proj": {"proj.weight": torch.zeros(4 * 768, 1024),
                            "norm.weight": torch.ones(768)},
             "ip_adapter": {"1.to_k_ip.weight": torch.zeros(320, 768)}}
    adapter = ip_adapter.AdapterWeights(
        path=Path("ip-adapter_sd15.safetensors"), variant="plain",
        image_proj=state["image_proj"], ip_adapter=state["ip_adapter"], cross_dim=768,
        input_width=1024, projected=True)
    unet = SimpleNamespace(config=SimpleNamespace(cross_attention_dim=2048))
    with pytest.raises(RequestError, match=r"IP-Adapter ip-adapter_sd15 is for SD 1\.x "
                                           r"\(cross-attention 768\); sdxl-base is SDXL "
                                           r"\(cross-attention 2048\)"):
        ip_adapter.check_fits(adapter, unet, "sdxl-base")


def test_missing_image_encoder_is_refused_clearly(
        sd1: Any, make_request: Callable[..., Any], files: dict[str, Path]) -> None:
    with pytest.raises(ModelError) as err:
        _gen(sd1, make_request, _unit(files["wide"], files["ref1"]))
    text = str(err.value)
    assert "\n" not in text
    assert "needs its CLIP image encoder" in text and "projection width 24" in text
    assert str(paths.model_dir("clip_vision")) in text
    assert sd1._model.pipes.base.unet.encoder_hid_proj is None  # nothing half-loaded


def test_encoder_beside_the_adapter_and_as_one_file(
        tmp_path: Path, files: dict[str, Path]) -> None:
    folder = build_tiny_clip_vision(tmp_path / "models" / "image_encoder", seed=3)
    single = build_tiny_clip_vision(tmp_path / "cv" / "clip_h.safetensors", seed=3,
                                    single_file=True)
    adapter = tmp_path / "models" / "ip-adapter_sd15.safetensors"
    dirs = clip_vision.clip_vision_dirs([], adapter)
    assert dirs[0] == folder
    found = clip_vision.find_encoder(dirs, width=16, projected=True)
    assert found is not None and found.path == folder
    one = clip_vision.describe(single)
    assert one is not None and (one.width, one.projection, one.image_size) == (32, 16, 32)
    image = Image.open(files["ref1"])
    cpu = torch.device("cpu")
    a = clip_vision.encode(clip_vision.load_encoder(found, device=cpu, dtype=torch.float32),
                           image, hidden=False)
    b = clip_vision.encode(clip_vision.load_encoder(one, device=cpu, dtype=torch.float32),
                           image, hidden=False)
    assert torch.allclose(a[0], b[0], atol=1e-6) and not a[1].any()  # uncond: zeros
    hidden = clip_vision.encode(clip_vision.load_encoder(one, device=cpu, dtype=torch.float32),
                                image, hidden=True)
    assert hidden[0].shape == (1, 17, 32) and hidden[1].any()  # 4x4 patches + class token


class _Boom:
    def __reduce__(self) -> tuple[Any, tuple[str]]:
        return (os.system, ("touch /tmp/sdstudio-ip-adapter-pwned",))


def test_hostile_bin_is_refused(sd1: Any, make_request: Callable[..., Any],
                                files: dict[str, Path], tmp_path: Path) -> None:
    marker = Path("/tmp/sdstudio-ip-adapter-pwned")
    marker.unlink(missing_ok=True)
    bad = tmp_path / "ip-adapter_evil.bin"
    bad.write_bytes(pickle.dumps({"image_proj": _Boom(), "ip_adapter": {}}))
    with pytest.raises(ModelError) as err:
        _gen(sd1, make_request, _unit(bad, files["ref1"]))
    assert "\n" not in str(err.value)
    assert not marker.exists()
    zipped = tmp_path / "ip-adapter_evil2.bin"
    torch.save({"image_proj": {"proj.weight": torch.zeros(1)}, "x": _Boom()}, zipped)
    with pytest.raises(ModelError):
        ip_adapter.read_adapter(zipped)
    assert not marker.exists()


def test_face_id_and_other_files_are_refused(tmp_path: Path, engines: Callable[[str], Any],
                                             files: dict[str, Path]) -> None:
    unet = engines("sd1")._model.pipes.base.unet
    state = tiny_ip_adapter_state(unet)
    state["image_proj"] = {"perceiver_resampler.proj_in.weight": torch.zeros(4, 4),
                           "proj.0.weight": torch.zeros(4, 4)}
    face = save_ip_adapter(state, tmp_path / "ip-adapter-faceid-plus_sd15.safetensors")
    with pytest.raises(ModelError, match="Face ID IP-Adapters need InsightFace"):
        ip_adapter.read_adapter(face)
    not_adapter = tmp_path / "model.safetensors"
    from safetensors.torch import save_file

    save_file({"weight": torch.zeros(2)}, str(not_adapter))
    with pytest.raises(ModelError, match="not an IP-Adapter"):
        ip_adapter.read_adapter(not_adapter)


def test_a_controlnet_model_with_an_ip_adapter_module_is_refused(
        sd1: Any, make_request: Callable[..., Any], files: dict[str, Path],
        tmp_path: Path) -> None:
    from safetensors.torch import save_file

    fake = tmp_path / "control_fake.safetensors"
    save_file({"input_hint_block.0.weight": torch.zeros(2)}, str(fake))
    with pytest.raises(RequestError, match="needs an IP-Adapter model"):
        _gen(sd1, make_request, _unit(fake, files["ref1"]))


def test_infotext_round_trip(sd1: Any, make_request: Callable[..., Any],
                             files: dict[str, Path]) -> None:
    unit = _unit(files["plain"], files["ref1"], weight=0.75, guidance_start=0.25,
                 guidance_end=0.75)
    event = sd1.generate(make_request(control_units=(unit,)))[0]
    text = to_infotext(event.request, event.info)
    line = next(p for p in text.split(", ControlNet 0: ")[1:])
    assert line.startswith('"Module: ip-adapter_clip_sd15, Model: ip-adapter-plain_tiny [')
    assert "Weight: 0.75" in line and "Guidance Start: 0.25" in line
    parsed = parse_infotext(text).request
    (back,) = parsed.control_units
    assert back.module == MODULE and back.model.startswith("ip-adapter-plain_tiny")
    assert (back.weight, back.guidance_start, back.guidance_end) == (0.75, 0.25, 0.75)


def test_with_a_controlnet_unit(sd1: Any, make_request: Callable[..., Any],
                                files: dict[str, Path], tiny_models: dict[str, Path],
                                tmp_path_factory: pytest.TempPathFactory) -> None:
    from tests.engine._controlnet_fixtures import build_controlnets

    control = build_controlnets(tiny_models["sd1"], tmp_path_factory.mktemp("cn"))["original"]
    cn = ControlUnit(model=str(control), image=str(files["ref2"]), weight=1.0)
    ip = _unit(files["plain"], files["ref1"])
    only_cn = _gen(sd1, make_request, cn)
    only_ip = _gen(sd1, make_request, ip)
    both = _gen(sd1, make_request, cn, ip)
    assert not np.array_equal(both, only_cn) and not np.array_equal(both, only_ip)
    assert np.array_equal(_gen(sd1, make_request, cn, ip.replace(weight=0.0)), only_cn)
    assert np.array_equal(_gen(sd1, make_request, cn.replace(weight=0.0), ip), only_ip)


def test_several_images_per_run(sd1: Any, make_request: Callable[..., Any],
                                files: dict[str, Path]) -> None:
    kw = {"batch_size": 2, "batch_count": 2}
    plain = _pixels(sd1.generate(make_request(**kw)))
    zero = _pixels(sd1.generate(make_request(control_units=(
        _unit(files["plain"], files["ref1"], weight=0.0),), **kw)))
    used = _pixels(sd1.generate(make_request(control_units=(
        _unit(files["plain"], files["ref1"]),), **kw)))
    assert len(used) == 4
    assert all(np.array_equal(a, b) for a, b in zip(plain, zero, strict=True))
    assert all(not np.array_equal(a, b) for a, b in zip(plain, used, strict=True))


def test_attention_slicing_keeps_the_adapter(sd1: Any, make_request: Callable[..., Any],
                                             files: dict[str, Path],
                                             tiny_models: dict[str, Path]) -> None:
    from diffusers.models.attention_processor import SlicedAttnProcessor

    from sdstudio.core.settings import EngineSettings
    from sdstudio.engine import Engine

    unit = _unit(files["plain"], files["ref1"])
    reference = _gen(sd1, make_request, unit)
    sliced: Any = Engine(EngineSettings(attention_slicing="on"))
    try:
        sliced.load(str(tiny_models["sd1"]))
        plain = _gen(sliced, make_request)
        used = _gen(sliced, make_request, unit)  # slicing turned on after the adapter loaded
        assert sliced._model.attention_slicing
        assert np.abs(used - reference).max() <= 2  # the adapter acted, sliced or not
        assert np.abs(used - plain).max() > 8
        unet = sliced._model.pipes.base.unet
        _gen(sliced, make_request)  # removed: cross-attention sliced again, as self-attention
        assert all(isinstance(p, SlicedAttnProcessor) for p in unet.attn_processors.values())
        _gen(sliced, make_request, unit)
        kept = sliced._model.ip_adapters
        sliced.load(str(tiny_models["sd1-inpaint"]))  # another checkpoint: all of it freed
        assert kept is not None and not kept.encoders and sliced._model.ip_adapters is None
    finally:
        sliced.unload()


def test_weights_that_do_not_load_are_one_line(sd1: Any, make_request: Callable[..., Any],
                                               files: dict[str, Path], tmp_path: Path) -> None:
    unet = sd1._model.pipes.base.unet
    state = tiny_ip_adapter_state(unet, variant="plus")
    state["image_proj"]["layers.0.1.1.weight"] = torch.zeros(3, 3)  # the resampler is wrong
    bad = save_ip_adapter(state, tmp_path / "ip-adapter-plus_broken.safetensors")
    plain = _gen(sd1, make_request)
    with pytest.raises(ModelError, match="IP-Adapter ip-adapter-plus_broken: its weights do "
                                         "not load") as err:
        _gen(sd1, make_request, _unit(bad, files["ref1"]))
    assert "\n" not in str(err.value)
    assert unet.encoder_hid_proj is None
    assert not any(ip_adapter._is_ip_processor(p) for p in unet.attn_processors.values())
    assert np.array_equal(_gen(sd1, make_request), plain)  # nothing else changed


def test_bench_script_smoke(tmp_path: Path) -> None:
    """bench/ip_adapter.py end to end on the tiny model (the real-size run is the lead's)."""
    import json
    import subprocess
    import sys

    bench = Path(__file__).resolve().parents[2] / "bench" / "ip_adapter.py"
    out = subprocess.run([sys.executable, str(bench), "--smoke", "--work-dir", str(tmp_path),
                          "--json", str(tmp_path / "r.json")], capture_output=True, text=True,
                         timeout=600)
    assert out.returncode == 0, out.stderr[-2000:]
    data = json.loads((tmp_path / "r.json").read_text())
    assert data["sdstudio"]["ip_s"] > 0 and data["diffusers"]["load_s"] > 0
    assert "load adapter + encoder" in out.stdout
