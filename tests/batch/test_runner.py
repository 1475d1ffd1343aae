"""The batch runner with a fake engine: plans, seed policies, resume, failures, crashes."""

from __future__ import annotations

import contextlib
import dataclasses
import itertools
import threading
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TypeVar

import pytest
from PIL import Image

from sdstudio.batch.events import BatchEvent, BatchPaused, UnitDone, UnitFailed
from sdstudio.batch.plan import BatchOptions, decide_seeds, plan_units
from sdstudio.batch.runner import BadLinesError, BatchControl, BatchRunner, ListChangedError
from sdstudio.core.errors import ImageInputError, OutOfMemoryError
from sdstudio.core.prompts import PromptList, parse_prompt_list
from sdstudio.core.request import GenerationInfo, GenerationRequest
from sdstudio.storage.manifest import read_manifest
from sdstudio.storage.png import read_image_metadata, save_image
from tests.batch.fakes import FakeEngine

T = TypeVar("T")
DEFAULTS = GenerationRequest(prompt="", width=64, height=64, steps=2, seed=100)


def plist(n: int = 5, defaults: GenerationRequest = DEFAULTS, extra: str = "") -> PromptList:
    return parse_prompt_list("\n".join(f"prompt {i}" for i in range(n)) + "\n" + extra, defaults)


def pngs(folder: Path) -> list[Path]:
    return sorted(folder.rglob("*.png"))


def run(prompts: PromptList, out: Path, engine: FakeEngine | None = None,
        events: list[BatchEvent] | None = None, **opts: object) -> BatchRunner:
    runner = BatchRunner(engine or FakeEngine(), prompts,
                         BatchOptions(out_dir=out, **opts),  # type: ignore[arg-type]
                         on_event=(events.append if events is not None else lambda e: None))
    runner.run()
    return runner


def check_complete(out: Path, prompts: PromptList, per_prompt: int = 1) -> None:
    """Every unit done exactly once; every file's metadata matches its line."""
    state = read_manifest(out)
    assert state.header is not None
    units = plan_units(prompts, per_prompt, state.header.seeds)
    done = state.done()
    assert {u.slot for u in units} == set(done)
    files = pngs(out)
    assert len(files) == len(units), "duplicates or strays"
    for unit in units:
        rec = done[unit.slot]
        meta = read_image_metadata(out / rec.file)  # type: ignore[operator]
        assert meta.request.prompt == unit.request.prompt
        assert meta.request.seed == unit.seed == rec.seed
    assert not list(out.rglob(".sdstudio-*.tmp"))


def test_runs_every_unit_and_a_rerun_skips_all(tmp_path: Path) -> None:
    prompts = plist(4, extra="--prompt many --n_iter 2 --batch_size 2\n")
    events: list[BatchEvent] = []
    runner = run(prompts, tmp_path, per_prompt=2, events=events)
    assert runner.prepared is not None and len(runner.prepared.units) == 4 * 2 + 2 * 2 * 2
    check_complete(tmp_path, prompts, per_prompt=2)
    summary = events[-1]
    assert summary.done == 16 and summary.skipped == 0 and summary.ok  # type: ignore[union-attr]
    events.clear()
    engine = FakeEngine()
    run(prompts, tmp_path, engine, per_prompt=2, events=events)
    assert engine.calls == []
    assert events[-1].skipped == 16 and events[-1].done == 0  # type: ignore[union-attr]


def test_seed_policies() -> None:
    prompts = parse_prompt_list("a\nb\n--prompt c --seed 7\n", DEFAULTS)
    assert decide_seeds(prompts, 2, "fixed") == [100, 101, 100, 101, 7, 8]
    assert decide_seeds(prompts, 2, "increment") == [100, 101, 102, 103, 7, 8]
    counter = itertools.count(1000)
    assert decide_seeds(prompts, 2, "random", lambda: next(counter)) == [
        1000, 1001, 1002, 1003, 7, 8]
    random_default = parse_prompt_list("a\nb\n", DEFAULTS.replace(seed=-1))
    counter = itertools.count(50)
    assert decide_seeds(random_default, 2, "fixed", lambda: next(counter)) == [50, 51, 50, 51]
    counter = itertools.count(50)
    assert decide_seeds(random_default, 2, "increment", lambda: next(counter)) == [50, 51, 52, 53]


