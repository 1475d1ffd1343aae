"""Batch manifest files: header/records round trip, torn lines, rank files, inheritance."""

from __future__ import annotations

from pathlib import Path

from sdstudio.storage.manifest import (
    ManifestHeader,
    ManifestWriter,
    UnitRecord,
    image_files,
    manifest_files,
    read_manifest,
    remove_stale_temp_files,
)


def header(run: str = "r1", seeds: tuple[int, ...] = (1, 2, 3), inherits: tuple[str, ...] = ()
           ) -> ManifestHeader:
    return ManifestHeader(run, "list.txt", "abc", "fp-" + run, seeds, {"per_prompt": 1}, {},
                          inherits)


def done(run: str, unit: int, file: str | None = None, rank: int = 0) -> UnitRecord:
    return UnitRecord("done", run, unit, unit, unit + 1, 0, f"k{unit}", unit + 1,
                      file=file or f"{unit}.png", rank=rank)


def touch(folder: Path, *names: str) -> None:
    for name in names:
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_bytes(b"png")


def test_round_trip_and_last_header_wins(tmp_path: Path) -> None:
    touch(tmp_path, "0.png", "1.png")
    with ManifestWriter(tmp_path) as w:
        w.write_header(header("r0"))
        w.write_record(done("r0", 0))
        w.write_header(header("r1"))
        w.write_record(done("r1", 1))
        w.write_record(UnitRecord("failed", "r1", 2, 2, 3, 0, "k2", 3, reason="out of memory"))
    state = read_manifest(tmp_path)
    assert state.header == header("r1").__class__.from_json(header("r1").to_json())
    assert state.header is not None and state.header.seeds == (1, 2, 3)
    assert [r.unit for r in state.records] == [1, 2]  # r0's record is not inherited
    assert set(state.done()) == {("k1", 0)}
    assert state.failed()[("k2", 0)].reason == "out of memory"


def test_inherited_runs_count_and_missing_files_do_not(tmp_path: Path) -> None:
    touch(tmp_path, "0.png")
    with ManifestWriter(tmp_path) as w:
        w.write_header(header("r0"))
        w.write_record(done("r0", 0))
        w.write_record(done("r0", 1))  # its file was deleted by the person
        w.write_header(header("r1", inherits=("r0",)))
    state = read_manifest(tmp_path)
    assert set(state.done()) == {("k0", 0)}
    assert set(state.done(check_files=False)) == {("k0", 0), ("k1", 0)}


def test_torn_last_line_is_ignored_then_cut_by_the_next_writer(tmp_path: Path) -> None:
    touch(tmp_path, "0.png", "1.png")
    with ManifestWriter(tmp_path) as w:
        w.write_header(header())
        w.write_record(done("r1", 0))
    path = tmp_path / "manifest.jsonl"
    with open(path, "ab") as fh:
        fh.write(b'{"type": "done", "run": "r1", "unit": 1, "it')  # killed mid-write
    state = read_manifest(tmp_path)
    assert state.torn_lines == 1 and set(state.done()) == {("k0", 0)}
    with ManifestWriter(tmp_path) as w:
        w.write_record(done("r1", 1))
    text = path.read_text()
    assert text.endswith("\n") and '"it\n' not in text and text.count("\n") == 3
    assert set(read_manifest(tmp_path).done()) == {("k0", 0), ("k1", 0)}
    assert read_manifest(tmp_path).torn_lines == 0


def test_garbage_lines_in_the_middle_are_skipped(tmp_path: Path) -> None:
    """Not UTF-8, nested too deep for the parser, wrong types: counted, never raised."""
    touch(tmp_path, "0.png", "1.png")
    with ManifestWriter(tmp_path) as w:
        w.write_header(header())
        w.write_record(done("r1", 0))
        w.append({"type": "done", "run": "r1", "unit": "x"})
    with open(tmp_path / "manifest.jsonl", "ab") as fh:
        fh.write(b"\xff\xfe\x00 binary\n" + b"[" * 100_000 + b"\n" + b"{" * 100_000 + b"\n")
    with ManifestWriter(tmp_path) as w:
        w.write_record(done("r1", 1))
    state = read_manifest(tmp_path)
    assert state.header is not None and state.torn_lines == 4
    assert set(state.done()) == {("k0", 0), ("k1", 0)}


def test_rank_files_are_merged_and_headers_only_from_main(tmp_path: Path) -> None:
    touch(tmp_path, "0.png", "1.png", "sub/2.png")
    with ManifestWriter(tmp_path, 0) as w0, ManifestWriter(tmp_path, 1) as w1:
        w0.write_header(header())
        w0.write_record(done("r1", 0))
        w1.write_record(done("r1", 1, rank=1))
        w1.append({"type": "header", **header("bogus").to_json()})  # ignored in a rank file
    with ManifestWriter(tmp_path, 12) as w12:
        w12.write_record(done("r1", 2, file="sub/2.png", rank=12))
    assert [p.name for p in manifest_files(tmp_path)] == [
        "manifest.jsonl", "manifest.rank1.jsonl", "manifest.rank12.jsonl"]
    state = read_manifest(tmp_path)
    assert state.header is not None and state.header.run_id == "r1"
    assert set(state.done()) == {("k0", 0), ("k1", 0), ("k2", 0)}


def test_no_manifest(tmp_path: Path) -> None:
    state = read_manifest(tmp_path / "missing")
    assert state.header is None and state.records == ()


def test_stale_temp_files_and_image_listing(tmp_path: Path) -> None:
    touch(tmp_path, ".sdstudio-abc.tmp", "sub/.sdstudio-x.tmp", "a.png", "sub/b.png",
          ".hidden/c.png", "note.txt")
    removed = remove_stale_temp_files(tmp_path, ["", "sub"])
    assert sorted(p.name for p in removed) == [".sdstudio-abc.tmp", ".sdstudio-x.tmp"]
    assert image_files(tmp_path) == ["a.png", "sub/b.png"]
    assert image_files(tmp_path, skip={"a.png"}) == ["sub/b.png"]


def test_a_record_naming_a_file_outside_the_folder_is_not_trusted(tmp_path: Path) -> None:
    from sdstudio.storage.manifest import UnitRecord, safe_relative_file

    outside = tmp_path / "outside.png"
    outside.write_bytes(b"x")
    for bad in (str(outside), "../outside.png", "a/../../outside.png", "C:/x.png",
                "a\\..\\..\\x.png", "", 5):
        assert safe_relative_file(bad) is None, bad
        rec = UnitRecord.from_json({"type": "done", "run": "r", "unit": 0, "item": 0,
                                    "image": 0, "key": "k", "seed": 1, "file": bad})
        assert rec.file is None
    assert safe_relative_file("2026-12-02/00001-5.png") == "2026-12-02/00001-5.png"
