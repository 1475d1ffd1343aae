"""core.metadata: AUTOMATIC1111 infotext writing/parsing and the sdstudio JSON chunk."""

from __future__ import annotations

import contextlib
import json
import random
import re
import string

import pytest

from sdstudio.core.errors import MetadataError
from sdstudio.core.metadata import (
    SDSTUDIO_FORMAT_VERSION,
    format_number,
    parse_infotext,
    parse_sdstudio_json,
    quote,
    split_params,
    to_infotext,
    to_sdstudio_json,
)
from sdstudio.core.request import (
    EMPHASIS_MODES,
    SAMPLER_NAMES,
    GenerationInfo,
    GenerationRequest,
    LoraSpec,
    Mode,
)
from sdstudio.core.sampler_names import SCHEDULE_TYPES, effective_schedule, schedule_problem

SHA = "6ce0161689b3853acaa03779ec93eafe75a02f4ced659bee03f50797806fa2fa"
INFO = GenerationInfo(
    model_name="v1-5-pruned-emaonly",
    model_sha256=SHA,
    model_arch="sd1",
    device="cpu",
    dtype="float32",
)


# ------------------------------------------------------------------- A1111's own reading
# The core of AUTOMATIC1111's parse_generation_parameters (modules/infotext_utils.py),
# reduced to what decides how a text splits into prompt, negative prompt and parameters
# (before its defaults and conversions). Also the reference of test_infotext_corpus.
_A1111_RE_PARAM = re.compile(r'\s*(\w[\w \-/]+):\s*("(?:\\.|[^\\"])+"|[^,]*)(?:,|$)')


def a1111_parse(x: str) -> dict[str, str]:
    res: dict[str, str] = {}
    prompt = negative = ""
    done_with_prompt = False
    *lines, lastline = x.strip().split("\n")
    if len(_A1111_RE_PARAM.findall(lastline)) < 3:
        lines.append(lastline)
        lastline = ""
    for line in lines:
        line = line.strip()
        if line.startswith("Negative prompt:"):
            done_with_prompt = True
            line = line[16:].strip()
        if done_with_prompt:
            negative += ("" if negative == "" else "\n") + line
        else:
            prompt += ("" if prompt == "" else "\n") + line
    res["Prompt"], res["Negative prompt"] = prompt, negative
    for k, v in _A1111_RE_PARAM.findall(lastline):
        if not v:
            continue  # A1111: v[0] raises IndexError, the key is skipped
        if v[0] == '"' and v[-1] == '"':
            with contextlib.suppress(ValueError):  # A1111's unquote keeps a bad one
                v = json.loads(v)
        res[k] = v
    return res


# ------------------------------------------------------------------------------ writing
def test_txt2img_infotext_is_exactly_a1111_format() -> None:
    request = GenerationRequest(
        prompt="a photo of a cat", negative_prompt="blurry", seed=1, steps=20, cfg_scale=7.0
    )
    assert to_infotext(request, INFO) == (
        "a photo of a cat\n"
        "Negative prompt: blurry\n"
        "Steps: 20, Sampler: Euler a, Schedule type: Automatic, CFG scale: 7, Seed: 1, "
        "Size: 512x512, Model hash: 6ce0161689, Model: v1-5-pruned-emaonly, RNG: CPU, "
        "Version: sdstudio 0.1.0"
    )


def test_no_negative_line_without_negative_prompt() -> None:
    text = to_infotext(GenerationRequest(prompt="cat", seed=3, rng="device"), INFO)
    assert "Negative prompt" not in text
    assert text.splitlines()[0] == "cat"
    assert "RNG" not in text  # A1111: a missing RNG key means the GPU generator


def test_cfg_and_strength_formatting() -> None:
    assert format_number(7.0) == "7"
    assert format_number(7.5) == "7.5"
    assert format_number(0.1 + 0.2) == repr(0.1 + 0.2)  # exact, reads back to the same float
    assert format_number(12) == "12"
    text = to_infotext(GenerationRequest(prompt="x", cfg_scale=7.5, seed=2), None)
    assert "CFG scale: 7.5," in text


