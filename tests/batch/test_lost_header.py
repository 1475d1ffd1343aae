"""A manifest whose header is lost or damaged, or with garbage lines in the middle: a rerun
recognises the images already made from their own metadata and makes none twice."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest

from sdstudio.batch.plan import BatchOptions, plan_units
from sdstudio.batch.runner import BatchRunner
from sdstudio.core.prompts import PromptList
from sdstudio.storage.manifest import read_manifest
from tests.batch.fakes import FakeEngine
from tests.batch.test_runner import DEFAULTS, check_complete, plist, pngs


def _lines(out: Path) -> list[bytes]:
    return (out / "manifest.jsonl").read_bytes().split(b"\n")


def _write(out: Path, lines: list[bytes]) -> None:
    (out / "manifest.jsonl").write_bytes(b"\n".join(lines))


def delete_header(out: Path) -> None:
    _write(out, _lines(out)[1:])


def truncate_header(out: Path) -> None:
    lines = _lines(out)
    lines[0] = lines[0][: len(lines[0]) // 2]
    _write(out, lines)


def corrupt_header(out: Path) -> None:  # valid JSON, not a header any more
    lines = _lines(out)
    data = json.loads(lines[0])
    data["seeds"] = "lost"
    lines[0] = json.dumps(data).encode()
    _write(out, lines)


def header_with_too_few_seeds(out: Path) -> None:  # this plan's header, but damaged
    lines = _lines(out)
    data = json.loads(lines[0])
    data["seeds"] = data["seeds"][:3]
    lines[0] = json.dumps(data).encode()
    _write(out, lines)


def cut_inside_the_header(out: Path) -> None:  # every record gone too
    _write(out, [_lines(out)[0][:40]])


def delete_the_manifest(out: Path) -> None:
    (out / "manifest.jsonl").unlink()


DAMAGES: list[Callable[[Path], None]] = [
    delete_header, truncate_header, corrupt_header, header_with_too_few_seeds,
    cut_inside_the_header, delete_the_manifest,
]


def _rerun(prompts: PromptList, out: Path, **opts: object) -> tuple[FakeEngine, object]:
    engine = FakeEngine()
    summary = BatchRunner(engine, prompts, BatchOptions(out, **opts)).run()  # type: ignore[arg-type]
    return engine, summary


@pytest.mark.parametrize("damage", DAMAGES, ids=lambda f: f.__name__)
@pytest.mark.parametrize("seeds", ["fixed-default", "random-default", "random-policy"])
def test_a_lost_or_damaged_header_makes_nothing_twice(tmp_path: Path, damage: Callable[
        [Path], None], seeds: str) -> None:
    defaults = DEFAULTS if seeds == "fixed-default" else DEFAULTS.replace(seed=-1)
    opts: dict[str, object] = {"per_prompt": 2}
    if seeds == "random-policy":
        opts["seed_policy"] = "random"
    prompts = plist(5, defaults, extra="--prompt 'own seed' --seed 7\n")
    first = BatchRunner(FakeEngine(), prompts, BatchOptions(tmp_path, **opts))  # type: ignore[arg-type]
    assert first.run().done == 12
    before = read_manifest(tmp_path).header
    assert before is not None
    damage(tmp_path)
    engine, summary = _rerun(prompts, tmp_path, **opts)
    assert engine.calls == [], f"{len(engine.calls)} images made again"
    assert len(pngs(tmp_path)) == 12
    assert summary.skipped == 12 and summary.ok  # type: ignore[attr-defined]
    header = read_manifest(tmp_path).header
    assert header is not None and header.seeds == before.seeds  # recovered from the images
    check_complete(tmp_path, prompts, per_prompt=2)
    engine, summary = _rerun(prompts, tmp_path, **opts)  # and it stays so
    assert engine.calls == [] and summary.skipped == 12  # type: ignore[attr-defined]


def test_a_lost_header_after_a_partial_run_makes_only_the_rest(tmp_path: Path) -> None:
    """The missing images get the seeds the lost header had (one drawn seed, +1 per image)."""
    prompts = plist(8, DEFAULTS.replace(seed=-1))
    first = BatchRunner(FakeEngine(), prompts, BatchOptions(tmp_path))
    first.run()
    before = read_manifest(tmp_path).header
    assert before is not None
    for path in pngs(tmp_path)[5:]:  # as if the run had stopped after five
        path.unlink()
    delete_header(tmp_path)
    engine, _summary = _rerun(prompts, tmp_path)
    assert [r.seed for r in engine.calls] == list(before.seeds[5:])
    check_complete(tmp_path, prompts)


def test_images_of_another_list_or_seed_are_not_adopted(tmp_path: Path) -> None:
    """Adoption needs the plan's key, image index and seed: a list run with another fixed seed
    into the same folder makes its own images."""
    prompts = plist(3)
    BatchRunner(FakeEngine(), prompts, BatchOptions(tmp_path)).run()
    delete_header(tmp_path)
    other_seed = plist(3, DEFAULTS.replace(seed=500))
    engine, _summary = _rerun(other_seed, tmp_path, seed_policy="fixed")
    assert len(engine.calls) == 3 and len(pngs(tmp_path)) == 6


def test_garbage_lines_in_the_middle_of_the_manifest(tmp_path: Path) -> None:
    prompts = plist(10)
    BatchRunner(FakeEngine(), prompts, BatchOptions(tmp_path)).run()
    lines = _lines(tmp_path)
    assert len([line for line in lines if line]) == 11
    lines[4] = b"#junk#" + lines[4]  # a record merged with garbage: lost
    lines[6:6] = [
        b"\x00\xff\xfe binary garbage",
        b"[" * 100_000,  # nested too deep for the JSON parser
        b'{"type": "done", "run": 1, "unit": "x"}',
        b'{"type": "header", "run": "fake"}',
        b'"just a string"',
        b"{" + b"x" * 5000,
    ]
    _write(tmp_path, lines)
    state = read_manifest(tmp_path)
    assert state.header is not None and state.torn_lines == 7
    engine, summary = _rerun(prompts, tmp_path)
    assert engine.calls == [] and summary.skipped == 10  # type: ignore[attr-defined]
    assert len(pngs(tmp_path)) == 10
    check_complete(tmp_path, prompts)
    units = plan_units(prompts, 1, state.header.seeds)
    assert read_manifest(tmp_path).done()[units[3].slot].adopted
