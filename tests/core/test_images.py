"""core.images.open_image: each refusal says what is wrong with the file."""

from __future__ import annotations

from pathlib import Path

import pytest
from PIL import Image

from sdstudio.core.errors import ImageInputError
from sdstudio.core.images import MAX_INPUT_SIDE, open_image


@pytest.mark.parametrize(("size", "side"), [((100_000, 1), "wide"), ((1, 100_000), "tall")])
def test_a_very_long_side_is_named(tmp_path: Path, size: tuple[int, int], side: str) -> None:
    path = tmp_path / "long.png"
    Image.new("L", size).save(path)
    with pytest.raises(ImageInputError) as err:
        open_image(path, "init image")
    message = str(err.value)
    assert message == (f"init image long.png is too large: {size[0]}x{size[1]} is 100000 "
                       f"pixels {side}, at most {MAX_INPUT_SIDE} per side")


@pytest.fixture(scope="module")
def png_bytes(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    path = tmp_path_factory.mktemp("png") / "full.png"
    Image.effect_noise((64, 64), 64).convert("RGB").save(path)
    return path.read_bytes()


@pytest.mark.parametrize("length", [4, 8, 20, 33, 40, 60, 100, -30])
def test_a_truncated_png_says_truncated(tmp_path: Path, png_bytes: bytes, length: int) -> None:
    path = tmp_path / "cut.png"
    path.write_bytes(png_bytes[:length])
    with pytest.raises(ImageInputError) as err:
        open_image(path, "init image")
    message = str(err.value)
    assert "truncated" in message and "not an image" not in message, message
    assert "PNG" in message, message


@pytest.mark.parametrize(("name", "fmt"), [("cut.jpg", "JPEG"), ("cut.webp", "WEBP"),
                                           ("cut.gif", "GIF")])
def test_other_truncated_formats_say_truncated(tmp_path: Path, name: str, fmt: str) -> None:
    full = tmp_path / f"full-{name}"
    Image.effect_noise((64, 64), 64).convert("RGB").save(full, format=fmt)
    data = full.read_bytes()
    for length in (6, 16, len(data) // 2):
        path = tmp_path / name
        path.write_bytes(data[:length])
        with pytest.raises(ImageInputError, match="truncated") as err:
            open_image(path)
        assert "not an image" not in str(err.value)


def test_not_an_image_still_says_so(tmp_path: Path) -> None:
    path = tmp_path / "notes.png"
    path.write_text("these are notes\n")
    with pytest.raises(ImageInputError, match="is not an image file"):
        open_image(path)
    (tmp_path / "empty.png").write_bytes(b"")
    with pytest.raises(ImageInputError, match="empty"):
        open_image(tmp_path / "empty.png")


def test_too_many_pixels_says_how_many(tmp_path: Path) -> None:
    path = tmp_path / "big.png"
    Image.new("L", (9000, 8000)).save(path)
    with pytest.raises(ImageInputError) as err:
        open_image(path, "mask")
    assert str(err.value) == ("mask big.png is too large (9000x8000 = 72,000,000 pixels; "
                              "at most 67,108,864)")