def test_inpaint_keys_in_a1111_order() -> None:
    request = GenerationRequest(
        prompt="a red hat", seed=42, steps=30, cfg_scale=6, init_image="src.png",
        mask="mask.png", strength=0.6, mask_blur=8, inpaint_only_masked=True,
        inpaint_padding=48, clip_skip=2,
    )
    info = GenerationInfo(
        model_name="sd-v1-5-inpainting", model_sha256=SHA, vae_name="vae-ft-mse.safetensors",
        vae_sha256="735e4c3a447a3255760d7f86845f09f937809baa529c17370d83e4c3758f3c75",
        lora_hashes={"add_detail": "7c6bad76eb", "film:grain,v2": "0123456789"},
    )
    line = to_infotext(request, info).splitlines()[-1]
    keys = [k for k, _ in _A1111_RE_PARAM.findall(line)]
    assert keys == [
        "Steps", "Sampler", "Schedule type", "CFG scale", "Seed", "Size", "Model hash",
        "Model", "VAE hash", "VAE", "Denoising strength", "Clip skip", "RNG", "Mask blur",
        "Inpaint area", "Masked area padding", "Lora hashes", "Version",
    ]
    params = split_params(line)
    assert params["VAE hash"] == "735e4c3a44"
    assert params["Denoising strength"] == "0.6"
    assert params["Inpaint area"] == "Only masked"
    assert params["Masked area padding"] == "48"
    assert params["Lora hashes"] == "add_detail: 7c6bad76eb, filmgrainv2: 0123456789"
    assert 'Lora hashes: "add_detail: 7c6bad76eb, filmgrainv2: 0123456789"' in line


def test_img2img_has_strength_but_no_mask_keys() -> None:
    text = to_infotext(GenerationRequest(prompt="x", init_image="a.png", strength=0.3), INFO)
    assert "Denoising strength: 0.3" in text
    assert "Mask blur" not in text and "Inpaint area" not in text
    txt2img = to_infotext(GenerationRequest(prompt="x", strength=0.3), INFO)
    assert "Denoising strength" not in txt2img


def test_values_with_commas_colons_newlines_are_json_quoted() -> None:
    assert quote("plain value") == "plain value"
    assert quote("a, b") == '"a, b"'
    assert quote("a: b") == '"a: b"'
    assert quote("a\nb") == '"a\\nb"'
    assert quote('say "hi", ok') == '"say \\"hi\\", ok"'
    assert quote("ünï, x") == '"ünï, x"'  # ensure_ascii=False, as A1111
    info = GenerationInfo(model_name='my "best", model: v2\nnew', model_sha256=SHA)
    text = to_infotext(GenerationRequest(prompt="x", seed=1), info)
    assert len(text.splitlines()) == 2  # the newline in the value stays quoted
    assert parse_infotext(text).model_name == 'my "best", model: v2\nnew'
    assert a1111_parse(text)["Model"] == 'my "best", model: v2\nnew'


def test_explicit_loras_become_prompt_tags() -> None:
    request = GenerationRequest(prompt="cat", loras=(LoraSpec("film", 0.6), LoraSpec("x", 1.0)))
    text = to_infotext(request, INFO)
    assert text.splitlines()[0] == "cat <lora:film:0.6> <lora:x:1>"
    parsed = parse_infotext(text).request
    assert parsed.loras == ()
    clean, loras = parsed.prompt_loras()
    assert clean.split() == ["cat"]  # the tags' spaces stay; CLIP's tokenizer folds them
    assert loras == (LoraSpec("film", 0.6), LoraSpec("x", 1.0))


# ----------------------------------------------------------------- real-world infotexts
A1111_NEW = """masterpiece, best quality, 1girl, (blue eyes:1.2), <lora:add_detail:0.7>
looking at viewer, "quoted" words
Negative prompt: (worst quality, low quality:1.4), EasyNegative
bad hands
Steps: 28, Sampler: DPM++ 2M, Schedule type: Karras, CFG scale: 7.5, Seed: 2468013579, \
Size: 512x768, Model hash: 6ce0161689, Model: v1-5-pruned-emaonly, VAE hash: 735e4c3a44, \
VAE: vae-ft-mse-840000-ema-pruned.safetensors, Denoising strength: 0.45, Clip skip: 2, \
Hires upscale: 2, Hires steps: 10, Hires upscaler: R-ESRGAN 4x+ Anime6B, \
Lora hashes: "add_detail: 7c6bad76eb54", TI hashes: "EasyNegative: c74b4e810b03", \
Version: v1.10.1"""


def test_parse_automatic1111_current() -> None:
    parsed = parse_infotext(A1111_NEW)
    r = parsed.request
    assert r.prompt == (
        "masterpiece, best quality, 1girl, (blue eyes:1.2), <lora:add_detail:0.7>\n"
        'looking at viewer, "quoted" words'
    )
    assert r.negative_prompt == "(worst quality, low quality:1.4), EasyNegative\nbad hands"
    assert (r.steps, r.sampler, r.cfg_scale, r.seed) == (28, "DPM++ 2M", 7.5, 2468013579)
    assert r.schedule_type == "Karras"
    assert (r.width, r.height) == (512, 768)
    assert r.clip_skip == 2
    # a hires text: its denoising strength is the second pass's (A1111's txt2img paste)
    assert (r.hires, r.hires_denoising, r.strength) == (True, 0.45, 0.75)
    assert (r.hires_scale, r.hires_steps, r.hires_upscaler) == (2.0, 10, "R-ESRGAN 4x+ Anime6B")
    assert r.rng == "device"  # no RNG key: A1111 used the GPU generator
    assert parsed.model_name == "v1-5-pruned-emaonly"
    assert parsed.model_hash == "6ce0161689"
    assert parsed.extras == {
        "VAE hash": "735e4c3a44",
        "VAE": "vae-ft-mse-840000-ema-pruned.safetensors",
        "Lora hashes": "add_detail: 7c6bad76eb54",
        "TI hashes": "EasyNegative: c74b4e810b03",
        "Version": "v1.10.1",
    }
    assert r.prompt_loras()[1] == (LoraSpec("add_detail", 0.7),)
    # the same split as A1111 itself makes
    a1111 = a1111_parse(A1111_NEW)
    assert a1111["Prompt"] == r.prompt and a1111["Negative prompt"] == r.negative_prompt


