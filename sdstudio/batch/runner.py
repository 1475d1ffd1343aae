"""The batch runner: a validated prompt list -> images in a folder, crash-safe and resumable.

No Qt and no torch here: the engine is passed in (anything with the Engine's ``generate``),
so the CLI, the window's worker thread and the tests (with a fake engine) share this code.

Order of writes for every unit: the image is saved atomically (storage.png.save_image: temp
file, fsync, hard-link to a name that is never overwritten, folder fsync) *before* its manifest
record is appended and fsynced. So after ``kill -9`` at any moment the folder holds, besides
complete images with records, at most one stale temp file (removed on the next start) and one
complete image without its record (adopted on the next start from the batch tag in its
metadata).

Saving overlaps the next image's generation: one writer thread (``batch.writer.Saver``)
saves the images and writes the records, in plan order (see sdstudio/batch/writer.py).
"""

from __future__ import annotations

import dataclasses
import logging
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from sdstudio.batch.distributed import Processes, Single, group_id
from sdstudio.batch.events import (
    BatchCallback,
    BatchPaused,
    BatchPlanned,
    BatchSummary,
    UnitDone,
    UnitEngineEvent,
    UnitFailed,
    UnitStarted,
    ignore_batch_event,
)
from sdstudio.batch.plan import (
    KEY_ENCODINGS,
    BatchOptions,
    WorkUnit,
    count_units,
    decide_seeds,
    fingerprint,
    parse_tag,
    plan_units,
)
from sdstudio.batch.writer import Saved, Saver
from sdstudio.core.cancel import CancelToken
from sdstudio.core.errors import (
    CancelledError,
    PromptListError,
    SDStudioError,
    describe_error,
)
from sdstudio.core.events import EngineEvent, ImageReady
from sdstudio.core.prompts import PromptList
from sdstudio.core.request import MAX_SEED, GenerationRequest
from sdstudio.storage.manifest import (
    MANIFEST_VERSION,
    BatchLock,
    ManifestHeader,
    ManifestWriter,
    UnitRecord,
    check_group_lock,
    image_files,
    manifest_files,
    new_run_id,
    read_manifest,
    remove_stale_temp_files,
)

log = logging.getLogger(__name__)


class GeneratingEngine(Protocol):
    def generate(
        self, request: GenerationRequest, on_event: Any = ..., cancel: CancelToken | None = None
    ) -> list[ImageReady]: ...


class BadLinesError(PromptListError):
    """The list has bad lines and the person did not choose to run the good ones."""

    def __init__(self, prompts: PromptList) -> None:
        n = len(prompts.errors)
        super().__init__(
            f"{n} bad line{'s' if n != 1 else ''} in the prompt list "
            f"(first: {prompts.errors[0]})",
            prompts.error_report(),
        )
        self.prompts = prompts


class ListChangedError(SDStudioError):
    """The output folder holds a batch of a different list (or different options)."""

    def __init__(self, header: ManifestHeader, source_sha256: str, out_dir: Path) -> None:
        what = (
            "the prompt list changed"
            if header.source_sha256 != source_sha256
            else "the prompts or batch options changed"
        )
        super().__init__(
            f"{out_dir} holds a batch of {header.source or 'another list'} and {what} since it "
            "started; choose to resume it (keep the images made for unchanged lines) or "
            "restart it",
            f"run {header.run_id}, created {header.created}",
        )
        self.header = header


class BatchControl:
    """Pause / resume / cancel, shared between the thread that runs the batch and the one that
    steers it. Pausing takes effect after the current image."""

    def __init__(self) -> None:
        self.cancel_token = CancelToken()
        self._running = threading.Event()
        self._running.set()

    @property
    def paused(self) -> bool:
        return not self._running.is_set()

    @property
    def cancelled(self) -> bool:
        return self.cancel_token.cancelled

    def pause(self) -> None:
        self._running.clear()

    def resume(self) -> None:
        self._running.set()

    def cancel(self) -> None:
        self.cancel_token.cancel()
        self._running.set()

    def wait_while_paused(self, timeout: float | None = None) -> bool:
        """Block while paused; False once cancelled."""
        self._running.wait(timeout)
        return not self.cancelled


