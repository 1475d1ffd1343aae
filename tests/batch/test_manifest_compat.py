"""Batch keys survive new request fields: a manifest written by SD Studio 0.1 (key encoding 1,
kept in tests/batch/data/v1-batch) still resumes, and adding a field with a default changes
no key in either encoding."""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass, field
from pathlib import Path

from PIL import Image

from sdstudio.batch.plan import BatchOptions, fingerprint, item_keys, request_key_data
from sdstudio.batch.runner import BatchRunner
from sdstudio.core.fields import request_fields, spec
from sdstudio.core.prompts import PromptItem, PromptList, parse_prompt_list
from sdstudio.core.request import GenerationRequest
from sdstudio.storage.manifest import MANIFEST_VERSION, read_manifest
from tests.batch.fakes import FakeEngine

DATA = Path(__file__).parent / "data" / "v1-batch"
# the defaults the batch was started with (its manifest header records them)
DEFAULTS = GenerationRequest(prompt="", steps=4, width=64, height=64, seed=100)


@dataclass(frozen=True)
class WithNewField(GenerationRequest):
    """GenerationRequest as it would be after someone adds a field with a default."""

    refiner_switch: float = field(default=0.8, metadata=spec(
        "float", "Refiner switch", minimum=0.0, maximum=1.0))


def _v1_folder(tmp_path: Path) -> tuple[Path, PromptList, list[dict[str, object]]]:
    out = tmp_path / "out"
    out.mkdir()
    shutil.copy(DATA / "manifest.jsonl", out / "manifest.jsonl")
    records = [json.loads(line) for line in (DATA / "manifest.jsonl").read_text().splitlines()]
    for rec in records[1:]:  # the images the interrupted batch had made
        Image.new("RGB", (8, 8), "gray").save(out / str(rec["file"]))
    prompts = parse_prompt_list(DATA / "prompts.txt", DEFAULTS, name="prompts.txt")
    assert prompts.ok
    return out, prompts, records


def _extended(prompts: PromptList, **new: object) -> PromptList:
    items = tuple(
        PromptItem(it.line_no, WithNewField(**it.request.to_dict() | new,
                                            ).replace(loras=it.request.loras,
                                                      control_units=it.request.control_units),
                   it.explicit)
        for it in prompts.items)
    return PromptList(items, prompts.errors, prompts.source_sha256, prompts.format,
                      prompts.source_name)


def test_a_version_1_manifest_resumes_where_it_stopped(tmp_path: Path) -> None:
    out, prompts, records = _v1_folder(tmp_path)
    header = read_manifest(out).header
    assert header is not None and header.version == 1 and MANIFEST_VERSION == 2
    engine = FakeEngine()
    runner = BatchRunner(engine, prompts, BatchOptions(out_dir=out, pattern="{index}-{seed}"),
                         defaults=DEFAULTS)
    prepared = runner.prepare()  # no ListChangedError: the plan is recognised
    assert len(prepared.done) == 2
    assert [u.seed for u in prepared.pending] == [7, 8]
    summary = runner.run()
    assert summary.ok and [r.seed for r in engine.calls] == [7, 8]
    state = read_manifest(out)
    assert state.header is not None and state.header.version == 1  # the folder keeps it
    assert len(state.done()) == 4
    assert {rec["key"] for rec in records[1:]} <= {key for key, _ in state.done()}


def test_keys_ignore_a_new_field_at_its_default(tmp_path: Path) -> None:
    out, prompts, records = _v1_folder(tmp_path)
    header = read_manifest(out).header
    assert header is not None
    extended = _extended(prompts)
    assert [s.name for s in request_fields(WithNewField)][-1] == "refiner_switch"
    for encoding in (1, 2):
        assert item_keys(extended, encoding) == item_keys(prompts, encoding)
        assert (fingerprint(extended, 1, "increment", encoding)
                == fingerprint(prompts, 1, "increment", encoding))
    assert item_keys(extended, 1)[:2] == [rec["key"] for rec in records[1:]]
    assert fingerprint(extended, 1, "increment", 1) == header.fingerprint
    # ... and a new field set to another value is a different image: another key
    changed = _extended(prompts, refiner_switch=0.5)
    for encoding in (1, 2):
        assert set(item_keys(changed, encoding)).isdisjoint(item_keys(prompts, encoding))


def test_current_encoding_hashes_only_changed_values() -> None:
    request = GenerationRequest(prompt="a cat", steps=30, sampler="DDIM")
    assert request_key_data(request) == {"prompt": "a cat", "steps": 30, "sampler": "DDIM"}
    assert request_key_data(GenerationRequest(prompt="a cat")) == {"prompt": "a cat"}
