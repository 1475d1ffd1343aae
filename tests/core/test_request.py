"""core.request: validation messages, serialisation, coercion, LoRA tags, modes, seeds."""

from __future__ import annotations

import dataclasses

import pytest

from sdstudio.core.errors import RequestError
from sdstudio.core.request import (
    FIELD_NAMES,
    MAX_SEED,
    SAMPLER_NAMES,
    GenerationInfo,
    GenerationRequest,
    LoraSpec,
    Mode,
)

BASE = GenerationRequest(prompt="a cat")


def test_defaults_are_valid() -> None:
    assert BASE.validated() is BASE
    assert BASE.mode is Mode.TXT2IMG


@pytest.mark.parametrize(
    ("changes", "field", "message"),
    [
        ({"width": 500}, "width", "width 500 is not a multiple of 8 (use 496 or 504)"),
        ({"height": 513}, "height", "height 513 is not a multiple of 8 (use 512 or 520)"),
        ({"width": 100000, "height": 100000}, "width", "width 100000 is too large (at most 8192)"),
        ({"width": 8192, "height": 8192}, "width", "size 8192x8192 is too large"),
        ({"width": 32}, "width", "width 32 is too small (at least 64)"),
        ({"width": 512.0}, "width", "width must be a whole number, not 512.0"),
        ({"steps": 0}, "steps", "steps must be between 1 and 1000, not 0"),
        ({"steps": -5}, "steps", "steps must be between 1 and 1000, not -5"),
        ({"steps": 1001}, "steps", "steps must be between 1 and 1000"),
        ({"cfg_scale": float("nan")}, "cfg_scale", "CFG scale must be between 0 and 100"),
        ({"cfg_scale": -1.0}, "cfg_scale", "CFG scale must be between 0 and 100"),
        ({"seed": -2}, "seed", "seed must be -1 (random) or between 0 and 4294967295"),
        ({"seed": MAX_SEED + 1}, "seed", "seed must be -1"),
        ({"seed": True}, "seed", "seed must be -1"),
        ({"strength": 1.5}, "strength", "denoising strength must be between 0 and 1, not 1.5"),
        ({"strength": -0.1}, "strength", "denoising strength must be between 0 and 1"),
        ({"mask": "m.png"}, "mask", "a mask needs an init image to inpaint"),
        ({"sampler": "Euler b"}, "sampler", "unknown sampler 'Euler b'; choose one of: Euler a"),
        ({"batch_size": 0}, "batch_size", "images per run must be between 1 and 64"),
        ({"batch_count": 0}, "batch_count", "number of runs must be between 1 and 10000"),
        ({"mask_blur": -1}, "mask_blur", "mask blur must be between 0 and 256"),
        ({"inpaint_padding": 5000}, "inpaint_padding", "inpaint padding must be between 0"),
        ({"resize_mode": "stretch"}, "resize_mode", "resize mode must be one of resize"),
        ({"clip_skip": 0}, "clip_skip", "clip skip must be between 1 and 12"),
        ({"rng": "gpu"}, "rng", "rng must be cpu or device, not 'gpu'"),
        ({"prompt": "a <lora:film:strong> cat"}, "prompt",
         "LoRA tag '<lora:film:strong>': weight 'strong' is not a number"),
        ({"prompt": 42}, "prompt", "prompt must be text"),
    ],
)
def test_each_bad_field_has_a_clear_message(
    changes: dict[str, object], field: str, message: str
) -> None:
    with pytest.raises(RequestError) as excinfo:
        BASE.replace(**changes).validated()
    assert excinfo.value.field == field
    assert str(excinfo.value).startswith(message)
    assert "\n" not in str(excinfo.value)


def test_boundaries_accepted() -> None:
    for changes in (
        {"width": 64, "height": 64}, {"width": 4096, "height": 4096}, {"width": 8192, "height": 64},
        {"steps": 1}, {"steps": 1000}, {"seed": -1}, {"seed": 0}, {"seed": MAX_SEED},
        {"strength": 0.0, "init_image": "a.png"}, {"strength": 1.0, "init_image": "a.png"},
        {"cfg_scale": 0}, {"cfg_scale": 100.0}, {"clip_skip": 12},
    ):
        BASE.replace(**changes).validated()
    for name in SAMPLER_NAMES:
        BASE.replace(sampler=name).validated()


def test_modes() -> None:
    assert BASE.replace(init_image="a.png").mode is Mode.IMG2IMG
    assert BASE.replace(init_image="a.png", mask="m.png").mode is Mode.INPAINT
    assert BASE.replace(init_image="").mode is Mode.TXT2IMG


def test_seeds_follow_a1111_convention_and_wrap() -> None:
    req = BASE.replace(batch_size=2, batch_count=3)
    assert req.image_count == 6
    assert req.seeds(10) == [10, 11, 12, 13, 14, 15]
    assert req.replace(batch_size=3, batch_count=1).seeds(MAX_SEED) == [MAX_SEED, 0, 1]