@dataclass(frozen=True)
class PreparedBatch:
    header: ManifestHeader
    units: tuple[WorkUnit, ...]
    done: dict[tuple[str, int], UnitRecord]
    pending: tuple[WorkUnit, ...]  # not done, in plan order (all processes)
    mine: tuple[WorkUnit, ...]  # this process's share of ``pending``
    resumed: bool
    adopted: int = 0
    removed_temp_files: int = 0


class BatchRunner:
    def __init__(
        self,
        engine: GeneratingEngine,
        prompts: PromptList,
        options: BatchOptions,
        *,
        on_event: BatchCallback = ignore_batch_event,
        control: BatchControl | None = None,
        processes: Processes | None = None,
        defaults: GenerationRequest | None = None,
        seed_draw: Any = None,  # () -> int, for tests
        owner: str = "cli",  # who runs it, for the folder lock's refusal: "cli" | "window"
    ) -> None:
        self.engine = engine
        self.prompts = prompts
        self.options = options.check()
        self.on_event = on_event
        self.control = control or BatchControl()
        self.processes: Processes = processes or Single()
        self.defaults = defaults
        self._seed_draw = seed_draw
        self.out_dir = Path(options.out_dir)
        self.prepared: PreparedBatch | None = None
        self.owner = owner
        self._lock: BatchLock | None = None

    # ------------------------------------------------------------------------------ prepare
    def prepare(self) -> PreparedBatch:
        """Lock the output folder, decide the run (fresh, resume, restart), recover from a
        crash, split the work. Raises BadLinesError, ListChangedError, PromptListError,
        FolderInUseError (another batch runs into the folder). The lock is held until
        :meth:`run` ends (or :meth:`release_lock`)."""
        try:
            return self._prepare()
        except BaseException:
            self.release_lock()
            raise

    def release_lock(self) -> None:
        if self._lock is not None:
            self._lock.release()
            self._lock = None

    def _prepare(self) -> PreparedBatch:
        prompts, opts = self.prompts, self.options
        if prompts.errors and not opts.skip_bad_lines:
            raise BadLinesError(prompts)
        if not prompts.items:
            raise PromptListError("the prompt list has no prompts to run")
        procs = self.processes
        error: SDStudioError | None = None
        resumed = False
        adopted = removed = 0
        with procs.main_process_first():
            if procs.is_main:
                try:
                    if self._lock is None:  # the group's lock: the others join it below
                        self._lock = BatchLock.acquire(self.out_dir, self.owner, group_id(),
                                                       procs.world)
                        if self._lock.stale is not None:
                            log.warning("took over the lock of %s: %s (no longer running)",
                                        self.out_dir, self._lock.stale.describe())
                    resumed, adopted, removed = self._decide_run()
                except SDStudioError as exc:  # re-raised after the barrier, never inside it
                    error = exc
                except OSError as exc:
                    error = SDStudioError(
                        f"cannot use the output folder {self.out_dir}: {describe_error(exc)}")
        if error is not None:
            raise error
        state = read_manifest(self.out_dir)
        header = state.header
        if header is None:
            raise SDStudioError(f"no batch manifest in {self.out_dir}")
        if not procs.is_main:  # joins the lock rank 0 holds for this run and launch
            check_group_lock(self.out_dir, header.run_id, group_id())
        if header.fingerprint != self._fingerprint(header.version):
            raise ListChangedError(header, prompts.source_sha256, self.out_dir)
        units = tuple(plan_units(prompts, opts.per_prompt, header.seeds, header.version))
        done = state.done()
        pending = tuple(u for u in units if u.slot not in done)
        procs.wait_for_everyone()  # nobody writes a record before everyone has read
        mine = tuple(procs.split(pending))
        self.prepared = PreparedBatch(
            header, units, done, pending, mine, resumed or bool(done), adopted, removed
        )
        return self.prepared

    def _fingerprint(self, encoding: int) -> str:
        if encoding not in KEY_ENCODINGS:
            raise SDStudioError(
                f"the batch in {self.out_dir} was started by a newer SD Studio (manifest "
                f"version {encoding}); update SD Studio, or restart the batch")
        return fingerprint(self.prompts, self.options.per_prompt, self.options.seed_policy,
                           encoding)

    def _decide_run(self) -> tuple[bool, int, int]:
        """Main process only: write the header when a run starts; clean up after a crash.
        A resumed batch keeps its manifest's key encoding; a new or restarted one uses the
        current one."""
        opts, prompts = self.options, self.prompts
        self.out_dir.mkdir(parents=True, exist_ok=True)
        state = read_manifest(self.out_dir)
        old = state.header
        if old is not None and not opts.restart and old.version in KEY_ENCODINGS and (
                old.fingerprint == self._fingerprint(old.version)
                and old.total != count_units(prompts, opts.per_prompt)):
            old = None  # this plan's header, but damaged (its seeds do not fit): as if lost
        recover = old is None and not opts.restart
        restart = old is None or opts.restart
        changed = not restart and old is not None and (
            old.fingerprint != self._fingerprint(old.version))
        if changed and opts.on_change is None and not opts.restart:
            assert old is not None
            raise ListChangedError(old, prompts.source_sha256, self.out_dir)
        removed = len(remove_stale_temp_files(self.out_dir, _subfolders(self.out_dir)))
        resumed = False
        tagged: list[_Tagged] = []
        if recover:  # no readable header: the folder's batch images say what is done
            tagged = self._tagged_images(skip=frozenset())
            header = self._recovered_header(tagged)
        elif old is None or restart or (changed and opts.on_change == "restart"):
            header = self._new_header(MANIFEST_VERSION, inherits=())
        elif not changed:
            header, resumed = old, True
        else:  # changed, resume: keep the records of the unchanged lines
            header = self._new_header(old.version, inherits=(old.run_id, *old.inherits))
            resumed = True
        if header is not old:
            with ManifestWriter(self.out_dir, 0) as writer:
                writer.write_header(header)
        if self._lock is not None:
            self._lock.set_run(header.run_id)
        adopted = 0
        if recover and tagged:
            adopted = self._adopt_orphans(header, tagged)
            resumed = adopted > 0
            if resumed:
                log.warning("the manifest header in %s was missing or unreadable: %d image(s) "
                            "already made were recognised from their metadata", self.out_dir,
                            adopted)
        elif resumed:
            adopted = self._adopt_orphans(header)
        return resumed, adopted, removed

    def _recovered_header(self, tagged: Sequence[_Tagged]) -> ManifestHeader:
        """A new header for a folder whose header is lost or unreadable, with the seeds its
        batch images were made with: a unit's seed that the policy decides from the prompt
        list alone is kept (an image matches it only with that seed); the seeds drawn at random
        (a random default seed, the "random" policy) come from the images of the unit (the
        latest run's first), so they are adopted instead of made again. The key encoding is
        the one that matches the images (the current one when none does)."""
        opts, prompts = self.options, self.prompts
        per, policy = opts.per_prompt, opts.seed_policy
        found: dict[tuple[str, int], list[_Tagged]] = {}
        for tag in sorted(tagged, key=lambda t: t.run, reverse=True):
            found.setdefault((tag.key, tag.image), []).append(tag)

        def matches(encoding: int) -> int:
            units = plan_units(prompts, per, [0] * count_units(prompts, per), encoding)
            return sum(1 for u in units if u.slot in found)

        encoding = max(KEY_ENCODINGS, key=lambda e: (matches(e), e == MANIFEST_VERSION))
        at_0 = decide_seeds(prompts, per, policy, lambda: 0)
        at_1 = decide_seeds(prompts, per, policy, lambda: 1)
        units = plan_units(prompts, per, at_0, encoding)
        drawn = [u for u in units if at_0[u.index] != at_1[u.index] and u.slot in found]
        draw: Any = self._seed_draw
        if policy != "random" and drawn:  # one shared seed S: a unit's is S + its offset
            latest = max(drawn, key=lambda u: found[u.slot][0].run)
            base = (found[latest.slot][0].seed - at_0[latest.index]) % (MAX_SEED + 1)

            def draw() -> int:
                return base
        seeds = decide_seeds(prompts, per, policy, draw)
        if policy == "random":
            for unit in drawn:
                seeds[unit.index] = found[unit.slot][0].seed
        return self._new_header(encoding, inherits=(), seeds=seeds)

    def _new_header(self, encoding: int, inherits: Sequence[str],
                    seeds: Sequence[int] | None = None) -> ManifestHeader:
        opts, prompts = self.options, self.prompts
        if seeds is None:
            seeds = decide_seeds(prompts, opts.per_prompt, opts.seed_policy, self._seed_draw)
        return ManifestHeader(
            run_id=new_run_id(),
            source=prompts.source_name,
            source_sha256=prompts.source_sha256,
            fingerprint=self._fingerprint(encoding),
            version=encoding,
            seeds=tuple(seeds),
            options={
                "per_prompt": opts.per_prompt,
                "seed_policy": opts.seed_policy,
                "pattern": opts.pattern,
                "skip_bad_lines": opts.skip_bad_lines,
                "format": prompts.format,
                "bad_lines": [e.line_no for e in prompts.errors],
            },
            defaults=self.defaults.to_dict() if self.defaults is not None else {},
            inherits=tuple(inherits),
            created=time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        )

    def _adopt_orphans(self, header: ManifestHeader,
                       tagged: Sequence[_Tagged] | None = None) -> int:
        """Batch images in the folder without a record of this run: adopt those made for a unit
        still to do, by their batch tag: of one of the header's runs (saved just before a
        crash); with ``tagged`` (the header was lost: its run ids are unknown), of any run with
        the unit's key, image index and seed (the same image)."""
        state = read_manifest(self.out_dir)
        units = plan_units(self.prompts, self.options.per_prompt, header.seeds, header.version)
        done = state.done()
        pending = {u.slot: u for u in units if u.slot not in done}
        if not pending:
            return 0
        any_run = tagged is not None
        if tagged is None:
            tagged = self._tagged_images(skip=_all_recorded_files(self.out_dir))
        recorded = state.files()
        adopted = 0
        runs = header.runs
        with ManifestWriter(self.out_dir, 0) as writer:
            for tag in tagged:
                unit = pending.get((tag.key, tag.image))
                if unit is None or tag.file in recorded or (
                        tag.run not in runs and not (any_run and tag.seed == unit.seed)):
                    continue
                del pending[unit.slot]
                writer.write_record(UnitRecord(
                    "done", header.run_id, unit.index, unit.item, unit.line_no,
                    unit.image, unit.key, tag.seed, file=tag.file, adopted=True,
                ))
                adopted += 1
        return adopted

    def _tagged_images(self, skip: set[str] | frozenset[str]) -> list[_Tagged]:
        """The folder's images (but ``skip``) with a batch tag whose seed is the image's."""
        from sdstudio.storage.png import read_image_metadata

        out: list[_Tagged] = []
        for rel in image_files(self.out_dir, skip=skip):
            try:
                meta = read_image_metadata(self.out_dir / rel)
            except SDStudioError:
                continue
            if meta.info is None:
                continue
            for note in meta.info.notes:
                tag = parse_tag(note)
                if not tag:
                    continue
                try:
                    found = _Tagged(rel, str(tag.get("run", "")), tag["key"],
                                    int(tag["image"]), int(tag["seed"]))
                except (KeyError, ValueError):
                    continue
                if meta.request.seed == found.seed:
                    out.append(found)
                    break
        return out

    # ---------------------------------------------------------------------------------- run
    def run(self) -> BatchSummary:
        """Prepare (unless done) and run this process's units; the folder's lock is released
        at the end."""
        try:
            return self._run(self.prepared or self.prepare())
        finally:
            self.release_lock()

    def _run(self, prepared: PreparedBatch) -> BatchSummary:
        header, procs, opts = prepared.header, self.processes, self.options
        started = time.perf_counter()
        self.on_event(BatchPlanned(
            run_id=header.run_id, total=len(prepared.units),
            already_done=len(prepared.done), assigned=len(prepared.mine),
            units=prepared.units, done_slots=frozenset(prepared.done),
            resumed=prepared.resumed, out_dir=self.out_dir, rank=procs.rank, world=procs.world,
            removed_temp_files=prepared.removed_temp_files, adopted=prepared.adopted,
        ))
        done = failed = 0
        failures: list[tuple[WorkUnit, str]] = []
        cancelled = False
        reached = 0
        control = self.control

        def report(results: list[Saved]) -> None:
            nonlocal done, failed
            for saved in results:
                if saved.path is not None:
                    done += 1
                    self.on_event(UnitDone(saved.unit, saved.path, saved.elapsed_s,
                                           saved.image))
                else:
                    failed += 1
                    failures.append((saved.unit, saved.reason))
                    self.on_event(UnitFailed(saved.unit, saved.reason, saved.kind,
                                             saved.details))

        with ManifestWriter(self.out_dir, procs.rank) as writer, \
                Saver(writer, self.out_dir, opts.pattern, header.run_id, procs.rank) as saver:
            for position, unit in enumerate(prepared.mine, start=1):
                if control.paused:
                    report(saver.flush())  # the images made so far are on disk first
                    self.on_event(BatchPaused(True))
                    control.wait_while_paused()
                    if not control.cancelled:
                        self.on_event(BatchPaused(False))
                if control.cancelled:
                    cancelled = True
                    break
                reached = position
                report(saver.finished())
                self.on_event(UnitStarted(unit, position, len(prepared.mine)))
                t0 = time.perf_counter()

                def relay(event: EngineEvent, unit: WorkUnit = unit) -> None:
                    if saver.has_finished():  # reported here, on the engine's thread
                        report(saver.finished(raise_error=False))
                    self.on_event(UnitEngineEvent(unit, event))

                try:
                    results = self.engine.generate(unit.request, relay, control.cancel_token)
                    if not results:
                        raise SDStudioError("the engine returned no image")
                    ready = results[0]
                    info = dataclasses.replace(
                        ready.info, notes=(*ready.info.notes, unit.tag(header.run_id))
                    )
                except CancelledError:
                    cancelled = True
                    reached = position - 1
                    break
                except Exception as exc:  # recorded; the batch goes on with the next unit
                    saver.fail(unit, exc, time.perf_counter() - t0)
                    report(saver.flush())  # failure reports keep the plan order
                    continue
                saver.save(unit, ready, info, time.perf_counter() - t0)
            report(saver.close())
        if procs.world > 1:  # rank 0 keeps the folder's lock until every process is done
            procs.wait_for_everyone()
        summary = BatchSummary(
            total=len(prepared.units), done=done, failed=failed,
            skipped=len(prepared.done), cancelled=cancelled,
            elapsed_s=time.perf_counter() - started, out_dir=self.out_dir,
            failures=tuple(failures), adopted=prepared.adopted, assigned=len(prepared.mine),
            not_run=len(prepared.mine) - reached if cancelled else 0,
        )
        self.on_event(summary)
        return summary