def test_parse_automatic1111_2022_without_model_name() -> None:
    text = (
        "a castle on a hill\nNegative prompt: fog\n"
        "Steps: 20, Sampler: DPM++ 2M Karras, CFG scale: 7, Seed: 965400086, Size: 512x512, "
        "Model hash: 45dee52b, ENSD: 31337"
    )
    parsed = parse_infotext(text)
    assert (parsed.request.sampler, parsed.request.schedule_type) == ("DPM++ 2M", "Karras")
    assert parsed.request.cfg_scale == 7.0
    assert parsed.request.seed == 965400086
    assert parsed.model_hash == "45dee52b" and parsed.model_name == ""
    assert parsed.extras == {"ENSD": "31337"}


def test_parse_automatic1111_inpaint_only_masked() -> None:
    text = (
        "a red hat\n"
        "Steps: 30, Sampler: Euler a, CFG scale: 6, Seed: 42, Size: 512x512, "
        "Model hash: 6ce0161689, Model: sd-v1-5-inpainting, Denoising strength: 0.6, "
        "Conditional mask weight: 1.0, RNG: CPU, Mask blur: 8, Inpaint area: Only masked, "
        "Masked area padding: 48, Version: v1.7.0"
    )
    r = parse_infotext(text).request
    assert r.negative_prompt == ""
    assert (r.strength, r.mask_blur, r.inpaint_only_masked, r.inpaint_padding) == (
        0.6, 8, True, 48,
    )
    assert r.rng == "cpu"
    assert parse_infotext(text).extras["Conditional mask weight"] == "1.0"


FOOOCUS = """cinematic photo of a lighthouse at dusk, dramatic sky, highly detailed
Negative prompt: unrealistic, saturated, high contrast, big nose, painting, drawing, sketch
Steps: 30, Sampler: DPM++ 2M SDE Karras, Seed: 1234567890, Size: 1152x896, CFG scale: 4, \
Sharpness: 2, ADM Guidance: "(1.5, 0.8, 0.3)", Model: juggernautXL_v8Rundiffusion, \
Model hash: aeb7e9e689, Performance: Speed, Scheduler: karras, VAE: Default (model), \
Raw prompt: lighthouse at dusk, Raw negative prompt: , \
Lora hashes: "sd_xl_offset_example-lora_1.0: 4852686128", \
Lora weights: "sd_xl_offset_example-lora_1.0: 0.1", Version: Fooocus v2.5.5"""


def test_parse_fooocus_a1111_scheme() -> None:
    parsed = parse_infotext(FOOOCUS)
    r = parsed.request
    assert r.prompt.startswith("cinematic photo of a lighthouse")
    assert r.negative_prompt.endswith("drawing, sketch")
    assert (r.steps, r.sampler, r.seed, r.cfg_scale) == (30, "DPM++ 2M SDE", 1234567890, 4)
    assert r.schedule_type == "Karras"
    assert (r.width, r.height) == (1152, 896)
    assert r.loras == (LoraSpec("sd_xl_offset_example-lora_1.0", 0.1),)
    assert parsed.model_name == "juggernautXL_v8Rundiffusion"
    assert parsed.extras["ADM Guidance"] == "(1.5, 0.8, 0.3)"
    assert parsed.extras["Raw prompt"] == "lighthouse at dusk"
    assert "Raw negative prompt" not in parsed.extras  # empty: A1111 drops the key
    assert parsed.extras["Version"] == "Fooocus v2.5.5"
    assert "Scheduler" not in parsed.extras  # folded into "DPM++ 2M SDE Karras"
    assert "Lora weights" not in parsed.extras


KRITA = """a cozy cabin in the woods, snow <lora:detail-tweaker:0.5>
Negative prompt: 
Steps: 20, Sampler: Default - DPM++ 2M, CFG scale: 7.0, Seed: 1029384756, Size: 1024x768, \
Model hash: unknown, Model: zavychromaxl_v80.safetensors, Denoising strength: 0.65, Mode: Refine"""  # noqa: W291


