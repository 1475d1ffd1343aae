"""Control units (core/control.py): checking, the CLI / JSON / prompt-list forms, the
ControlNet extension's infotext (ours round trip; real samples of its formats parse), the
old short hash and the torch-free listing."""

from __future__ import annotations

import hashlib
import json
import struct
from pathlib import Path
from typing import Any

import pytest

from sdstudio.cli import build_parser, request_from_args
from sdstudio.core import control
from sdstudio.core.control import ControlUnit, parse_unit_option
from sdstudio.core.errors import RequestError
from sdstudio.core.metadata import parse_infotext, to_infotext
from sdstudio.core.prompts import parse_prompt_list
from sdstudio.core.request import GenerationInfo, GenerationRequest
from sdstudio.core.settings import EngineSettings

DATA = Path(__file__).parent / "data" / "controlnet_infotexts.txt"


def _samples() -> list[str]:
    text = DATA.read_text(encoding="utf-8")
    blocks = text.split("\n----\n")[1:]
    return [b.strip() for b in blocks]


# (units, first unit: module, model, weight, start, end, mode, resize, pixel perfect,
#  processor res, threshold a, threshold b)
EXPECTED: list[tuple[Any, ...]] = [
    (2, "canny", "control_v11p_sd15_canny [d14c016b]", 1.0, 0.0, 1.0,
     "ControlNet is more important", "Crop and Resize", False, 512, 192.0, 255.0),
    (1, "tile_resample", "control_v11f1e_sd15_tile_fp16 [3b860298]", 0.6, 0.0, 1.0,
     "Balanced", "Crop and Resize", True, 512, 1.0, 0.5),
    (1, "lineart_standard", "control_v11p_sd15_lineart [43d4be0d]", 1.0, 0.0, 1.0,
     "Balanced", "Resize and Fill", False, 512, -1.0, -1.0),
    (1, "none", "qrCodeMonster_v20 [5e5778cb]", 1.1, 0.15, 1.0, "Balanced",
     "Crop and Resize", True, 512, -1.0, -1.0),
    (1, "tile_resample", "control_v11f1e_sd15_tile", 0.6, 0.0, 1.0,
     "My prompt is more important", "Crop and Resize", True, 512, 1.0, 1.0),
    (1, "lineart_coarse", "control_v11p_sd15_lineart [43d4be0d]", 0.6, 0.1, 0.8,
     "ControlNet is more important", "Crop and Resize", True, 512, 32.0, 64.0),
    (1, "openpose", "control_v11p_sd15_openpose [cab727d4]", 1.0, 0.0, 1.0, "Balanced",
     "Crop and Resize", False, 512, 64.0, 64.0),
    (1, "dw_openpose_full", "control_v11p_sd15_openpose", 1.0, 0.0, 1.0, "Balanced",
     "Crop and Resize", False, 1024, -1.0, -1.0),
    (2, "canny", "control_canny-fp16 [e3fe7712]", 0.5, 0.0, 1.0, "Balanced",
     "Crop and Resize", False, 512, -1.0, -1.0),
]


@pytest.mark.parametrize(("text", "expected"), list(zip(_samples(), EXPECTED, strict=True)))
def test_real_extension_infotexts_parse(text: str, expected: tuple[Any, ...]) -> None:
    parsed = parse_infotext(text)
    units = parsed.request.control_units
    assert len(units) == expected[0]
    u = units[0]
    got = (u.module, u.model, u.weight, u.guidance_start, u.guidance_end, u.control_mode,
           u.resize_mode, u.pixel_perfect, u.processor_res, u.threshold_a, u.threshold_b)
    assert got == expected[1:]
    assert not any(k.lower().startswith("controlnet") for k in parsed.extras), parsed.extras
    assert parsed.request.replace(init_image="x.png").validated()  # what runs, checks


def test_second_units_of_the_samples() -> None:
    samples = _samples()
    second = parse_infotext(samples[0]).request.control_units[1]
    assert (second.module, second.threshold_a) == ("softedge_pidinet", 0.5)
    old = parse_infotext(samples[-1]).request.control_units[1]
    assert (old.module, old.model, old.weight) == ("normal_midas",
                                                   "control_normal-fp16 [63f96f7c]", 0.5)


