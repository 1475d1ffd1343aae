"""storage.png: atomic saving with metadata, failure injection, concurrency, safe reading."""

from __future__ import annotations

import errno
import json
import os
import struct
import subprocess
import sys
import tempfile
import threading
import time
import zlib
from pathlib import Path

import pytest
from PIL import Image, PngImagePlugin

from sdstudio.core.errors import ImageInputError, MetadataError
from sdstudio.core.metadata import parse_infotext, to_infotext
from sdstudio.core.request import GenerationInfo, GenerationRequest, LoraSpec
from sdstudio.storage import png
from sdstudio.storage.naming import FilenamePatternError
from sdstudio.storage.png import (
    LOCK_NAME,
    StorageError,
    read_image_metadata,
    read_png_text,
    save_image,
)

REQ = GenerationRequest(
    prompt="a cat, sitting: on a mat\nsecond line ünï", negative_prompt='blurry, "bad"',
    seed=1234, steps=4, width=64, height=64, sampler="DPM++ 2M Karras", cfg_scale=7.5,
    init_image="/in/ä.png", mask="/in/m.png", strength=0.6, inpaint_only_masked=True,
    loras=(LoraSpec("film", 0.5),),
)
INFO = GenerationInfo(
    model_name="tiny", model_sha256="ab" * 32, device="cpu", dtype="float32",
    scheduler={"class": "DPMSolverMultistepScheduler", "config": {"use_karras_sigmas": True}},
    versions={"torch": "2.13.0"}, elapsed_s=1.25, notes=("untrained",),
)


def image(color: tuple[int, int, int] = (10, 20, 30)) -> Image.Image:
    return Image.new("RGB", (64, 64), color)


def files(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name != LOCK_NAME)


# --------------------------------------------------------------------------- saving
def test_saved_png_has_both_chunks_and_reads_back(tmp_path: Path) -> None:
    path = save_image(image(), REQ, INFO, tmp_path)
    assert path == tmp_path / "00000-1234.png"
    with Image.open(path) as im:
        im.load()
        assert im.size == (64, 64) and im.getpixel((0, 0)) == (10, 20, 30)
        assert parse_infotext(im.text["parameters"]).request.seed == 1234
        data = json.loads(im.text["sdstudio"])
    assert data["request"]["init_image"] == "/in/ä.png"
    meta = read_image_metadata(path)
    assert meta.source == "sdstudio"
    assert meta.request == REQ  # exact, including paths and explicit LoRAs
    assert meta.info is not None and meta.info.scheduler == INFO.scheduler
    assert meta.info.elapsed_s == 0.0  # not stored: repeated runs give identical files
    assert meta.model_name == "tiny" and meta.model_hash == "ab" * 5
    assert meta.infotext == to_infotext(REQ, INFO)
    assert meta.extras["Version"].startswith("sdstudio ")


def test_parameters_chunk_is_plain_text_for_latin1(tmp_path: Path) -> None:
    req = GenerationRequest(prompt="plain prompt", seed=5)
    raw = save_image(image(), req, INFO, tmp_path).read_bytes()
    assert b"tEXtparameters\x00plain prompt\n" in raw  # A1111 writes a tEXt chunk too
    assert b"iTXtsdstudio\x00\x01\x00" in raw  # compressed iTXt


def test_repeated_saves_are_byte_identical_and_numbered(tmp_path: Path) -> None:
    a = save_image(image(), REQ, INFO, tmp_path)
    b = save_image(image(), REQ, INFO.__class__(**{**INFO.__dict__, "elapsed_s": 9.0}), tmp_path)
    assert (a.name, b.name) == ("00000-1234.png", "00001-1234.png")
    assert a.read_bytes() == b.read_bytes()


