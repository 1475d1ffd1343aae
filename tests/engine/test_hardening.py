"""Hostile model folders and files: no hang (symlink loops, FIFOs named like weight files, a
hub that never answers), no memory amplification (zip bombs, huge safetensors headers), no
RecursionError from deeply nested JSON. Each is refused with one line, quickly."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import struct
import subprocess
import sys
import threading
import time
import tracemalloc
import zipfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from sdstudio.core.errors import ImageInputError, ModelError
from sdstudio.engine import checkpoint, hashing, library, models

REPO = Path(__file__).resolve().parents[2]
DEEP = b"[" * 100_000 + b"]" * 100_000
needs_fifo = pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="no FIFOs here")


def _no_hang(call: Callable[[], Any], fifo: Path, limit: float = 5.0) -> BaseException | None:
    """Run ``call``; if it is still blocked on ``fifo`` after ``limit`` seconds, unblock it
    (open the FIFO's write end and close it: the reader sees EOF) and fail the test."""
    outcome: list[BaseException | None] = []

    def run() -> None:
        try:
            call()
            outcome.append(None)
        except BaseException as exc:
            outcome.append(exc)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(limit)
    hung = thread.is_alive()
    while thread.is_alive():
        with contextlib.suppress(OSError):
            os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))
        thread.join(0.1)
    assert not hung, f"blocked on the FIFO {fifo.name}"
    return outcome[0]


# ------------------------------------------------------------------------------- hangs
def test_scan_walks_each_real_folder_once(tmp_path: Path) -> None:
    root = tmp_path / "models"
    (root / "sub").mkdir(parents=True)
    (root / "sub" / "m.safetensors").write_bytes(b"not a model")
    for name in ("a", "b"):  # two links to the parent: 2^depth paths without the guard
        (root / "sub" / name).symlink_to("..")
    code = ("import sys; from sdstudio.engine import library; "
            "print(len(library.scan([sys.argv[1]], with_arch=False)))")
    start = time.monotonic()
    try:
        proc = subprocess.run([sys.executable, "-c", code, str(root)], cwd=REPO,
                              capture_output=True, text=True, timeout=20)
    except subprocess.TimeoutExpired:
        pytest.fail("scanning a folder with two links to its parent never finished")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "1"
    assert time.monotonic() - start < 20


@needs_fifo
def test_fifo_named_like_a_weight_file_is_refused(tmp_path: Path) -> None:
    fifo = tmp_path / "x.safetensors"
    os.mkfifo(fifo)
    err = _no_hang(lambda: checkpoint.detect_format(fifo), fifo)
    assert isinstance(err, ModelError) and "not a regular file" in str(err)
    err = _no_hang(lambda: checkpoint.load_state_dict(fifo), fifo)
    assert isinstance(err, ModelError) and "x.safetensors" in str(err)
    err = _no_hang(lambda: hashing.file_sha256(fifo), fifo)
    assert isinstance(err, OSError) and "not a regular file" in str(err)
    entries: list[library.ModelEntry] = []
    assert _no_hang(lambda: entries.extend(library.scan([tmp_path])), fifo) is None
    [entry] = entries
    assert "not a regular file" in entry.problem
    assert library.hash_all(entries)[0].short_hash is None


@needs_fifo
def test_fifo_image_and_fifo_in_a_model_folder(tmp_path: Path, tiny_model: Path) -> None:
    from sdstudio.core.images import open_image

    image = tmp_path / "init.png"
    os.mkfifo(image)
    err = _no_hang(lambda: open_image(image, "init image"), image)
    assert isinstance(err, ImageInputError) and "not a regular file" in str(err)
    folder = tmp_path / "model"
    shutil.copytree(tiny_model, folder)
    [weight] = (folder / "unet").glob("*.safetensors")
    weight.unlink()
    os.mkfifo(weight)
    err = _no_hang(lambda: models.check_diffusers_folder(folder), weight)
    assert isinstance(err, ModelError) and "not a regular file" in str(err)


@pytest.fixture()
def online(monkeypatch: pytest.MonkeyPatch) -> Iterator[threading.Event]:
    """The hub 'online', with a release event for fakes that block (set at the end, so no
    thread outlives the test)."""
    release = threading.Event()
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    yield release
    release.set()
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and any(
            t.name.startswith("sdstudio-hub") for t in threading.enumerate()):
        time.sleep(0.02)


def test_hub_probe_is_bounded_when_the_name_lookup_hangs(
        online: threading.Event, monkeypatch: pytest.MonkeyPatch) -> None:
    def hanging_connect(*args: Any, **kwargs: Any) -> Any:
        online.wait(30)  # getaddrinfo ignores the socket timeout
        raise OSError("no network")

    monkeypatch.setattr(models.socket, "create_connection", hanging_connect)
    start = time.monotonic()
    assert models._hub_reachable(timeout=0.3) is False
    assert time.monotonic() - start < 2


