"""The field table drives validation, the CLIs, infotext and prompt lists: each test walks the
table, so a field added to it is covered here without editing this file."""

from __future__ import annotations

import json
from dataclasses import dataclass, field

import pytest

from sdstudio.cli import build_parser, request_from_args
from sdstudio.core.control import ControlUnit, option_text
from sdstudio.core.errors import RequestError
from sdstudio.core.fields import InfotextKey, Mode, request_fields, spec
from sdstudio.core.metadata import parse_infotext, to_infotext
from sdstudio.core.prompts import parse_prompt_list
from sdstudio.core.request import FIELDS, GenerationInfo, GenerationRequest
from tests.field_values import other_value

INPAINT = {"init_image": "/in/a.png", "mask": "/in/m.png"}


def _cli_text(value: object) -> list[str]:
    if isinstance(value, tuple) and value and isinstance(value[0], ControlUnit):
        return [option_text(u) for u in value]
    if isinstance(value, tuple):  # LoRAs
        return [f"{lo.name}:{lo.weight}" for lo in value]
    return [str(value)]


def _cli_args(s: object, value: object) -> list[str]:
    assert hasattr(s, "options")
    flag = s.options[0]  # type: ignore[attr-defined]
    if isinstance(value, bool):
        return [flag if value else "--no-" + flag[2:]]
    out: list[str] = []
    for text in _cli_text(value):
        out += [flag, text]
    return out


def test_every_field_has_a_complete_spec() -> None:
    names = [s.name for s in FIELDS]
    assert len(set(names)) == len(names) and names[0] == "prompt"
    for s in FIELDS:
        assert s.label and s.kind
        assert s.problem(s.default) is None or s.name == "prompt", s.name
        if s.kind in ("int", "float") and s.special is None:
            assert s.minimum is not None and s.maximum is not None, s.name


@pytest.mark.parametrize("command", ["generate", "batch"])
def test_every_field_with_an_option_is_an_option_of_both_commands(command: str) -> None:
    parser = build_parser()
    for s in FIELDS:
        if not s.options or (command == "batch" and s.name == "prompt"):
            continue
        value = other_value(s)
        extra = ["x.txt"] if command == "batch" else ["--prompt", "p"]
        if s.name == "prompt":
            extra = []
        args = parser.parse_args([command, *extra, *_cli_args(s, value)])
        request = request_from_args(args, base=GenerationRequest(prompt="p"))
        got = getattr(request, s.name)
        if s.kind == "path":
            assert got is not None and got.endswith(str(value)), s.name
        else:
            assert got == value, s.name


def test_every_infotext_field_round_trips() -> None:
    for s in FIELDS:
        if s.infotext is None:
            continue
        base = GenerationRequest(prompt="a cat", **INPAINT)  # every key is written in inpaint
        if s.name == "inpaint_padding":
            base = base.replace(inpaint_only_masked=True)
        if s.name == "emphasis":  # written only for a prompt with brackets, as A1111
            base = base.replace(prompt="a (cat)")
        if s.name == "variation_seed":  # written only when it is used
            base = base.replace(variation_strength=0.25)
        if s.name.startswith("seed_resize_from_"):  # written when both sides are set
            base = base.replace(seed_resize_from_w=320, seed_resize_from_h=256)
        value = other_value(s)
        if Mode.INPAINT not in s.modes:  # the hires fix: written in text to image with it on
            base = GenerationRequest(prompt="a cat", hires=True)
            if s.name.startswith("hires_resize_"):  # one side given, the other follows
                value = 1024
        request = base.replace(**{s.name: value}).validated()
        parsed = parse_infotext(to_infotext(request, GenerationInfo())).request
        assert getattr(parsed, s.name) == getattr(request, s.name), s.name


def test_infotext_keys_are_only_written_where_they_matter() -> None:
    txt = to_infotext(GenerationRequest(prompt="a cat", strength=0.3, mask_blur=9))
    assert "Denoising strength" not in txt and "Mask blur" not in txt
    for s in FIELDS:
        if s.infotext is not None and s.modes != frozenset(Mode):
            assert s.infotext.modes == s.modes, s.name


@pytest.mark.parametrize("fmt", ["jsonl", "csv"])
def test_every_field_and_alias_reads_from_prompt_lists(fmt: str) -> None:
    for s in FIELDS:
        if s.name == "prompt":
            continue
        value = other_value(s)
        if s.kind == "loras":
            value = ",".join(_cli_text(value)) if fmt == "csv" else _cli_text(value)
        if s.kind == "units":  # JSON objects, or the CLI's text (";" between units)
            value = (";".join(_cli_text(value)) if fmt == "csv"
                     else [u.to_dict() for u in value])
        plain = (s.infotext.key,) if s.infotext and type(s.infotext) is InfotextKey else ()
        for name in (s.name, *s.aliases, *plain):
            row = {"prompt": "a cat", name: value}
            if s.name == "mask" or s.name.startswith("outpaint_") or s.kind == "units":
                # extends an init image (a control unit without an image uses it)
                row["init_image"] = "a.png"
            if fmt == "jsonl":
                text = json.dumps(row)
            else:
                text = ",".join(row) + "\n" + ",".join(f'"{v}"' for v in row.values())
            parsed = parse_prompt_list(text, format=fmt)
            assert parsed.ok, (s.name, name, parsed.error_report())
            got = getattr(parsed.items[0].request, s.name)
            expected = GenerationRequest.from_dict({"prompt": "x", s.name: value})
            assert got == getattr(expected, s.name), (s.name, name)


@dataclass(frozen=True)
class WithNewField(GenerationRequest):
    """A request after someone adds a field: validation and coercion come with the spec."""

    refiner_switch: float = field(default=0.8, metadata=spec(
        "float", "Refiner switch", minimum=0.0, maximum=1.0))


def test_a_new_field_is_validated_and_coerced_from_its_declaration() -> None:
    assert [s.name for s in request_fields(WithNewField)][-1] == "refiner_switch"
    assert WithNewField.from_dict({"prompt": "x", "refiner_switch": "0.5"}).refiner_switch == 0.5
    with pytest.raises(RequestError, match="refiner switch must be between 0 and 1, not 5"):
        WithNewField(prompt="x", refiner_switch=5.0).validated()
    assert WithNewField(prompt="x").changed_dict() == {"prompt": "x"}