def test_parse_krita_ai_diffusion() -> None:
    parsed = parse_infotext(KRITA)
    r = parsed.request
    assert r.prompt == "a cozy cabin in the woods, snow <lora:detail-tweaker:0.5>"
    assert r.negative_prompt == ""
    assert (r.steps, r.sampler, r.cfg_scale, r.seed) == (20, "DPM++ 2M", 7.0, 1029384756)
    assert r.schedule_type == "Karras"  # Krita's preset runs dpmpp_2m with karras
    assert (r.width, r.height, r.strength) == (1024, 768, 0.65)
    assert parsed.model_hash == ""  # "unknown"
    assert parsed.model_name == "zavychromaxl_v80.safetensors"
    assert parsed.extras == {"Mode": "Refine"}


@pytest.mark.parametrize(
    ("sampler", "schedule", "expected", "kept"),
    [
        # A1111 1.9+: the sampler and its schedule type
        ("DPM++ 2M", "Karras", ("DPM++ 2M", "Karras"), {}),
        ("DPM++ 2M", "Automatic", ("DPM++ 2M", "Automatic"), {}),
        ("Euler a", "Karras", ("Euler a", "Karras"), {}),
        ("Euler", "Exponential", ("Euler", "Exponential"), {}),
        ("DPM++ 3M SDE", "SGM Uniform", ("DPM++ 3M SDE", "SGM Uniform"), {}),
        ("Restart", "Karras", ("Restart", "Karras"), {}),
        ("DPM++ 2M", "sgm_uniform", ("DPM++ 2M", "SGM Uniform"), {}),  # A1111's name
        # no "Schedule type": Automatic, whatever the version (A1111 1.10 reads it so)
        ("DPM++ 2M", None, ("DPM++ 2M", "Automatic"), {}),
        ("DPM++ 3M SDE", None, ("DPM++ 3M SDE", "Automatic"), {}),
        # the names before 1.9 carry their schedule; the name's schedule wins, as in A1111
        ("DPM++ 2M Karras", None, ("DPM++ 2M", "Karras"), {}),
        ("DPM++ SDE Karras", None, ("DPM++ SDE", "Karras"), {}),
        ("LMS Karras", None, ("LMS", "Karras"), {}),
        ("DPM2 a Karras", None, ("DPM2 a", "Karras"), {}),
        ("DPM++ 2M SDE Exponential", None, ("DPM++ 2M SDE", "Exponential"), {}),
        ("DPM++ 2M SDE Heun Karras", None, ("DPM++ 2M SDE Heun", "Karras"), {}),
        ("DPM++ 2M Karras", "Exponential", ("DPM++ 2M", "Karras"), {}),
        # other spellings
        ("k_euler_a", None, ("Euler a", "Automatic"), {}),
        ("dpmpp_2m", None, ("DPM++ 2M", "Automatic"), {}),
        ("Default - DPM++ 2M", None, ("DPM++ 2M", "Karras"), {}),  # Krita preset
        ("Alternative - Euler A", None, ("Euler a", "Normal"), {}),
        ("Lightning Merge - Euler A Uniform", None, ("Euler a", "SGM Uniform"), {}),
        # a timestep sampler ignores a schedule type (A1111 1.9 wrote one for UniPC)
        ("UniPC", "Karras", ("UniPC", "Automatic"), {"Schedule type": "Karras"}),
        # what SD Studio does not have stays visible and the default is kept
        ("DPM adaptive", None, ("Euler a", "Automatic"), {"Sampler": "DPM adaptive"}),
        ("Fast - UniPC BH2", None, ("Euler a", "Automatic"), {"Sampler": "Fast - UniPC BH2"}),
        ("Euler", "Karras Exponential", ("Euler", "Automatic"),
         {"Schedule type": "Karras Exponential"}),
    ],
)
def test_sampler_mapping(
    sampler: str, schedule: str | None, expected: tuple[str, str], kept: dict[str, str]
) -> None:
    sched = f", Schedule type: {schedule}" if schedule else ""
    text = f"p\nSteps: 5, Sampler: {sampler}{sched}, CFG scale: 7, Seed: 1, Size: 64x64"
    parsed = parse_infotext(text)
    assert (parsed.request.sampler, parsed.request.schedule_type) == expected
    assert parsed.extras == kept


@pytest.mark.parametrize(
    ("sampler", "scheduler", "expected"),
    [
        ("DPM++ 2M SDE Karras", "karras", ("DPM++ 2M SDE", "Karras")),
        ("Euler a", "karras", ("Euler a", "Karras")),  # Fooocus adds no " Karras" to Euler a
        ("DPM++ 2M SDE", "exponential", ("DPM++ 2M SDE", "Exponential")),
        ("DPM++ 2M", "normal", ("DPM++ 2M", "Normal")),
        ("Euler", "sgm_uniform", ("Euler", "SGM Uniform")),
        ("dpmpp_3m_sde_gpu", "karras", ("DPM++ 3M SDE", "Karras")),  # no A1111 name there
        ("LCM", "lcm", ("LCM", "Automatic")),
    ],
)
def test_fooocus_sampler_and_scheduler(sampler: str, scheduler: str,
                                       expected: tuple[str, str]) -> None:
    text = (f"p\nSteps: 30, Sampler: {sampler}, Seed: 1, Size: 1024x1024, CFG scale: 4, "
            f"Scheduler: {scheduler}, Version: Fooocus v2.5.5")
    parsed = parse_infotext(text)
    assert (parsed.request.sampler, parsed.request.schedule_type) == expected
    assert ("Scheduler" in parsed.extras) == (scheduler == "lcm")  # no A1111 equivalent