def test_random_seeds_are_recorded_and_reused_on_resume(tmp_path: Path) -> None:
    prompts = plist(6, DEFAULTS.replace(seed=-1))
    control = BatchControl()
    engine = FakeEngine(on_call=lambda r: len(engine.calls) == 3 and control.cancel())
    runner = BatchRunner(engine, prompts, BatchOptions(tmp_path, seed_policy="random"),
                         control=control)
    summary = runner.run()
    assert summary.cancelled and summary.done == 2
    header = read_manifest(tmp_path).header
    assert header is not None and len(set(header.seeds)) == 6
    engine2 = FakeEngine()
    run(prompts, tmp_path, engine2, seed_policy="random")
    assert [r.seed for r in engine2.calls] == list(header.seeds[2:])
    check_complete(tmp_path, prompts)


def test_failure_on_one_item_leaves_the_others_done(tmp_path: Path) -> None:
    prompts = plist(5)

    def fail(request: GenerationRequest) -> BaseException | None:
        if request.prompt == "prompt 2":
            return OutOfMemoryError("out of memory on the GPU: try a smaller size")
        if request.prompt == "prompt 3":
            return RuntimeError("boom")
        return None

    events: list[BatchEvent] = []
    run(prompts, tmp_path, FakeEngine(fail), events=events)
    summary = events[-1]
    assert (summary.done, summary.failed) == (3, 2)  # type: ignore[union-attr]
    failed = [e for e in events if isinstance(e, UnitFailed)]
    assert [f.unit.line_no for f in failed] == [3, 4]
    assert "out of memory" in failed[0].reason and failed[1].reason == "RuntimeError: boom"
    state = read_manifest(tmp_path)
    assert {r.line_no for r in state.failed().values()} == {3, 4}
    assert {r.line_no for r in state.done().values()} == {1, 2, 5}
    # a rerun retries only the failed ones
    engine = FakeEngine()
    run(prompts, tmp_path, engine)
    assert [r.prompt for r in engine.calls] == ["prompt 2", "prompt 3"]
    check_complete(tmp_path, prompts)


def test_bad_init_image_fails_that_line_only(tmp_path: Path) -> None:
    prompts = parse_prompt_list(f"a\n--prompt b --init_image {tmp_path / 'missing.png'}\nc\n",
                                DEFAULTS)

    def fail(request: GenerationRequest) -> BaseException | None:
        return ImageInputError("init image missing") if request.init_image else None

    events: list[BatchEvent] = []
    run(prompts, tmp_path / "out", FakeEngine(fail), events=events)
    assert [e.unit.line_no for e in events if isinstance(e, UnitDone)] == [1, 3]


def test_bad_lines_refused_unless_skipped(tmp_path: Path) -> None:
    prompts = parse_prompt_list("a\n--prompt b --steps 0\nc\n", DEFAULTS)
    with pytest.raises(BadLinesError, match="line 2"):
        run(prompts, tmp_path)
    assert not pngs(tmp_path)
    run(prompts, tmp_path, skip_bad_lines=True)
    assert len(pngs(tmp_path)) == 2


def test_changed_list_needs_a_decision(tmp_path: Path) -> None:
    first = plist(4)
    run(first, tmp_path)
    text = "# new comment\n" + "\n".join(f"prompt {i}" for i in range(4))
    comment_only = parse_prompt_list(text, DEFAULTS)
    engine = FakeEngine()
    run(comment_only, tmp_path, engine)  # same plan: nothing to do, no question
    assert engine.calls == []

    changed = parse_prompt_list("prompt 0\nprompt NEW\nprompt 2\nprompt 3\nprompt 4\n",
                                DEFAULTS)
    with pytest.raises(ListChangedError, match="resume it"):
        run(changed, tmp_path)
    with pytest.raises(ListChangedError):
        run(first, tmp_path, per_prompt=2)  # options changed too
    engine = FakeEngine()
    run(changed, tmp_path, engine, on_change="resume")
    assert [r.prompt for r in engine.calls] == ["prompt NEW", "prompt 4"]
    files = pngs(tmp_path)
    assert len(files) == 6  # 4 old (one, "prompt 1", no longer in the list) + 2 new
    state = read_manifest(tmp_path)
    assert state.header is not None
    plan = plan_units(changed, 1, state.header.seeds)
    assert {u.slot for u in plan} <= set(state.done())

    engine = FakeEngine()
    run(changed, tmp_path, engine, on_change="restart")  # same list now: no change -> resume
    assert engine.calls == []
    run(changed, tmp_path, engine, restart=True)
    assert len(engine.calls) == 5 and len(pngs(tmp_path)) == 11  # never overwritten


