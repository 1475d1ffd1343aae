"""A batch holds its output folder's lock for its whole run: a second batch into the folder is
refused at once (no image made twice), a dead holder's lock is taken over, the processes of one
multi-process run share the lock and another launch's do not."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from sdstudio.batch.events import BatchSummary
from sdstudio.batch.plan import BatchOptions
from sdstudio.batch.runner import BatchRunner
from sdstudio.storage.manifest import (
    BATCH_LOCK_INFO,
    BatchLock,
    FolderInUseError,
    read_lock_info,
)
from tests.batch.fakes import FakeEngine
from tests.batch.test_runner import FakeProcesses, check_complete, plist, pngs

ROOT = Path(__file__).resolve().parents[2]


def test_a_second_batch_is_refused_while_the_first_runs(tmp_path: Path) -> None:
    prompts = plist(6)
    entered, refused = threading.Event(), threading.Event()

    def on_call(request: Any) -> None:
        if len(engine.calls) == 3:  # two images made, the third being made
            entered.set()
            assert refused.wait(20)

    engine = FakeEngine(on_call=on_call)
    first = BatchRunner(engine, prompts, BatchOptions(tmp_path))
    result: list[BatchSummary] = []
    thread = threading.Thread(target=lambda: result.append(first.run()))
    thread.start()
    try:
        assert entered.wait(20)
        second_engine = FakeEngine()
        second = BatchRunner(second_engine, prompts, BatchOptions(tmp_path), owner="window")
        t0 = time.perf_counter()
        with pytest.raises(FolderInUseError) as refusal:
            second.run()
        assert time.perf_counter() - t0 < 2  # at once, not after the first ends
    finally:
        refused.set()
        thread.join(20)
    message = str(refusal.value)
    assert "\n" not in message and "is in use by another batch" in message
    assert f"pid {os.getpid()} on {socket.gethostname()}" in message
    assert "sdstudio batch on the command line" in message and "started 20" in message
    assert first.prepared is not None and f"run {first.prepared.header.run_id}" in message
    assert second_engine.calls == []
    assert result and result[0].done == 6
    check_complete(tmp_path, prompts)  # 6 images for 6: none twice
    assert not (tmp_path / BATCH_LOCK_INFO).exists()  # released at the end
    third = FakeEngine()
    assert BatchRunner(third, prompts, BatchOptions(tmp_path)).run().skipped == 6
    assert third.calls == []


def test_two_batches_started_together_make_every_image_once(tmp_path: Path) -> None:
    prompts = plist(8)
    go = threading.Barrier(2)
    outcomes: list[object] = []

    def one() -> None:
        runner = BatchRunner(FakeEngine(on_call=lambda r: time.sleep(0.01)), prompts,
                             BatchOptions(tmp_path))
        go.wait()
        try:
            outcomes.append(runner.run())
        except FolderInUseError as exc:
            outcomes.append(exc)

    threads = [threading.Thread(target=one) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    made = sum(o.done for o in outcomes if isinstance(o, BatchSummary))
    refused = [o for o in outcomes if isinstance(o, FolderInUseError)]
    # either the second was refused, or it started after the first ended and had nothing to do
    assert made == 8 and len(pngs(tmp_path)) == 8 and len(outcomes) == 2
    assert len(refused) <= 1
    check_complete(tmp_path, prompts)


HOLDER = textwrap.dedent("""
    import sys, time
    from pathlib import Path
    from sdstudio.batch.plan import BatchOptions
    from sdstudio.batch.runner import BatchRunner
    from tests.batch.fakes import FakeEngine
    from tests.batch.test_runner import plist

    out, flag = Path(sys.argv[1]), Path(sys.argv[2])

    def on_call(request):
        if len(engine.calls) == 3:
            flag.write_text("busy")
            time.sleep(120)  # killed here

    engine = FakeEngine(on_call=on_call)
    BatchRunner(engine, plist(5), BatchOptions(out)).run()
