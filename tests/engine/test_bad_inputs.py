"""Every bad input of issue 2: a clear error, no crash, nothing allocated or written."""

from __future__ import annotations

import shutil
import struct
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from sdstudio.core.errors import ImageInputError, ModelError, RequestError
from sdstudio.engine import Engine
from sdstudio.engine.images import load_image


def _files(folder: Path) -> set[Path]:
    return {p for p in folder.rglob("*")}


def test_missing_model_path(tmp_path: Path) -> None:
    with pytest.raises(ModelError, match="does not exist"):
        Engine().load(str(tmp_path / "nope"))


def test_folder_that_is_not_a_model(tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("hello")
    with pytest.raises(ModelError, match="not a model folder"):
        Engine().load(str(tmp_path))


def _copy_model(src: Path, dest: Path) -> Path:
    shutil.copytree(src, dest)
    return dest


@pytest.mark.parametrize("damage", ["truncate", "header", "garbage", "missing", "pickle_only",
                                    "empty"])
def test_corrupt_or_missing_weights(damage: str, tiny_model: Path, tmp_path: Path) -> None:
    model = _copy_model(tiny_model, tmp_path / "model")
    weights = model / "unet" / "diffusion_pytorch_model.safetensors"
    data = weights.read_bytes()
    if damage == "truncate":
        weights.write_bytes(data[: len(data) // 2])
    elif damage == "header":
        weights.write_bytes(struct.pack("<Q", 10**12) + data[8:])
    elif damage == "garbage":
        weights.write_bytes(data[:8] + b"{not json" + data[17:])
    elif damage == "missing":
        weights.unlink()
    elif damage == "pickle_only":
        weights.unlink()
        (model / "unet" / "diffusion_pytorch_model.bin").write_bytes(b"\x80\x04K\x01.")
    elif damage == "empty":
        weights.write_bytes(b"")
    before = _files(tmp_path)
    eng = Engine()
    with pytest.raises(ModelError) as info:
        eng.load(str(model))
    message = str(info.value)
    assert "unet" in message and "\n" not in message
    assert eng.loaded is None
    assert _files(tmp_path) == before


def test_model_index_not_json(tiny_model: Path, tmp_path: Path) -> None:
    model = _copy_model(tiny_model, tmp_path / "model")
    (model / "model_index.json").write_text("{broken")
    with pytest.raises(ModelError, match="not valid JSON"):
        Engine().load(str(model))


def test_hub_id_offline_fails_at_once(monkeypatch: pytest.MonkeyPatch) -> None:
    import time

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    started = time.monotonic()
    with pytest.raises(ModelError, match="HF_HUB_OFFLINE"):
        Engine().load("someorg/some-model-that-is-not-cached")
    assert time.monotonic() - started < 10


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"width": 100}, "width"),
        ({"height": 513}, "height"),
        ({"width": 100000, "height": 100000}, "width"),
        ({"steps": 0}, "steps"),
        ({"strength": 1.5}, "strength"),
        ({"strength": -0.1}, "strength"),
    ],
)
def test_bad_request_values_refused_before_anything(changes: dict[str, Any], field: str,
                                                    make_request: Callable[..., Any],
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    eng = Engine()

    def no_load(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("the model must not be loaded for a refused request")

    monkeypatch.setattr(eng, "load", no_load)
    import torch

    def no_alloc(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("nothing may be allocated")

    monkeypatch.setattr(torch, "randn", no_alloc)
    with pytest.raises(RequestError) as info:
        eng.generate(make_request(**changes))
    assert info.value.field == field


def test_strength_too_low_for_steps(engines: Callable[[str], Any],
                                    make_request: Callable[..., Any],
                                    input_images: dict[str, Path]) -> None:
    with pytest.raises(RequestError, match="runs no step"):
        engines("sd1").generate(make_request(init_image=str(input_images["init"]),
                                             strength=0.1, steps=3))


def _bomb(path: Path) -> Path:
    """A tiny PNG whose header claims 100000 x 100000 pixels."""
    import zlib

    def chunk(kind: bytes, body: bytes) -> bytes:
        return (struct.pack(">I", len(body)) + kind + body
                + struct.pack(">I", zlib.crc32(kind + body) & 0xFFFFFFFF))

    header = struct.pack(">IIBBBBB", 100000, 100000, 8, 0, 0, 0, 0)
    body = zlib.compress(b"\x00" * 1000)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", body)
                     + chunk(b"IEND", b""))
    return path


@pytest.mark.parametrize("kind", ["missing", "text", "truncated", "bomb", "directory"])
def test_bad_init_images(kind: str, tmp_path: Path, make_request: Callable[..., Any],
                         input_images: dict[str, Path], monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "init.png"
    if kind == "text":
        path.write_text("this is not an image")
    elif kind == "truncated":
        data = input_images["init"].read_bytes()
        path.write_bytes(data[: len(data) // 2])
    elif kind == "bomb":
        _bomb(path)
    elif kind == "directory":
        path.mkdir()
    eng = Engine()
    monkeypatch.setattr(eng, "load", lambda *a, **k: pytest.fail("must not load"))
    before = _files(tmp_path)
    with pytest.raises(ImageInputError) as info:
        eng.generate(make_request(init_image=str(path)))
    assert "\n" not in str(info.value)
    assert _files(tmp_path) == before
    # as a mask too
    with pytest.raises(ImageInputError):
        eng.generate(make_request(init_image=str(input_images["init"]), mask=str(path)))


def test_mask_size_differs_from_init(make_request: Callable[..., Any],
                                     input_images: dict[str, Path],
                                     monkeypatch: pytest.MonkeyPatch) -> None:
    eng = Engine()
    monkeypatch.setattr(eng, "load", lambda *a, **k: pytest.fail("must not load"))
    with pytest.raises(ImageInputError, match="same size"):
        eng.generate(make_request(init_image=str(input_images["init"]),
                                  mask=str(input_images["mask32"])))


def test_bomb_refused_from_header_alone(tmp_path: Path) -> None:
    with pytest.raises(ImageInputError, match="too large"):
        load_image(_bomb(tmp_path / "b.png"))


def test_pil_bomb_guard_stays_on(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # below our own limit but above PIL's (lowered here): PIL's guard still refuses it
    Image.new("RGB", (200, 200)).save(tmp_path / "x.png")
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)
    with pytest.raises(ImageInputError, match="too large"):
        load_image(tmp_path / "x.png")