def test_image_saved_without_its_record_is_adopted(tmp_path: Path) -> None:
    """Killed between the atomic image write and the manifest line."""
    prompts = plist(4)
    control = BatchControl()
    engine = FakeEngine(on_call=lambda r: len(engine.calls) == 3 and control.cancel())
    runner = BatchRunner(engine, prompts, BatchOptions(tmp_path), control=control)
    runner.run()
    prepared = runner.prepared
    assert prepared is not None
    unit = prepared.units[2]
    ready = FakeEngine().generate(unit.request)[0]
    info = dataclasses.replace(ready.info, notes=(unit.tag(prepared.header.run_id),))
    save_image(ready.image, ready.request, info, tmp_path)  # the image, no record
    # an unrelated PNG and a stale temp file in the folder
    Image.new("RGB", (8, 8)).save(tmp_path / "unrelated.png")
    (tmp_path / ".sdstudio-dead.tmp").write_bytes(b"partial")
    events: list[BatchEvent] = []
    engine2 = FakeEngine()
    run(prompts, tmp_path, engine2, events=events)
    assert [r.prompt for r in engine2.calls] == ["prompt 3"]
    planned = events[0]
    assert planned.adopted == 1 and planned.removed_temp_files == 1  # type: ignore[union-attr]
    (tmp_path / "unrelated.png").unlink()
    check_complete(tmp_path, prompts)
    assert read_manifest(tmp_path).done()[unit.slot].adopted


def test_pattern_with_subfolders_and_prompt(tmp_path: Path) -> None:
    prompts = plist(2)
    run(prompts, tmp_path, pattern="{date}/{prompt}-{seed}-{index}")
    files = pngs(tmp_path)
    assert len(files) == 2 and all(f.parent.parent == tmp_path for f in files)
    assert files[0].name.startswith("prompt 0-100-")
    check_complete(tmp_path, prompts)


def test_pause_after_current_image_then_resume(tmp_path: Path) -> None:
    prompts = plist(4)
    control = BatchControl()
    gate = threading.Event()

    def on_call(request: GenerationRequest) -> None:
        if request.prompt == "prompt 1":
            control.pause()
            gate.set()

    events: list[BatchEvent] = []
    runner = BatchRunner(FakeEngine(on_call=on_call), prompts, BatchOptions(tmp_path),
                         control=control, on_event=events.append)
    thread = threading.Thread(target=runner.run)
    thread.start()
    assert gate.wait(5)
    deadline = 50
    while not any(isinstance(e, BatchPaused) for e in events) and deadline:
        threading.Event().wait(0.05)
        deadline -= 1
    assert len(pngs(tmp_path)) == 2  # the current image was finished
    control.resume()
    thread.join(5)
    assert not thread.is_alive()
    assert [e.paused for e in events if isinstance(e, BatchPaused)] == [True, False]
    check_complete(tmp_path, prompts)


class FakeProcesses:
    """Two processes simulated one after the other (barriers are no-ops here)."""

    def __init__(self, rank: int, world: int) -> None:
        self.rank, self.world, self.device = rank, world, "cpu"

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @contextlib.contextmanager
    def main_process_first(self) -> Iterator[None]:
        yield

    def wait_for_everyone(self) -> None:
        return None

    def split(self, items: Sequence[T]) -> list[T]:  # accelerate's contiguous split
        per, extra = divmod(len(items), self.world)
        start = self.rank * per + min(self.rank, extra)
        return list(items[start:start + per + (1 if self.rank < extra else 0)])


def test_split_between_processes_writes_rank_manifests(tmp_path: Path) -> None:
    prompts = plist(5)
    options = BatchOptions(tmp_path)
    r0 = BatchRunner(FakeEngine(), prompts, options, processes=FakeProcesses(0, 2))
    r1 = BatchRunner(FakeEngine(), prompts, options, processes=FakeProcesses(1, 2))
    r0.prepare()
    r1.prepare()  # both prepare before either runs, as with the barrier
    s0, s1 = r0.run(), r1.run()
    assert (s0.done, s1.done) == (3, 2)
    assert (tmp_path / "manifest.rank1.jsonl").exists()
    check_complete(tmp_path, prompts)
    engine = FakeEngine()
    run(prompts, tmp_path, engine)  # a single-process resume sees everything done
    assert engine.calls == []


def test_model_loaded_once_across_modes(tmp_path: Path) -> None:
    init = tmp_path / "init.png"
    Image.new("RGB", (64, 64)).save(init)
    prompts = parse_prompt_list(f"a\n--prompt b --init_image {init}\nc\n", DEFAULTS)
    engine = FakeEngine()
    run(prompts, tmp_path / "out", engine)
    assert engine.loads == 1 and len(engine.calls) == 3


def test_info_note_carries_the_batch_tag(tmp_path: Path) -> None:
    prompts = plist(1)
    runner = run(prompts, tmp_path)
    meta = read_image_metadata(pngs(tmp_path)[0])
    assert meta.info is not None and isinstance(meta.info, GenerationInfo)
    assert runner.prepared is not None
    assert meta.info.notes[-1] == runner.prepared.units[0].tag(runner.prepared.header.run_id)