@dataclass(frozen=True)
class _Tagged:
    """A batch image found in the folder, by the tag in its metadata."""

    file: str  # relative to the output folder
    run: str
    key: str
    image: int
    seed: int


def _subfolders(folder: Path) -> list[str]:
    """The folder and its visible subfolders (a pattern with "/" saves into subfolders)."""
    out = [""]
    for path in sorted(folder.rglob("*")):
        if path.is_dir() and not any(p.startswith(".") for p in path.relative_to(folder).parts):
            out.append(path.relative_to(folder).as_posix())
    return out


def _all_recorded_files(folder: Path) -> set[str]:
    """Files named by any record of any run (not only the current one)."""
    import json

    files: set[str] = set()
    for path in manifest_files(folder):
        try:
            data = path.read_bytes()
        except OSError:
            continue
        for raw in data.split(b"\n"):
            try:
                obj = json.loads(raw)
            except (ValueError, RecursionError):  # torn or garbage lines
                continue
            if isinstance(obj, dict) and obj.get("type") == "done" and obj.get("file"):
                files.add(str(obj["file"]))
    return files


def merged_summary(out_dir: Path, header_run: str | None = None) -> dict[str, int]:
    """Counts over every process's records of the current run (for rank 0's final report)."""
    state = read_manifest(out_dir)
    if state.header is None:
        return {"total": 0, "done": 0, "failed": 0}
    done = state.done(check_files=False)
    failed = state.failed()
    return {"total": state.header.total, "done": len(done), "failed": len(failed)}