""")


def _done_records(out: Path) -> int:
    try:
        return (out / "manifest.jsonl").read_bytes().count(b'"type": "done"')
    except FileNotFoundError:
        return 0


@pytest.mark.skipif(sys.platform == "win32", reason="SIGKILL")
def test_another_process_is_refused_then_its_lock_is_taken_over_after_kill_9(
        tmp_path: Path) -> None:
    out, flag = tmp_path / "out", tmp_path / "busy"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen([sys.executable, "-c", HOLDER, str(out), str(flag)], cwd=ROOT,
                            env=env)
    try:
        deadline = time.monotonic() + 60
        while not (flag.exists() and _done_records(out) == 2) and proc.poll() is None \
                and time.monotonic() < deadline:
            time.sleep(0.02)
        assert flag.exists() and _done_records(out) == 2, "the holder did not start"
        prompts = plist(5)
        engine = FakeEngine()
        with pytest.raises(FolderInUseError) as refusal:
            BatchRunner(engine, prompts, BatchOptions(out)).run()
        assert f"pid {proc.pid} on " in str(refusal.value) and engine.calls == []
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(30)
    stale = read_lock_info(out)
    assert stale is not None and stale.pid == proc.pid  # left behind by the killed process
    runner = BatchRunner(engine, prompts, BatchOptions(out))
    prepared = runner.prepare()
    assert runner._lock is not None and runner._lock.stale == stale  # taken over
    lock_info = read_lock_info(out)
    assert lock_info is not None and lock_info.pid == os.getpid()
    assert lock_info.run == prepared.header.run_id
    summary = runner.run()
    assert summary.skipped == 2 and summary.done == 3
    check_complete(out, prompts)


def test_the_ranks_of_one_launch_share_the_lock_and_another_launch_is_refused(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    prompts = plist(5)
    options = BatchOptions(tmp_path)
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("MASTER_ADDR", "127.0.0.1")
    monkeypatch.setenv("MASTER_PORT", "29500")
    r0 = BatchRunner(FakeEngine(), prompts, options, processes=FakeProcesses(0, 2))
    r0.prepare()
    info = read_lock_info(tmp_path)
    assert info is not None and info.world == 2 and info.group.endswith("127.0.0.1:29500")
    monkeypatch.setenv("MASTER_PORT", "29501")  # rank 1 of another launch
    other = BatchRunner(FakeEngine(), prompts, options, processes=FakeProcesses(1, 2))
    with pytest.raises(FolderInUseError, match="2 processes"):
        other.prepare()
    monkeypatch.setenv("MASTER_PORT", "29500")
    r1 = BatchRunner(FakeEngine(), prompts, options, processes=FakeProcesses(1, 2))
    r1.prepare()  # joins
    assert (r0.run().done, r1.run().done) == (3, 2)
    check_complete(tmp_path, prompts)
    # a rank whose main process holds no lock (it was refused, or it died) does not run
    late = BatchRunner(FakeEngine(), prompts, options, processes=FakeProcesses(1, 2))
    with pytest.raises(FolderInUseError, match="main process does not hold it"):
        late.prepare()


def test_lock_info_is_data(tmp_path: Path) -> None:
    """A hostile or broken info file is shown escaped on one line, or not at all."""
    (tmp_path / BATCH_LOCK_INFO).write_text(
        '{"pid": "x", "host": "evil\\u001b[2J\\nhost", "started": 5, "what": "cli"}')
    info = read_lock_info(tmp_path)
    assert info is not None and info.pid == -1 and info.started == ""
    assert "\x1b" not in info.host and "\n" not in info.host
    for broken in ("[" * 100_000, "{", "x" * 100_000):
        (tmp_path / BATCH_LOCK_INFO).write_text(broken)
        assert read_lock_info(tmp_path) is None
    with BatchLock.acquire(tmp_path, "window") as lock:  # a free lock is taken over
        assert lock.locked and lock.stale is None
        with pytest.raises(FolderInUseError, match="batch tab of an SD Studio window"):
            BatchLock.acquire(tmp_path)
    with BatchLock.acquire(tmp_path) as again:
        assert again.locked
    assert not (tmp_path / BATCH_LOCK_INFO).exists()