def test_prompt_loras() -> None:
    req = GenerationRequest(
        prompt="a cat, <lora:film:0.6>,  sitting <lora: detail > <lora:x:1.5:te=0.5>",
        loras=(LoraSpec("base", 0.8),),
    )
    clean, loras = req.prompt_loras()
    assert clean == "a cat, ,  sitting  "  # as A1111: only the tags go
    assert loras == (
        LoraSpec("base", 0.8), LoraSpec("film", 0.6), LoraSpec("detail", 1.0),
        LoraSpec("x", 1.5),
    )
    assert GenerationRequest(prompt="<lora:only:0.5>").prompt_loras() == (
        "", (LoraSpec("only", 0.5),),
    )
    assert GenerationRequest(prompt="no tags").prompt_loras() == ("no tags", ())


def test_to_dict_from_dict_round_trip() -> None:
    req = GenerationRequest(
        prompt="p, q: r", negative_prompt="n", width=640, height=448, steps=7, cfg_scale=5.5,
        seed=99, sampler="UniPC", batch_size=2, batch_count=3, strength=0.4,
        init_image="/a/ü.png", mask="/a/m.png", mask_blur=2, inpaint_only_masked=True,
        inpaint_padding=16, resize_mode="crop", model="m.safetensors", vae="v.safetensors",
        loras=(LoraSpec("a", 0.5), LoraSpec("b", 1.0)), clip_skip=2, rng="device",
    )
    data = req.to_dict()
    assert set(data) == set(FIELD_NAMES)
    assert data["loras"] == [{"name": "a", "weight": 0.5}, {"name": "b", "weight": 1.0}]
    assert GenerationRequest.from_dict(data) == req
    assert GenerationRequest.from_dict(BASE.to_dict()) == BASE
    assert hash(req) == hash(GenerationRequest.from_dict(data))  # frozen, hashable


def test_coercion_from_csv_like_strings() -> None:
    row = {
        "prompt": "a cat", "width": " 768 ", "height": "512", "steps": "30", "cfg_scale": "7",
        "seed": "-1", "strength": "0.5", "inpaint_only_masked": "yes", "init_image": "",
        "mask": "", "loras": "film:0.5, detail", "batch_count": 2.0, "clip_skip": "2",
    }
    req = GenerationRequest.from_dict(row)
    assert (req.width, req.height, req.steps, req.seed, req.batch_count) == (768, 512, 30, -1, 2)
    assert req.cfg_scale == 7.0 and isinstance(req.cfg_scale, float)
    assert req.strength == 0.5 and req.inpaint_only_masked is True
    assert req.init_image is None and req.mask is None
    assert req.loras == (LoraSpec("film", 0.5), LoraSpec("detail", 1.0))
    assert req.validated() is req
    for text, expected in (("true", True), ("0", False), ("off", False), ("", False)):
        assert GenerationRequest.from_dict(
            {"prompt": "x", "inpaint_only_masked": text}
        ).inpaint_only_masked is expected
    assert GenerationRequest.from_dict({"prompt": 123}).prompt == "123"


@pytest.mark.parametrize(
    ("data", "field", "message"),
    [
        ({}, "prompt", "a request needs a prompt"),
        ({"prompt": "x", "colour": "red"}, "colour", "unknown request field 'colour'"),
        ({"prompt": "x", "steps": "twenty"}, "steps", "steps: 'twenty' is not a valid value"),
        ({"prompt": "x", "cfg_scale": "high"}, "cfg_scale", "cfg_scale: 'high' is not a valid"),
        ({"prompt": "x", "inpaint_only_masked": "maybe"}, "inpaint_only_masked", "not a valid"),
        ({"prompt": "x", "loras": "film:strong"}, "loras", "loras: 'film:strong' is not"),
        ({"prompt": "x", "loras": [{"weight": 1}]}, "loras", "loras"),
    ],
)
def test_from_dict_errors_are_request_errors(
    data: dict[str, object], field: str, message: str
) -> None:
    with pytest.raises(RequestError) as excinfo:
        GenerationRequest.from_dict(data)
    assert excinfo.value.field == field
    assert message in str(excinfo.value)


def test_request_is_immutable() -> None:
    with pytest.raises(dataclasses.FrozenInstanceError):
        BASE.steps = 5  # type: ignore[misc]


def test_generation_info_round_trip_and_model_hash() -> None:
    info = GenerationInfo(
        model_name="m", model_sha256="0123456789abcdef" * 4, notes=("a", "b"),
        lora_hashes={"x": "0123456789"}, memory={"vae_tiling": True}, elapsed_s=1.5,
    )
    assert info.model_hash == "0123456789"
    data = info.to_dict()
    assert data["notes"] == ["a", "b"]
    assert GenerationInfo.from_dict(data) == info
    assert GenerationInfo.from_dict({**data, "future": 1}) == info  # unknown keys ignored


def test_lora_tags_name_loras_never_paths() -> None:
    """Prompts travel inside images and prompt lists: a tag may only name a LoRA in the LoRA
    folders, so an image cannot make SD Studio read a file elsewhere."""
    ok = GenerationRequest(prompt="a cat <lora:styles/film grain:0.5>")
    assert ok.prompt_loras()[1] == (LoraSpec("styles/film grain", 0.5),)
    for tag in ("<lora:/etc/passwd:1>", "<lora:../../secret:1>", "<lora:~/x:1>",
                "<lora:\\\\server\\share\\x:1>", "<lora:a/../../b>"):
        with pytest.raises(RequestError, match="not a path"):
            GenerationRequest(prompt=f"a cat {tag}").validated()