def test_every_sampler_name_round_trips() -> None:
    for name in SAMPLER_NAMES:
        text = to_infotext(GenerationRequest(prompt="x", sampler=name, seed=1), INFO)
        assert parse_infotext(text).request.sampler == name


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "empty"),
        ("   \n  ", "empty"),
        ("p\nSteps: many, Sampler: Euler, CFG scale: 7, Seed: 1", "Steps 'many'"),
        ("p\nSteps: 20, Sampler: Euler, CFG scale: high, Seed: 1", "CFG scale 'high'"),
        ("p\nSteps: 20, Sampler: Euler, CFG scale: 7, Seed: 1.5", "Seed '1.5'"),
        ("p\nSteps: 20, Sampler: Euler, CFG scale: 7, Size: 512", "Size '512'"),
        ("p\nSteps: 20, Sampler: Euler, CFG scale: nan, Seed: 1", "not a finite number"),
        ("p\nSteps: 1e999, Sampler: Euler, CFG scale: 7, Seed: 1", "Steps '1e999'"),
    ],
)
def test_malformed_infotext_raises_metadata_error(text: str, message: str) -> None:
    with pytest.raises(MetadataError, match=re.escape(message)):
        parse_infotext(text)


def test_non_text_raises_metadata_error() -> None:
    for bad in (None, b"Steps: 1", 42):
        with pytest.raises(MetadataError, match="must be text"):
            parse_infotext(bad)  # type: ignore[arg-type]


def test_fuzzed_garbage_only_ever_raises_metadata_error() -> None:
    rng = random.Random(1234)
    alphabet = string.printable + 'ü:,"\\\n' + "Steps: " * 3
    base = to_infotext(GenerationRequest(prompt="a, b", negative_prompt="c", seed=1), INFO)
    for _ in range(2000):
        if rng.random() < 0.5:
            text = "".join(rng.choice(alphabet) for _ in range(rng.randint(0, 120)))
        else:  # mutate a valid infotext
            chars = list(base)
            for _ in range(rng.randint(1, 6)):
                chars[rng.randrange(len(chars))] = rng.choice(alphabet)
            text = "".join(chars)
        try:
            parsed = parse_infotext(text)
        except MetadataError:
            continue
        assert isinstance(parsed.request, GenerationRequest)


# ---------------------------------------------------------------------------- round trip
_WORDS = [
    "cat", "a photo", "(masterpiece:1.2)", "ünïcødé", "日本語", "emoji 🐱", 'say "hi"',
    "back\\slash", "key: value", "a, b", "[x|y]", "{a}", "#tag", "50%", "Steps: 20",
]
_SEPARATORS = [", ", " ", ",", ": ", "\n", " \n", "\n\n", "; "]


def _random_text(rng: random.Random, allow_empty: bool = True) -> str:
    if allow_empty and rng.random() < 0.25:
        return ""
    parts = [rng.choice(_WORDS)]
    for _ in range(rng.randint(0, 8)):
        parts.append(rng.choice(_SEPARATORS) + rng.choice(_WORDS))
        if rng.random() < 0.1:
            parts.append(f" <lora:{rng.choice(['film', 'add_detail', 'x-y z'])}:"
                         f"{round(rng.uniform(-1, 2), 2)}>")
    return "".join(parts).strip()