def test_infotext_written_as_the_extension_writes_it() -> None:
    unit = ControlUnit("/models/cn/control_v11p_sd15_canny.pth", image="/x/edge.png",
                       module="canny", threshold_a=100, threshold_b=200)
    request = GenerationRequest(prompt="a cat", control_units=(
        unit, ControlUnit("off", enabled=False, image="/y.png"),
        ControlUnit("depth", image="/z.png", weight=0.5)))
    info = GenerationInfo(control_models={unit.model: "control_v11p_sd15_canny [d14c016b]"})
    text = to_infotext(request, info)
    assert ('ControlNet 0: "Module: canny, Model: control_v11p_sd15_canny [d14c016b], '
            'Weight: 1.0, Resize Mode: Crop and Resize, Processor Res: 512, Threshold A: '
            '100.0, Threshold B: 200.0, Guidance Start: 0.0, Guidance End: 1.0, Pixel '
            'Perfect: False, Control Mode: Balanced"') in text
    assert "ControlNet 1:" not in text  # disabled: not written (as the extension)
    assert 'ControlNet 2: "Module: none, Model: depth, Weight: 0.5' in text
    assert "/models" not in text and "edge.png" not in text  # no paths in an image
    back = parse_infotext(text).request.control_units
    assert [u.model for u in back] == ["control_v11p_sd15_canny [d14c016b]", "depth"]
    assert back[0] == unit.replace(model=back[0].model, image=None)


def test_cli_option() -> None:
    u = parse_unit_option("control_v11p_sd15_canny, image=edges.png, module=Canny, "
                          "weight=0.8,start=0.1,end=0.9,mode=prompt,resize=fill,"
                          "pixel-perfect,res=768,threshold-a=50,threshold-b=150")
    assert u == ControlUnit("control_v11p_sd15_canny", image="edges.png", module="canny",
                            weight=0.8, guidance_start=0.1, guidance_end=0.9,
                            control_mode="My prompt is more important",
                            resize_mode="Resize and Fill", pixel_perfect=True,
                            processor_res=768, threshold_a=50.0, threshold_b=150.0)
    assert parse_unit_option(control.option_text(u)) == u
    for bad, why in (("image=x.png", "give the control model first"),
                     ("m,colour=red", "unknown control unit setting 'colour'"),
                     ("m,weight=heavy", "could not convert"), ("m,loud", "not key=value")):
        with pytest.raises(ValueError, match=why):
            parse_unit_option(bad)


def test_generate_options_make_units_with_absolute_images(tmp_path: Path,
                                                          monkeypatch: pytest.MonkeyPatch
                                                          ) -> None:
    monkeypatch.chdir(tmp_path)
    args = build_parser().parse_args([
        "generate", "-p", "x", "--control", "cn_a,image=a.png,weight=0.5",
        "--control", "./cn/b.safetensors,image=b.png,mode=controlnet"])
    units = request_from_args(args).control_units
    assert [u.image for u in units] == [str(tmp_path / "a.png"), str(tmp_path / "b.png")]
    assert units[0].model == "cn_a" and units[1].model == str(tmp_path / "cn/b.safetensors")
    assert units[1].control_mode == "ControlNet is more important"
    with pytest.raises(SystemExit):
        build_parser().parse_args(["generate", "-p", "x", "--control", "m,weight=x"])


@pytest.mark.parametrize(("unit", "message"), [
    (ControlUnit("m", image="a.png", weight=3), "weight must be between 0 and 2"),
    (ControlUnit("m", image="a.png", guidance_start=0.8, guidance_end=0.2),
     "guidance start 0.8 is after guidance end 0.2"),
    (ControlUnit("m", image="a.png", control_mode="Loud"), "control mode must be one of"),
    (ControlUnit("m", image="a.png", resize_mode="Stretch"), "resize mode must be one of"),
    (ControlUnit("m", image="a.png", processor_res=10), "processor resolution must be"),
    (ControlUnit("m", image="a.png", module="nonsense"), "unknown preprocessor 'nonsense'"),
    (ControlUnit(" ", image="a.png"), "no control model"),
    (ControlUnit("m"), "needs a control image"),
])
def test_bad_units_are_one_line(unit: ControlUnit, message: str) -> None:
    with pytest.raises(RequestError, match=message) as err:
        GenerationRequest(prompt="x", control_units=(unit,)).validated()
    assert err.value.field == "control_units" and "\n" not in str(err.value)


def test_prompt_list_lines_name_control_images(tmp_path: Path) -> None:
    text = ('{"prompt": "a", "control_units": [{"model": "cn", "image": "pose1.png", '
            '"weight": 0.7}]}\n{"prompt": "b", "control": "cn,image=pose2.png;cn2,image=d.png"}\n'
            '{"prompt": "c", "control_units": [{"model": "cn", "image": "p.png", "wat": 1}]}\n')
    parsed = parse_prompt_list(text, format="jsonl")
    first, second = (item.request.control_units for item in parsed.items)
    assert first == (ControlUnit("cn", image="pose1.png", weight=0.7),)
    assert [u.image for u in second] == ["pose2.png", "d.png"]
    assert len(parsed.errors) == 1 and "unknown control unit setting 'wat'" in str(
        parsed.errors[0])
    txt = parse_prompt_list('--prompt "a fox" --control "cn,image=fox.png,end=0.5"\n',
                            format="txt")
    assert txt.items[0].request.control_units[0].guidance_end == 0.5
    request = GenerationRequest.from_dict(json.loads(json.dumps(
        first_request(parsed).to_dict())))
    assert request.control_units == first


