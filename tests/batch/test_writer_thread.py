"""The batch runner saves on one writer thread, overlapping the next image's generation, and
keeps every guarantee of the sequential runner: image on disk before its record, records in
plan order, failures reported, pause/cancel/end wait for the queued images, events sent from
the thread that runs the batch."""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from sdstudio.batch.events import BatchEvent, BatchSummary, UnitDone, UnitFailed, UnitStarted
from sdstudio.batch.plan import BatchOptions
from sdstudio.batch.runner import BatchControl, BatchRunner
from sdstudio.core.request import GenerationRequest
from sdstudio.storage import manifest as manifest_mod
from sdstudio.storage import png as png_mod
from sdstudio.storage.manifest import read_manifest
from sdstudio.storage.png import StorageError
from tests.batch.fakes import FakeEngine
from tests.batch.test_runner import check_complete, plist, pngs


def test_saving_overlaps_the_next_generation(tmp_path: Path,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    """Unit k's save waits until unit k+1's generation has started: a runner that saved
    before generating the next image would never get there (the save times out)."""
    prompts = plist(4)
    started: list[threading.Event] = [threading.Event() for _ in range(4)]
    calls = 0

    def on_call(request: GenerationRequest) -> None:
        nonlocal calls
        started[calls].set()
        calls += 1

    real_save = png_mod.save_image

    def slow_save(image: Any, request: GenerationRequest, *args: Any, **kw: Any) -> Path:
        index = int(request.prompt.split()[-1])
        if index + 1 < len(started) and not started[index + 1].wait(10):
            raise AssertionError("the next image was not started while this one was saved")
        return real_save(image, request, *args, **kw)

    monkeypatch.setattr(png_mod, "save_image", slow_save)
    events: list[BatchEvent] = []
    summary = BatchRunner(FakeEngine(on_call=on_call), prompts, BatchOptions(tmp_path),
                          on_event=events.append).run()
    assert (summary.done, summary.failed) == (4, 0)
    check_complete(tmp_path, prompts)
    assert [e.unit.index for e in events if isinstance(e, UnitDone)] == [0, 1, 2, 3]


def test_image_is_on_disk_before_its_record_and_records_keep_plan_order(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    prompts = plist(6)
    seen: list[int] = []
    real = manifest_mod.ManifestWriter.write_record

    def checked(self: Any, record: Any) -> None:
        if record.status == "done":
            path = tmp_path / record.file
            assert path.is_file()
            with Image.open(path) as im:
                im.load()  # complete, readable
            assert not list(tmp_path.glob(".sdstudio-*.tmp"))
        seen.append(record.unit)
        real(self, record)

    monkeypatch.setattr(manifest_mod.ManifestWriter, "write_record", checked)
    BatchRunner(FakeEngine(), prompts, BatchOptions(tmp_path)).run()
    assert seen == sorted(seen) and len(seen) == 6
    check_complete(tmp_path, prompts)


def test_events_come_from_the_running_thread_and_in_a_sane_order(tmp_path: Path) -> None:
    prompts = plist(5)
    threads: set[int] = set()
    events: list[BatchEvent] = []

    def on_event(event: BatchEvent) -> None:
        threads.add(threading.get_ident())
        events.append(event)

    BatchRunner(FakeEngine(), prompts, BatchOptions(tmp_path), on_event=on_event).run()
    assert threads == {threading.get_ident()}
    assert isinstance(events[-1], BatchSummary) and events[-1].done == 5
    # every unit's UnitDone comes after its own UnitStarted, and before the summary
    order = {id(e): i for i, e in enumerate(events)}
    starts = {e.unit.index: order[id(e)] for e in events if isinstance(e, UnitStarted)}
    for e in events:
        if isinstance(e, UnitDone):
            assert order[id(e)] > starts[e.unit.index]


def test_a_save_that_fails_is_recorded_and_the_batch_goes_on(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    prompts = plist(4)
    real_save = png_mod.save_image

    def flaky(image: Any, request: GenerationRequest, *args: Any, **kw: Any) -> Path:
        if request.prompt == "prompt 1":
            raise StorageError("Could not save the image: the disk is full")
        return real_save(image, request, *args, **kw)

    monkeypatch.setattr(png_mod, "save_image", flaky)
    events: list[BatchEvent] = []
    summary = BatchRunner(FakeEngine(), prompts, BatchOptions(tmp_path),
                          on_event=events.append).run()
    assert (summary.done, summary.failed) == (3, 1)
    failed = [e for e in events if isinstance(e, UnitFailed)]
    assert [f.unit.line_no for f in failed] == [2] and "disk is full" in failed[0].reason
    assert {r.line_no for r in read_manifest(tmp_path).failed().values()} == {2}
    monkeypatch.undo()
    BatchRunner(FakeEngine(), prompts, BatchOptions(tmp_path)).run()  # the retry completes
    check_complete(tmp_path, prompts)


def test_a_save_the_system_refuses_is_recorded_with_its_reason(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Not one of SD Studio's errors: the reason is the system's one line, the details keep
    the traceback, and the next image is still saved."""
    prompts = plist(3)
    real_save = png_mod.save_image

    def refused(image: Any, request: GenerationRequest, *args: Any, **kw: Any) -> Path:
        if request.prompt == "prompt 0":
            raise PermissionError(13, "Permission denied", str(tmp_path / "0.png"))
        return real_save(image, request, *args, **kw)

    monkeypatch.setattr(png_mod, "save_image", refused)
    events: list[BatchEvent] = []
    summary = BatchRunner(FakeEngine(), prompts, BatchOptions(tmp_path),
                          on_event=events.append).run()
    assert (summary.done, summary.failed) == (2, 1)
    [failed] = [e for e in events if isinstance(e, UnitFailed)]
    assert failed.reason == f"Permission denied: {tmp_path / '0.png'}"
    assert failed.kind == "PermissionError" and "Traceback" in failed.details
    [record] = read_manifest(tmp_path).failed().values()
    assert record.reason == failed.reason and record.line_no == 1


def test_a_manifest_that_cannot_be_written_stops_the_run(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    prompts = plist(5)
    real = manifest_mod.ManifestWriter.write_record
    writes = 0

    def broken(self: Any, record: Any) -> None:
        nonlocal writes
        writes += 1
        if writes >= 2:
            raise OSError(28, "No space left on device")
        real(self, record)

    monkeypatch.setattr(manifest_mod.ManifestWriter, "write_record", broken)
    engine = FakeEngine(on_call=lambda request: time.sleep(0.05))  # a save takes ~ms
    with pytest.raises(OSError, match="No space"):
        BatchRunner(engine, prompts, BatchOptions(tmp_path)).run()
    assert len(engine.calls) <= 3  # it stopped instead of generating on
    assert not [t for t in threading.enumerate() if t.name == "sdstudio-batch-writer"]
    monkeypatch.undo()
    BatchRunner(FakeEngine(), prompts, BatchOptions(tmp_path)).run()  # resume completes
    check_complete(tmp_path, prompts)


def test_cancel_keeps_the_images_already_made(tmp_path: Path,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    """A cancel during unit 3's generation: units 1-2 were decoded (their saves may still be
    queued) and must be saved and reported, unit 3 is not."""
    prompts = plist(5)
    control = BatchControl()
    real_save = png_mod.save_image
    release = threading.Event()

    def slow_save(*args: Any, **kw: Any) -> Path:
        release.wait(5)
        return real_save(*args, **kw)

    def on_call(request: GenerationRequest) -> None:
        if request.prompt == "prompt 2":
            control.cancel()
            release.set()

    monkeypatch.setattr(png_mod, "save_image", slow_save)
    events: list[BatchEvent] = []
    summary = BatchRunner(FakeEngine(on_call=on_call), prompts, BatchOptions(tmp_path),
                          control=control, on_event=events.append).run()
    assert summary.cancelled and summary.done == 2 and summary.not_run == 3
    assert len(pngs(tmp_path)) == 2
    assert len(read_manifest(tmp_path).done()) == 2
    assert len([e for e in events if isinstance(e, UnitDone)]) == 2