def random_request(rng: random.Random) -> GenerationRequest:
    mode = rng.choice(list(Mode))
    init = None if mode is Mode.TXT2IMG else rng.choice(["in.png", "/tmp/ä b/in, 1.png"])
    mask = "mask.png" if mode is Mode.INPAINT else None
    sampler = rng.choice(SAMPLER_NAMES)
    side = rng.randrange(64, 2049, 8)
    resize = rng.choice([(0, 0), (0, 512), (side, rng.randrange(64, 2049, 8))])
    loras = tuple(
        LoraSpec(rng.choice(["film", "ü-lora"]), rng.choice([1.0, 0.5, rng.uniform(0, 2)]))
        for _ in range(rng.choice([0, 0, 1, 2]))
    )
    return GenerationRequest(
        prompt=_random_text(rng),
        negative_prompt=_random_text(rng),
        width=rng.randrange(64, 2049, 8),
        height=rng.randrange(64, 2049, 8),
        steps=rng.randint(1, 150),
        cfg_scale=rng.choice([7.0, 7.5, 1.0, rng.uniform(0, 30), float(rng.randint(1, 20))]),
        seed=rng.choice([-1, 0, rng.randint(0, 2**32 - 1)]),
        sampler=sampler,
        schedule_type=rng.choice([s for s in SCHEDULE_TYPES if not schedule_problem(sampler, s)]),
        emphasis=rng.choice(EMPHASIS_MODES),
        variation_seed=rng.choice([-1, rng.randint(0, 2**32 - 1)]),
        variation_strength=rng.choice([0.0, 0.0, 1.0, round(rng.random(), 3)]),
        seed_resize_from_w=resize[0], seed_resize_from_h=resize[1],
        batch_size=rng.randint(1, 4),
        batch_count=rng.randint(1, 4),
        strength=rng.choice([0.75, 1.0, 0.0, rng.random()]),
        init_image=init,
        mask=mask,
        mask_blur=rng.randint(0, 64),
        inpaint_only_masked=rng.random() < 0.5,
        inpaint_padding=rng.randint(0, 256),
        resize_mode=rng.choice(["resize", "crop", "fill"]),
        model=rng.choice(["", "/models/a, b.safetensors", "runwayml/stable-diffusion-v1-5"]),
        vae=rng.choice(["", "vae.safetensors"]),
        loras=loras,
        clip_skip=rng.randint(1, 12),
        rng=rng.choice(["cpu", "device"]),
    )


def random_info(rng: random.Random) -> GenerationInfo:
    return GenerationInfo(
        model_name=rng.choice(["model", "my, model: v2", 'quote"d', "ünï"]),
        model_sha256=rng.choice(["", SHA]),
        model_arch=rng.choice(["sd1", "sdxl"]),
        model_untrained=rng.random() < 0.5,
        vae_name=rng.choice(["", "vae, ft"]),
        vae_sha256=rng.choice(["", SHA]),
        lora_hashes=rng.choice([{}, {"film": "0123456789", "a:b": "abcdefabcd"}]),
        device="cuda:0",
        dtype="float16",
        memory={"attention_slicing": False, "reason": "enough free memory", "free_gb": 7.5},
        scheduler={"class": "EulerAncestralDiscreteScheduler",
                   "config": {"num_train_timesteps": 1000, "beta_schedule": "scaled_linear",
                              "trained_betas": None, "timestep_spacing": "leading"}},
        versions={"torch": "2.13.0", "diffusers": "0.42.1", "sdstudio": "0.1.0"},
        prompt_tokens=rng.randint(0, 300),
        negative_tokens=rng.randint(0, 300),
        elapsed_s=rng.uniform(0, 100),
        notes=tuple(rng.sample(["untrained demo model", "VAE decoded in fp32", "a, b"], 2)),
    )


def _carried(r: GenerationRequest) -> dict[str, object]:
    clean, loras = r.prompt_loras()
    fields: dict[str, object] = {
        "clean_prompt": " ".join(clean.split()),  # what CLIP's tokenizer sees
        "loras": sorted((lo.name, lo.weight) for lo in loras),
        "negative_prompt": r.negative_prompt,
        "width": r.width, "height": r.height, "steps": r.steps, "cfg_scale": r.cfg_scale,
        "seed": r.seed, "sampler": r.sampler, "clip_skip": r.clip_skip, "rng": r.rng,
        "schedule": effective_schedule(r.sampler, r.schedule_type),
        "emphasis": r.emphasis if _has_brackets(r) else "Original",
        "variation": (r.variation_seed, r.variation_strength) if r.variation_strength else None,
        "seed_resize": (r.seed_resize_from_w, r.seed_resize_from_h)
        if r.seed_resize_from_w and r.seed_resize_from_h else None,
    }
    if r.mode in (Mode.IMG2IMG, Mode.INPAINT):
        fields["strength"] = r.strength
    if r.mode is Mode.INPAINT:
        fields["mask_blur"] = r.mask_blur
        fields["inpaint_only_masked"] = r.inpaint_only_masked
        if r.inpaint_only_masked:
            fields["inpaint_padding"] = r.inpaint_padding
    return fields


def _a1111_lines(r: GenerationRequest) -> GenerationRequest:
    """The prompts as A1111 reads them back: each line stripped (a limit of the format)."""
    def strip(text: str) -> str:
        return "\n".join(line.strip() for line in text.split("\n"))
    return r.replace(prompt=strip(r.prompt), negative_prompt=strip(r.negative_prompt))


def _has_brackets(r: GenerationRequest) -> bool:
    """A1111 writes Emphasis only for prompts it could apply to."""
    return any(c in t for t in (r.prompt, r.negative_prompt) for c in "([")