def first_request(parsed: Any) -> GenerationRequest:
    request: GenerationRequest = parsed.items[0].request
    return request


def _safetensors(path: Path, shapes: dict[str, list[int]]) -> Path:
    header: dict[str, Any] = {}
    offset = 0
    for name, shape in shapes.items():
        size = 4
        for d in shape:
            size *= d
        header[name] = {"dtype": "F32", "shape": shape, "data_offsets": [offset, offset + size]}
        offset += size
    raw = json.dumps(header).encode()
    path.write_bytes(struct.pack("<Q", len(raw)) + raw + b"\0" * offset)
    return path


def test_listing_reads_kind_and_architecture_from_headers(tmp_path: Path) -> None:
    folder = tmp_path / "ControlNet"
    folder.mkdir()
    _safetensors(folder / "control_v11p_sd15_canny.safetensors", {
        "control_model.input_hint_block.0.weight": [16, 3, 3, 3],
        "control_model.input_blocks.1.1.transformer_blocks.0.attn2.to_k.weight": [320, 768]})
    _safetensors(folder / "sdxl_canny.safetensors", {
        "controlnet_cond_embedding.conv_in.weight": [16, 3, 3, 3],
        "add_embedding.linear_1.weight": [1280, 2816],
        "down_blocks.1.attentions.0.transformer_blocks.0.attn2.to_k.weight": [640, 2048]})
    _safetensors(folder / "ip-adapter_sd15.safetensors", {
        "image_proj.proj.weight": [3072, 1024], "ip_adapter.1.to_k_ip.weight": [320, 768]})
    (folder / "t2iadapter_depth_sd15v2.pth").write_bytes(b"PK")
    (folder / "notes.txt").write_text("x")
    (folder / "diffusers_cn").mkdir()
    (folder / "diffusers_cn" / "config.json").write_text(json.dumps(
        {"_class_name": "ControlNetModel", "cross_attention_dim": 1024}))
    (folder / "diffusers_cn" / "diffusion_pytorch_model.safetensors").write_bytes(b"x")
    settings = EngineSettings(controlnet_dirs=(str(folder),))
    found = {m.name: (m.kind, m.arch) for m in control.list_control_models(settings)}
    assert found == {
        "control_v11p_sd15_canny": ("controlnet", "sd1"), "sdxl_canny": ("controlnet", "sdxl"),
        "ip-adapter_sd15": ("ip-adapter", "sd1"), "t2iadapter_depth_sd15v2": ("t2i-adapter", "sd1"),
        "diffusers_cn": ("controlnet", "sd2")}
    assert control.control_model_dirs(settings)[1:] == (str(folder),)


def test_short_hash_is_a1111s_old_model_hash(tmp_path: Path) -> None:
    data = bytes(range(256)) * 8192  # 2 MiB
    path = tmp_path / "control_x.safetensors"
    path.write_bytes(data)
    expected = hashlib.sha256(data[0x100000:0x110000]).hexdigest()[:8]
    assert control.short_hash(path) == expected
    model = control.ControlModel("control_x", path, "controlnet", "sd1")
    assert model.title == f"control_x [{expected}]"
    assert control.find_control_model([model], f"other_name [{expected}]") is model
    assert control.find_control_model([model], "CONTROL_X [00000000]") is model
    assert control.find_control_model([model], "missing") is None


def test_other_apps_controlnet_folders_go_to_controlnet_dirs(tmp_path: Path) -> None:
    from sdstudio.core import other_apps

    webui = other_apps.model_folders("AUTOMATIC1111", tmp_path / "webui", tmp_path, {})
    comfy = other_apps.model_folders("ComfyUI", tmp_path / "ComfyUI", tmp_path, {})
    assert ("controlnet", tmp_path / "webui" / "models" / "ControlNet", 0) in webui
    assert {("controlnet", tmp_path / "ComfyUI" / "models" / name, 0)
            for name in ("controlnet", "ipadapter")} <= set(comfy)
    found = other_apps.FoundFolder("ComfyUI", "controlnet", "/c/models/controlnet", 3)
    engine = other_apps.add_folders(EngineSettings(), [found])
    assert engine.controlnet_dirs == ("/c/models/controlnet",)
    assert other_apps.KIND_LABELS["controlnet"] == "ControlNets"