def test_never_overwrites_and_skips_taken_names(tmp_path: Path) -> None:
    (tmp_path / "00000-1234.png").write_bytes(b"precious")
    (tmp_path / "00001-77.png").write_bytes(b"other")
    path = save_image(image(), REQ, INFO, tmp_path)
    assert path.name == "00002-1234.png"
    assert (tmp_path / "00000-1234.png").read_bytes() == b"precious"
    # a pattern without {index}: the next free "-N" suffix
    p1 = save_image(image(), REQ, INFO, tmp_path, "{seed}")
    p2 = save_image(image(), REQ, INFO, tmp_path, "{seed}")
    assert (p1.name, p2.name) == ("1234.png", "1234-1.png")


def test_collision_inside_the_claim_takes_the_next_index(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Another (non-cooperating) writer takes the chosen name between listing and linking."""
    real_link = os.link
    calls: list[str] = []

    def racing_link(src: str | os.PathLike[str], dst: str | os.PathLike[str]) -> None:
        if not calls:
            Path(dst).write_bytes(b"someone else")
        calls.append(os.fspath(dst))
        real_link(src, dst)

    monkeypatch.setattr(png.os, "link", racing_link)
    path = save_image(image(), REQ, INFO, tmp_path)
    assert path.name == "00001-1234.png"
    assert (tmp_path / "00000-1234.png").read_bytes() == b"someone else"
    assert files(tmp_path) == ["00000-1234.png", "00001-1234.png"]


def test_subfolders_are_created(tmp_path: Path) -> None:
    path = save_image(image(), REQ, INFO, tmp_path / "new", "{date}/{sampler}/{index}")
    assert path.parent.parent.parent == tmp_path / "new"
    assert path.name == "00000.png"
    assert read_image_metadata(path).request == REQ


def test_bad_pattern_writes_nothing(tmp_path: Path) -> None:
    with pytest.raises(FilenamePatternError):
        save_image(image(), REQ, INFO, tmp_path / "out", "../{seed}")
    with pytest.raises(FilenamePatternError):
        save_image(image(), REQ, INFO, tmp_path / "out", "{nope}")
    assert not (tmp_path / "out").exists()


def test_image_modes(tmp_path: Path) -> None:
    for mode in ("RGBA", "L", "CMYK", "F"):
        path = save_image(Image.new(mode, (8, 8)), REQ, INFO, tmp_path)
        with Image.open(path) as im:
            im.load()
            assert im.size == (8, 8)


# ------------------------------------------------------------------ failure injection
def _boom(*_args: object, **_kwargs: object) -> None:
    raise OSError(errno.ENOSPC, "No space left on device")


@pytest.mark.parametrize("where", ["encode", "write", "fsync", "link", "dirsync", "interrupt"])
def test_failure_at_any_point_leaves_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, where: str
) -> None:
    (tmp_path / "00000-1.png").write_bytes(b"existing")
    before = files(tmp_path)
    expected: type[BaseException] = StorageError
    if where == "encode":
        def bad_save(*_a: object, **_k: object) -> None:
            raise ValueError("encoder exploded")
        monkeypatch.setattr(Image.Image, "save", bad_save)
        expected = ValueError
    elif where == "write":
        monkeypatch.setattr(png, "_write_all", _boom)  # disk full mid-write
    elif where == "fsync":
        monkeypatch.setattr(png.os, "fsync", _boom)
    elif where == "link":
        monkeypatch.setattr(png.os, "link", lambda *a: _boom())
    elif where == "dirsync":
        monkeypatch.setattr(png, "_fsync_dir", _boom)  # after the final name was claimed
    elif where == "interrupt":
        def interrupted(*_a: object) -> None:
            raise KeyboardInterrupt
        monkeypatch.setattr(png, "_write_all", interrupted)
        expected = KeyboardInterrupt
    with pytest.raises(expected) as excinfo:
        save_image(image(), REQ, INFO, tmp_path)
    assert files(tmp_path) == before  # no partial file, no stray temp file
    if expected is StorageError:
        assert "the disk is full" in str(excinfo.value)


def test_fallback_when_hard_links_are_unsupported(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def no_links(*_a: object) -> None:
        raise OSError(errno.EPERM, "Operation not permitted")

    monkeypatch.setattr(png.os, "link", no_links)
    (tmp_path / "00000-1234.png").write_bytes(b"precious")
    path = save_image(image(), REQ, INFO, tmp_path)
    assert path.name == "00001-1234.png"
    assert (tmp_path / "00000-1234.png").read_bytes() == b"precious"
    assert read_image_metadata(path).request == REQ
    assert files(tmp_path) == ["00000-1234.png", "00001-1234.png"]


# ------------------------------------------------------------------------- concurrency
def test_threads_saving_into_one_folder_never_clash(tmp_path: Path) -> None:
    errors: list[BaseException] = []
    saved: list[Path] = []
    lock = threading.Lock()

    def worker(n: int) -> None:
        try:
            for i in range(8):
                req = REQ.replace(seed=n * 100 + i)
                p = save_image(image((n, i, 0)), req, INFO, tmp_path)
                with lock:
                    saved.append(p)
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    names = files(tmp_path)
    assert len(names) == len(saved) == 48
    assert sorted(int(n.split("-")[0]) for n in names) == list(range(48))  # unique indices
    for p in saved:
        assert read_image_metadata(p).request.seed == int(p.stem.split("-")[1])


_PROCESS_WORKER = """
import sys, time
from pathlib import Path
from PIL import Image
from sdstudio.core.request import GenerationRequest
from sdstudio.storage.png import save_image
folder, n, count = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
while not (Path(folder) / "go").exists():  # start together for maximum contention
    time.sleep(0.005)
for i in range(count):
    req = GenerationRequest(prompt="p", seed=n * 1000 + i, width=64, height=64)
    save_image(Image.new("RGB", (16, 16), (n, i, 0)), req, None, folder)
"""


def test_processes_saving_into_one_folder_never_clash(tmp_path: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    procs = [
        subprocess.Popen([sys.executable, "-c", _PROCESS_WORKER, str(out), str(n), "8"])
        for n in range(3)
    ]
    time.sleep(0.5)
    (out / "go").write_bytes(b"")
    assert [p.wait(timeout=120) for p in procs] == [0, 0, 0]
    (out / "go").unlink()
    names = files(out)
    assert len(names) == 24
    assert sorted(int(n.split("-")[0]) for n in names) == list(range(24))  # unique indices
    seeds = sorted(read_image_metadata(out / n).request.seed for n in names)
    assert seeds == sorted(n * 1000 + i for n in range(3) for i in range(8))


# ----------------------------------------------------------------------------- reading
A1111_TEXT = (
    "masterpiece, 1girl\nNegative prompt: lowres\n"
    "Steps: 28, Sampler: DPM++ 2M, Schedule type: Karras, CFG scale: 7, Seed: 42, "
    "Size: 512x768, Model hash: 6ce0161689, Model: v1-5, Version: v1.10.1"
)


def _a1111_png(path: Path, text: str = A1111_TEXT) -> Path:
    info = PngImagePlugin.PngInfo()
    info.add_text("parameters", text)
    Image.new("RGB", (32, 32)).save(path, pnginfo=info)
    return path


def test_reads_automatic1111_png(tmp_path: Path) -> None:
    meta = read_image_metadata(_a1111_png(tmp_path / "a.png"))
    assert meta.source == "parameters" and meta.info is None
    assert (meta.request.sampler, meta.request.schedule_type) == ("DPM++ 2M", "Karras")
    assert (meta.request.width, meta.request.height, meta.request.seed) == (512, 768, 42)
    assert meta.model_name == "v1-5" and meta.extras == {"Version": "v1.10.1"}
    assert meta.infotext == A1111_TEXT


def test_corrupt_sdstudio_chunk_falls_back_to_parameters(tmp_path: Path) -> None:
    info = PngImagePlugin.PngInfo()
    info.add_text("parameters", A1111_TEXT)
    info.add_text("sdstudio", "{broken json")
    Image.new("RGB", (8, 8)).save(tmp_path / "x.png", pnginfo=info)
    assert read_image_metadata(tmp_path / "x.png").request.seed == 42
    only = PngImagePlugin.PngInfo()
    only.add_text("sdstudio", "{broken json")
    Image.new("RGB", (8, 8)).save(tmp_path / "y.png", pnginfo=only)
    with pytest.raises(MetadataError, match="not valid JSON"):
        read_image_metadata(tmp_path / "y.png")


def test_text_chunks_after_the_pixels_are_found(tmp_path: Path) -> None:
    path = tmp_path / "late.png"
    Image.new("RGB", (8, 8)).save(path)
    raw = path.read_bytes()
    body = b"parameters\x00" + A1111_TEXT.encode("latin-1")
    chunk = struct.pack(">I", len(body)) + b"tEXt" + body
    chunk += struct.pack(">I", zlib.crc32(b"tEXt" + body) & 0xFFFFFFFF)
    iend = raw.rindex(b"IEND") - 4
    path.write_bytes(raw[:iend] + chunk + raw[iend:])
    assert read_image_metadata(path).request.seed == 42


def test_png_without_metadata(tmp_path: Path) -> None:
    Image.new("RGB", (8, 8)).save(tmp_path / "plain.png")
    with pytest.raises(MetadataError, match=r"plain\.png has no generation parameters"):
        read_image_metadata(tmp_path / "plain.png")


def test_png_with_parameters_that_are_only_a_prompt(tmp_path: Path) -> None:
    # AUTOMATIC1111 reads a text without a parameter line as a prompt
    meta = read_image_metadata(_a1111_png(tmp_path / "junk.png", "just some words"))
    assert (meta.request.prompt, meta.request.steps) == ("just some words", 20)


def test_truncated_png_is_refused(tmp_path: Path) -> None:
    good = save_image(image(), REQ, INFO, tmp_path)
    raw = good.read_bytes()
    for cut in (len(raw) - 5, len(raw) // 2, 40, 12):
        bad = tmp_path / f"cut{cut}.png"
        bad.write_bytes(raw[:cut])
        with pytest.raises(ImageInputError, match=r"truncated|corrupt"):
            read_image_metadata(bad)


def test_corrupt_checksum_is_refused(tmp_path: Path) -> None:
    raw = bytearray(save_image(image(), REQ, INFO, tmp_path).read_bytes())
    pos = raw.index(b"tEXtparameters") + 20
    raw[pos] ^= 0xFF
    (tmp_path / "flip.png").write_bytes(bytes(raw))
    with pytest.raises(ImageInputError, match="checksum"):
        read_image_metadata(tmp_path / "flip.png")


def _png_chunk(ctype: bytes, data: bytes) -> bytes:
    return (struct.pack(">I", len(data)) + ctype + data
            + struct.pack(">I", zlib.crc32(ctype + data) & 0xFFFFFFFF))


def test_decompression_bomb_is_refused_without_decoding(tmp_path: Path) -> None:
    # a 100000 x 100000 PNG header followed by a tiny (invalid) IDAT: never decoded
    ihdr = struct.pack(">IIBBBBB", 100_000, 100_000, 8, 2, 0, 0, 0)
    raw = (png.PNG_SIGNATURE + _png_chunk(b"IHDR", ihdr)
           + _png_chunk(b"tEXt", b"parameters\x00" + A1111_TEXT.encode())
           + _png_chunk(b"IDAT", zlib.compress(b"\x00" * 100)) + _png_chunk(b"IEND", b""))
    (tmp_path / "bomb.png").write_bytes(raw)
    with pytest.raises(ImageInputError, match="too large"):
        read_image_metadata(tmp_path / "bomb.png")


def test_zip_bomb_text_chunk_is_ignored(tmp_path: Path) -> None:
    ihdr = struct.pack(">IIBBBBB", 8, 8, 8, 2, 0, 0, 0)
    bomb = zlib.compress(b"a" * (png.MAX_TEXT_BYTES + 1024), 9)
    raw = (png.PNG_SIGNATURE + _png_chunk(b"IHDR", ihdr)
           + _png_chunk(b"zTXt", b"parameters\x00\x00" + bomb)
           + _png_chunk(b"IEND", b""))
    (tmp_path / "zbomb.png").write_bytes(raw)
    with pytest.raises(MetadataError, match="no generation parameters"):
        read_image_metadata(tmp_path / "zbomb.png")


def test_ztxt_and_itxt_chunks_decode() -> None:
    ihdr = struct.pack(">IIBBBBB", 8, 8, 8, 2, 0, 0, 0)
    raw = (png.PNG_SIGNATURE + _png_chunk(b"IHDR", ihdr)
           + _png_chunk(b"zTXt", b"parameters\x00\x00" + zlib.compress(A1111_TEXT.encode()))
           + _png_chunk(b"iTXt", b"Comment\x00\x00\x00en\x00\x00" + "ünï".encode())
           + _png_chunk(b"IEND", b""))
    with tempfile.TemporaryFile() as fh:
        fh.write(raw)
        fh.seek(0)
        assert read_png_text(fh) == {"parameters": A1111_TEXT, "Comment": "ünï"}


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"", "not an image"),
        (b"hello, this is not an image at all", "not an image"),
        (b"GIF89a" + b"\x00" * 4, "truncated or corrupt|not an image"),
    ],
)
def test_non_images_are_refused(tmp_path: Path, content: bytes, message: str) -> None:
    (tmp_path / "x.png").write_bytes(content)
    with pytest.raises(ImageInputError, match=message):
        read_image_metadata(tmp_path / "x.png")


def test_missing_file_and_folder(tmp_path: Path) -> None:
    with pytest.raises(ImageInputError, match="does not exist"):
        read_image_metadata(tmp_path / "nope.png")
    with pytest.raises(ImageInputError, match="folder"):
        read_image_metadata(tmp_path)


def _exif_with_comment(comment: bytes, in_ifd0: bool = False) -> Image.Exif:
    exif = Image.Exif()
    if in_ifd0:
        exif[0x9286] = comment
    else:
        exif.get_ifd(0x8769)[0x9286] = comment
    return exif


@pytest.mark.parametrize("fmt", ["JPEG", "WEBP"])
def test_reads_a1111_jpeg_and_webp_user_comment(tmp_path: Path, fmt: str) -> None:
    # AUTOMATIC1111 writes piexif's UserComment: "UNICODE\0" + UTF-16 big-endian
    comment = b"UNICODE\x00" + (A1111_TEXT + " ü").encode("utf-16-be")
    path = tmp_path / f"a.{fmt.lower()}"
    Image.new("RGB", (16, 16)).save(path, format=fmt, exif=_exif_with_comment(comment))
    meta = read_image_metadata(path)
    assert meta.source == "exif"
    assert meta.request.seed == 42
    assert meta.extras["Version"] == "v1.10.1 ü"


def test_reads_fooocus_style_jpeg_comment_in_ifd0(tmp_path: Path) -> None:
    path = tmp_path / "f.jpg"
    exif = _exif_with_comment(A1111_TEXT.encode(), in_ifd0=True)
    Image.new("RGB", (16, 16)).save(path, exif=exif)
    got = read_image_metadata(path).request
    assert (got.sampler, got.schedule_type) == ("DPM++ 2M", "Karras")


def test_jpeg_without_metadata_and_truncated_jpeg(tmp_path: Path) -> None:
    path = tmp_path / "plain.jpg"
    Image.new("RGB", (16, 16)).save(path)
    with pytest.raises(MetadataError, match="no generation parameters"):
        read_image_metadata(path)
    (tmp_path / "cut.jpg").write_bytes(path.read_bytes()[:3])
    with pytest.raises(ImageInputError):
        read_image_metadata(tmp_path / "cut.jpg")
