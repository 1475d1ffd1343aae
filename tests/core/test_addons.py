"""The picker's view of LoRA and embedding files: names, previews, trigger words; hostile
headers and notes refused in one line, nothing read outside the folders."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from sdstudio.core.addons import (
    Addon,
    find_preview,
    list_addons,
    lora_tag,
    read_details,
    safetensors_metadata,
    training_tags,
)


def write_safetensors(path: Path, metadata: dict[str, str] | None = None,
                      header: bytes | None = None) -> Path:
    """A safetensors file as the format lays it out: 8-byte little-endian header length,
    the JSON header, then the tensor data (one float32 here)."""
    if header is None:
        body: dict[str, object] = {"w": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]}}
        if metadata is not None:
            body["__metadata__"] = metadata
        header = json.dumps(body).encode()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(len(header).to_bytes(8, "little") + header + b"\0\0\0\0")
    return path


def kohya_tags(*datasets: dict[str, int]) -> str:
    return json.dumps({f"{i}_set": d for i, d in enumerate(datasets)})


def test_lists_loras_and_embeddings_named_as_prompts_name_them(tmp_path: Path) -> None:
    loras, more = tmp_path / "loras", tmp_path / "more"
    write_safetensors(loras / "detail.safetensors")
    write_safetensors(loras / "styles" / "film.safetensors")
    write_safetensors(loras / "a" / "same.safetensors")
    write_safetensors(loras / "b" / "same.safetensors")
    (loras / "notes.txt").write_text("not a LoRA")
    (more / "old.pt").parent.mkdir()
    (more / "old.pt").write_bytes(b"PK")
    found = list_addons("lora", [str(loras), str(more), str(tmp_path / "missing")])
    assert [a.name for a in found] == ["a/same", "b/same", "detail", "film", "old"]
    assert all(a.kind == "lora" and a.insertable for a in found)
    assert found[3].path == loras / "styles" / "film.safetensors"
    assert found[4].folder == more
    emb = tmp_path / "emb"
    write_safetensors(emb / "EasyNegative.safetensors")
    write_safetensors(emb / "sub" / "EasyNegative.pt")  # the engine loads the first one only
    (emb / "bad_hands.bin").write_bytes(b"x")
    names = [(a.name, a.path.name) for a in list_addons("embedding", [str(emb)])]
    assert names == [("bad_hands", "bad_hands.bin"), ("EasyNegative", "EasyNegative.safetensors")]


def test_a_name_a_tag_cannot_hold_is_not_insertable(tmp_path: Path) -> None:
    a = Addon("lora", "odd:name", tmp_path / "odd:name.safetensors", tmp_path)
    assert not a.insertable
    assert Addon("embedding", "odd:name", a.path, tmp_path).insertable


@pytest.mark.parametrize(("files", "expected"), [
    (["x.png", "x.preview.png", "x.jpg"], "x.png"),  # A1111's order: name.ext, then .preview
    (["x.preview.png", "x.jpg"], "x.preview.png"),
    (["x.jpg", "x.webp"], "x.jpg"),
    (["x.preview.webp"], "x.preview.webp"),
    (["x.gif"], "x.gif"),
    (["x.bmp", "y.png"], None),
])
def test_previews_are_found_as_a1111_finds_them(tmp_path: Path, files: list[str],
                                                 expected: str | None) -> None:
    lora = write_safetensors(tmp_path / "x.safetensors")
    for name in files:
        (tmp_path / name).write_bytes(b"\x89PNG\r\n\x1a\n")
    preview = find_preview(lora, tmp_path)
    assert (preview.name if preview else None) == expected
    listed = list_addons("lora", [str(tmp_path)])
    assert (listed[0].preview.name if listed[0].preview else None) == expected


def test_a_preview_outside_the_folder_is_not_used(tmp_path: Path) -> None:
    folder = tmp_path / "loras"
    lora = write_safetensors(folder / "x.safetensors")
    secret = tmp_path / "secret.png"
    secret.write_bytes(b"\x89PNG")
    os.symlink(secret, folder / "x.png")
    os.mkfifo(folder / "x.preview.png")  # not a regular file: never opened
    (folder / "x.jpg").mkdir()
    assert find_preview(lora, folder) is None


def test_trigger_words_from_the_metadata(tmp_path: Path) -> None:
    lora = write_safetensors(tmp_path / "x.safetensors", {
        "modelspec.trigger_phrase": "zxc style",
        "ss_sd_model_name": "v1-5-pruned.safetensors",
        "ss_tag_frequency": kohya_tags({"1girl": 10, " solo": 4, "smile": 1},
                                       {"1girl": 5, "zxc": 12, "bad": -3}),
    })
    details = read_details(Addon("lora", "x", lora, tmp_path))
    assert details.note == ""
    assert details.tags == (("1girl", 15), ("zxc", 12), ("solo", 4), ("smile", 1))
    assert details.extra["Trigger phrase"] == "zxc style"
    assert details.extra["Trained on"] == "v1-5-pruned.safetensors"
    assert details.activation_text == ""
    assert details.preferred_weight is None


def test_sentence_captions_become_words_as_in_a1111() -> None:
    tags = training_tags({"ss_tag_frequency": kohya_tags({
        "a photo of zxc person smiling": 3, "zxc person in a red coat": 2})})
    assert tags[:2] == (("zxc", 5), ("person", 5))
    assert ("a", 5) not in tags and ("red", 2) in tags  # words of three letters or more
    assert len(training_tags({"ss_tag_frequency": kohya_tags(
        {f"tag{i}": i + 1 for i in range(100)})})) == 24


def test_a1111_notes_beside_the_file(tmp_path: Path) -> None:
    lora = write_safetensors(tmp_path / "x.safetensors", {})
    (tmp_path / "x.json").write_text(json.dumps({
        "description": "d", "activation text": " zxc, red coat ", "preferred weight": 0.7}))
    details = read_details(Addon("lora", "x", lora, tmp_path))
    assert (details.activation_text, details.preferred_weight) == ("zxc, red coat", 0.7)
    assert lora_tag("x", details.preferred_weight) == "<lora:x:0.7>"
    assert lora_tag("x") == "<lora:x:1>"
    (tmp_path / "x.json").write_text(json.dumps({"preferred weight": 0, "activation text": 5}))
    details = read_details(Addon("lora", "x", lora, tmp_path))
    assert (details.activation_text, details.preferred_weight) == ("", None)


@pytest.mark.parametrize(("raw", "message"), [
    (b"", "not a safetensors file"),
    (b"PK\x03\x04 a pickle zip", "not a safetensors file"),
    ((2**40).to_bytes(8, "little") + b"{}", "header is too large"),
    ((500).to_bytes(8, "little") + b'{"__metadata__": {}}', "truncated"),
    ((1).to_bytes(8, "little") + b"{", "empty header"),
    ((7).to_bytes(8, "little") + b"{nope!}", "not valid"),
    ((6).to_bytes(8, "little") + b"[1, 2]", "not a safetensors file"),
])
def test_hostile_headers_are_refused_in_one_line(tmp_path: Path, raw: bytes,
                                                 message: str) -> None:
    path = tmp_path / "bad.safetensors"
    path.write_bytes(raw)
    with pytest.raises(ValueError, match=message):
        safetensors_metadata(path)
    details = read_details(Addon("lora", "bad", path, tmp_path))
    assert message in details.note and "\n" not in details.note
    assert details.tags == ()


def test_deep_or_odd_metadata_is_refused_cleanly(tmp_path: Path) -> None:
    deep = "[" * 5000 + "]" * 5000
    lora = write_safetensors(tmp_path / "x.safetensors", header=json.dumps(
        {"__metadata__": {"ss_tag_frequency": deep}}).encode())
    details = read_details(Addon("lora", "x", lora, tmp_path))
    assert "nested too deeply" in details.note and details.tags == ()
    lora = write_safetensors(tmp_path / "y.safetensors", header=b'{"__metadata__": [1]}')
    assert "not a JSON object" in read_details(Addon("lora", "y", lora, tmp_path)).note
    lora = write_safetensors(tmp_path / "z.safetensors", {"ss_tag_frequency": '"a string"'})
    assert "not a JSON object" in read_details(Addon("lora", "z", lora, tmp_path)).note
    (tmp_path / "w.json").write_text("{broken")
    lora = write_safetensors(tmp_path / "w.safetensors", {})
    details = read_details(Addon("lora", "w", lora, tmp_path))
    assert details.note.startswith("w.json: not valid JSON")


def test_the_header_is_read_within_its_limit_only(tmp_path: Path) -> None:
    lora = write_safetensors(tmp_path / "x.safetensors", {"k": "v" * 5000})
    with pytest.raises(ValueError, match="too large"):
        safetensors_metadata(lora, max_bytes=1000)
    assert safetensors_metadata(lora)["k"] == "v" * 5000
    assert read_details(Addon("lora", "x", tmp_path / "x.pt", tmp_path)).note == ""
    fifo = tmp_path / "fifo.safetensors"
    os.mkfifo(fifo)
    with pytest.raises(ValueError, match="not a regular file"):
        safetensors_metadata(fifo)