def test_infotext_round_trip_over_many_random_requests() -> None:
    rng = random.Random(20240601)
    for _ in range(600):
        request = _a1111_lines(random_request(rng).validated())
        info = random_info(rng)
        text = to_infotext(request, info)
        parsed = parse_infotext(text)
        expected = _carried(request)
        got = _carried(parsed.request.replace(init_image=request.init_image, mask=request.mask))
        assert got == expected, text
        if not request.loras:  # without explicit LoRAs the prompt comes back verbatim
            assert parsed.request.prompt == request.prompt
        assert parsed.model_name == info.model_name
        assert parsed.model_hash == info.model_hash
        # AUTOMATIC1111's own reading agrees on the prompt split and the values
        a1111 = a1111_parse(text)
        assert a1111["Negative prompt"] == "\n".join(
            line.strip() for line in request.negative_prompt.split("\n")
        )
        assert a1111["Steps"] == str(request.steps)
        assert float(a1111["CFG scale"]) == request.cfg_scale
        assert a1111["Sampler"] == request.sampler
        ran = effective_schedule(request.sampler, request.schedule_type)
        if request.schedule_type == "Automatic" and ran != "Uniform" \
                and request.sampler not in ("DDIM", "PLMS", "UniPC"):
            assert parsed.request.schedule_type == ran  # A1111 writes the resolved label
        else:
            assert parsed.request.schedule_type == request.schedule_type


def test_sdstudio_json_round_trip_is_exact() -> None:
    rng = random.Random(99)
    for _ in range(300):
        request, info = random_request(rng), random_info(rng)
        text = to_sdstudio_json(request, info)
        data = json.loads(text)
        assert data["format"] == "sdstudio" and data["version"] == SDSTUDIO_FORMAT_VERSION
        got_request, got_info = parse_sdstudio_json(text)
        assert got_request == request
        assert got_info == info


def test_sdstudio_json_without_info_and_unserialisable_values() -> None:
    request = GenerationRequest(prompt="x")
    assert parse_sdstudio_json(to_sdstudio_json(request, None)) == (request, GenerationInfo())
    info = GenerationInfo(memory={"savers": {"b", "a"}, "dtype": object.__new__(object)})
    _, got = parse_sdstudio_json(to_sdstudio_json(request, info))
    assert got.memory["savers"] == ["a", "b"]
    assert isinstance(got.memory["dtype"], str)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("not json", "not valid JSON"),
        ("[1, 2]", "not sdstudio metadata"),
        ('{"format": "other", "version": 1}', "not sdstudio metadata"),
        ('{"format": "sdstudio", "version": "1", "request": {}}', "invalid format version"),
        ('{"format": "sdstudio", "version": 1}', "lacks the request"),
        ('{"format": "sdstudio", "version": 1, "request": {}}', "needs a prompt"),
        ('{"format": "sdstudio", "version": 1, "request": {"prompt": "x", "bogus": 1}}',
         "unknown request field"),
        ('{"format": "sdstudio", "version": 1, "request": {"prompt": "x", "steps": "ten"}}',
         "steps"),
    ],
)
def test_bad_sdstudio_json_raises_metadata_error(text: str, message: str) -> None:
    with pytest.raises(MetadataError, match=message):
        parse_sdstudio_json(text)


def test_newer_format_version_keeps_known_fields() -> None:
    data = json.loads(to_sdstudio_json(GenerationRequest(prompt="x", steps=9), None))
    data["version"] = SDSTUDIO_FORMAT_VERSION + 1
    data["request"]["future_field"] = 1
    request, _ = parse_sdstudio_json(json.dumps(data))
    assert request == GenerationRequest(prompt="x", steps=9)


# ------------------------------------------------------- A1111 1.10 keys, both directions
def test_every_sampler_and_schedule_pair_round_trips() -> None:
    pairs = 0
    for sampler in SAMPLER_NAMES:
        for schedule in SCHEDULE_TYPES:
            if schedule_problem(sampler, schedule):
                continue
            request = GenerationRequest(prompt="x", sampler=sampler, schedule_type=schedule,
                                        seed=3).validated()
            text = to_infotext(request, INFO)
            params = split_params(text.splitlines()[-1])
            ran = effective_schedule(sampler, schedule)
            timesteps = sampler in ("DDIM", "PLMS", "UniPC")
            written = "Automatic" if timesteps or (schedule == "Automatic" and ran == "Uniform") \
                else ran
            assert (params["Sampler"], params["Schedule type"]) == (sampler, written)
            back = parse_infotext(text).request.validated()
            assert back.sampler == sampler
            assert effective_schedule(back.sampler, back.schedule_type) == ran
            assert back.schedule_type == (schedule if written in ("Automatic", schedule)
                                          else written)
            pairs += 1
    assert pairs == (len(SAMPLER_NAMES) - 3) * len(SCHEDULE_TYPES) + 3