def test_hub_download_that_hangs_is_given_up(
        online: threading.Event, monkeypatch: pytest.MonkeyPatch) -> None:
    import huggingface_hub

    def hanging_download(repo_id: str, **kwargs: Any) -> str:
        if kwargs.get("local_files_only"):
            raise FileNotFoundError("not cached")
        online.wait(30)  # a server that accepts the connection and never answers
        raise OSError("gave up")

    monkeypatch.setattr(models, "_hub_reachable", lambda timeout=1.5: True)
    monkeypatch.setattr(models, "HUB_STALL_TIMEOUT_S", 0.5, raising=False)
    monkeypatch.setattr(huggingface_hub, "snapshot_download", hanging_download)
    start = time.monotonic()
    with pytest.raises(ModelError, match="nothing received"):
        models.resolve("someone/some-model", models.EngineSettings())
    assert time.monotonic() - start < 5


# ---------------------------------------------------------------- memory amplification
def _zip_bomb(path: Path, unpacked: int = 64 * 2**20) -> Path:
    """A torch.save zip whose one storage entry is deflated zeros: a few hundred KB that
    unpack to ``unpacked`` bytes."""
    import torch

    plain = path.with_name("plain.pt")
    torch.save({"w": torch.zeros(4)}, plain)
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED, compresslevel=1) as out, \
            zipfile.ZipFile(plain) as src:
        for info in src.infolist():
            if info.filename.endswith("/data/0"):
                with out.open(info.filename, "w", force_zip64=True) as fh:
                    chunk = bytes(2**22)
                    for _ in range(unpacked // len(chunk)):
                        fh.write(chunk)
            else:
                out.writestr(info.filename, src.read(info))
    plain.unlink()
    return path


@pytest.mark.parametrize("name", ["bomb.ckpt", "bomb.safetensors"])
def test_zip_bomb_is_refused_from_its_directory(tmp_path: Path, name: str,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    import torch

    path = _zip_bomb(tmp_path / name)
    assert path.stat().st_size < 2**20

    def no_load(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("torch.load reached: the bomb would be unpacked")

    monkeypatch.setattr(torch, "load", no_load)
    tracemalloc.start()
    start = time.monotonic()
    try:
        with pytest.raises(ModelError, match="zip bomb") as err:
            checkpoint.load_state_dict(path)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert time.monotonic() - start < 2
    assert peak < 4 * 2**20
    assert name in str(err.value) and "\n" not in str(err.value)


def _wide_header(path: Path, count: int) -> Path:
    entry = '{"dtype":"F32","shape":[0],"data_offsets":[0,0]}'
    raw = ("{" + ",".join(f'"t{i}":{entry}' for i in range(count)) + "}").encode()
    path.write_bytes(struct.pack("<Q", len(raw)) + raw)
    return path


def test_safetensors_header_with_too_many_tensors_is_refused_before_parsing(
        tmp_path: Path) -> None:
    path = _wide_header(tmp_path / "wide.safetensors", 150_000)
    size = path.stat().st_size
    for check in (checkpoint.read_safetensors_header, models.check_safetensors):
        tracemalloc.start()
        start = time.monotonic()
        try:
            with pytest.raises(ModelError, match="150000 tensors"):
                check(path)
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
        assert time.monotonic() - start < 2
        assert peak < 2 * size + 2**20  # the header bytes, not their parsed objects
    assert len(checkpoint.read_safetensors_header(
        _wide_header(tmp_path / "ok.safetensors", 3000)).tensors) == 3000


# --------------------------------------------------------------------- deep JSON
def test_deeply_nested_safetensors_header_is_refused(tmp_path: Path) -> None:
    raw = b'{"a":' + DEEP + b"}"
    path = tmp_path / "deep.safetensors"
    path.write_bytes(struct.pack("<Q", len(raw)) + raw)
    for check in (checkpoint.read_safetensors_header, models.check_safetensors):
        with pytest.raises(ModelError, match="nested too deeply"):
            check(path)


@pytest.mark.parametrize("name", ["model_index.json", "unet/config.json",
                                  "scheduler/scheduler_config.json"])
def test_deeply_nested_model_configs_are_refused(tmp_path: Path, tiny_model: Path,
                                                 name: str) -> None:
    folder = tmp_path / "model"
    shutil.copytree(tiny_model, folder)
    (folder / name).write_bytes(b'{"a":' + DEEP + b"}")
    with pytest.raises(ModelError, match="nested too deeply") as err:
        models.check_diffusers_folder(folder)
    assert name.split("/")[-1] in str(err.value)
    [entry] = library.scan([tmp_path])
    assert entry.arch == "?" or entry.problem  # listed, not a crash


def test_deeply_nested_hash_cache_is_moved_aside(tmp_path: Path,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    cache = tmp_path / "hashes.json"
    monkeypatch.setattr(hashing, "_cache_file", lambda: cache)
    cache.write_bytes(b'{"x": ' + DEEP + b"}")
    model = tmp_path / "m.safetensors"
    model.write_bytes(b"weights")
    assert hashing._load_cache() == {}
    assert not cache.exists() and len(list(tmp_path.glob("hashes.json.bad-*"))) == 1
    digest = hashing.file_sha256(model)
    assert json.loads(cache.read_text())[str(model.resolve())]["sha256"] == digest