def test_emphasis_variation_and_seed_resize_round_trip() -> None:
    for emphasis in EMPHASIS_MODES:
        r = GenerationRequest(prompt="a (cat:1.2)", emphasis=emphasis, seed=1)
        text = to_infotext(r, INFO)
        assert ("Emphasis: " in text) == (emphasis != "Original")
        assert parse_infotext(text).request.emphasis == emphasis
    r = GenerationRequest(prompt="x", seed=5, variation_seed=77, variation_strength=0.35,
                          seed_resize_from_w=512, seed_resize_from_h=768)
    line = to_infotext(r, INFO).splitlines()[-1]
    keys = [k for k, _ in _A1111_RE_PARAM.findall(line)]
    assert keys[keys.index("Model") + 1:keys.index("Model") + 4] == [
        "Variation seed", "Variation seed strength", "Seed resize from"]
    assert "Variation seed: 77, Variation seed strength: 0.35, Seed resize from: 512x768" in line
    back = parse_infotext(to_infotext(r, INFO)).request
    assert (back.variation_seed, back.variation_strength) == (77, 0.35)
    assert (back.seed_resize_from_w, back.seed_resize_from_h) == (512, 768)
    plain = to_infotext(GenerationRequest(prompt="x", seed=5, variation_seed=77), INFO)
    assert "Variation seed" not in plain and "Seed resize from" not in plain  # strength 0


def test_hashes_are_written_as_a1111_writes_them() -> None:
    info = GenerationInfo(
        model_sha256=SHA, vae_name="vae-ft-mse", vae_sha256=SHA,
        lora_hashes={"add_detail": SHA, "film, grain:v2": "0123456789ab"},
        ti_hashes={"EasyNegative": "c74b4e810b03", "bad:hands": SHA})
    line = to_infotext(GenerationRequest(prompt="(x)", seed=1, emphasis="No norm"), info)
    line = line.splitlines()[-1]
    keys = [k for k, _ in _A1111_RE_PARAM.findall(line)]
    assert keys[-4:] == ["Lora hashes", "TI hashes", "Emphasis", "Version"]
    params = split_params(line)
    assert params["Model hash"] == SHA[:10] and params["VAE hash"] == SHA[:10]
    assert params["Lora hashes"] == f"add_detail: {SHA[:12]}, film grainv2: 0123456789ab"
    assert params["TI hashes"] == f"EasyNegative: c74b4e810b03, badhands: {SHA[:12]}"
    parsed = parse_infotext(to_infotext(GenerationRequest(prompt="x"), info))
    assert parsed.lora_hashes == {"add_detail": SHA[:12], "film grainv2": "0123456789ab"}
    assert parsed.ti_hashes["EasyNegative"] == "c74b4e810b03"


@pytest.mark.parametrize(
    ("text", "prompt", "negative"),
    [
        ("just a prompt, nothing else", "just a prompt, nothing else", ""),
        ("a cat\nNegative prompt: dog", "a cat", "dog"),
        ("  a cat  \n  on a mat \nNegative prompt:   dog  \n  wet ", "a cat\non a mat",
         "dog\nwet"),
        ("a cat\nSteps: 20, Sampler: Euler", "a cat\nSteps: 20, Sampler: Euler", ""),
        ("Steps: 20, Sampler: Euler, CFG scale: 7", "", ""),
    ],
)
def test_text_without_a_parameter_line_is_a_prompt(text: str, prompt: str,
                                                   negative: str) -> None:
    parsed = parse_infotext(text)
    assert (parsed.request.prompt, parsed.request.negative_prompt) == (prompt, negative)
    a1111 = a1111_parse(text)
    assert (a1111["Prompt"], a1111["Negative prompt"]) == (prompt, negative)


def test_a_parameter_line_without_steps_is_read() -> None:
    r = parse_infotext("p\nSize: 512x768, Seed: 1, Sampler: Euler, CFG scale: 7").request
    assert (r.steps, r.width, r.height, r.seed, r.sampler) == (20, 512, 768, 1, "Euler")


@pytest.mark.parametrize(
    ("size", "first_pass", "expected_size", "hires"),
    [
        ("1280x1024", "640x512", (640, 512), "1280x1024"),
        ("1024x1280", "0x0", (512, 576), "1024x1280"),  # A1111's wiki example
        ("1024x768", "0x0", (640, 448), "1024x768"),
        ("1280x768", "0x0", (704, 448), "1280x768"),
    ],
)
def test_old_first_pass_size_converts_as_a1111(size: str, first_pass: str,
                                               expected_size: tuple[int, int],
                                               hires: str) -> None:
    text = (f"p\nSteps: 20, Sampler: Euler a, CFG scale: 7, Seed: 1, Size: {size}, "
            f"Denoising strength: 0.7, First pass size: {first_pass}")
    parsed = parse_infotext(text)
    assert (parsed.request.width, parsed.request.height) == expected_size
    r = parsed.request
    assert r.hires and f"{r.hires_resize_x}x{r.hires_resize_y}" == hires
    assert r.hires_denoising == 0.7 and r.strength == 0.75
    assert parsed.extras == {}
    assert parsed.params["First pass size"] == first_pass
