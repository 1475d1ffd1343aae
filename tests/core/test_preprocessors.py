"""core.preprocessors: the weightless ControlNet preprocessors against known outputs (tiny
synthetic images with exact expected pixels), canny against cv2.Canny, and the table."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
from PIL import Image

from sdstudio.core.errors import RequestError
from sdstudio.core.preprocessors import (
    IP_ADAPTER,
    PREPROCESSOR_LIST,
    PREPROCESSORS,
    canonical_module,
    control_hint,
    display_image,
    find_preprocessor,
    pixel_perfect_resolution,
    preprocess,
)


def square(size: int = 64, lo: int = 16, hi: int = 48) -> Image.Image:
    """A white square [lo, hi) on black."""
    a = np.zeros((size, size, 3), np.uint8)
    a[lo:hi, lo:hi] = 255
    return Image.fromarray(a)


def grey(image: Image.Image) -> np.ndarray:
    a = np.asarray(image)
    assert image.mode == "RGB" and a.shape[2] == 3
    assert (a[:, :, 0] == a[:, :, 1]).all() and (a[:, :, 1] == a[:, :, 2]).all()
    return a[:, :, 0]


def test_canny_edges_of_a_square_are_its_outline() -> None:
    edges = grey(preprocess("canny", square(), resolution=64))
    # cv2.Canny's one-pixel outline of the square [16, 48): the dark side on the left and
    # top, the bright side on the right and bottom, corners cut
    expected = np.zeros((64, 64), bool)
    expected[15, 17:47] = True
    expected[16, [16, 47]] = True
    expected[17:47, [15, 47]] = True
    expected[47, 16:48] = True
    assert ((edges == 255) == expected).all()
    assert set(np.unique(edges)) == {0, 255}


@pytest.mark.parametrize(("res", "low", "high"), [(64, 100, 200), (128, 50, 120), (96, 1, 255)])
def test_canny_is_cv2_canny_on_the_image_resized_to_the_resolution(
        res: int, low: int, high: int) -> None:
    rng = np.random.default_rng(3)
    blocks = rng.integers(0, 256, (6, 10, 3), dtype=np.uint8).repeat(8, 0).repeat(8, 1)
    a = cv2.GaussianBlur(blocks, (0, 0), 1.0)  # 48x80, edges of several strengths
    image = Image.fromarray(a)
    out = grey(preprocess("canny", image, resolution=res, threshold_a=low, threshold_b=high))
    k = res / 48
    h, w = round(48 * k), round(80 * k)
    resized = cv2.resize(a, (w, h), interpolation=cv2.INTER_CUBIC if k > 1 else cv2.INTER_AREA)
    ph, pw = -h % 64, -w % 64
    padded = np.pad(resized, [[0, ph], [0, pw], [0, 0]], mode="edge")
    reference = cv2.Canny(padded, low, high)[:h, :w]
    assert out.shape == (h, w)
    assert (out == reference).all()
    assert out.any()


def test_canny_defaults_are_the_extension_s() -> None:
    canny = PREPROCESSORS["canny"]
    assert canny.thresholds() == (100.0, 200.0)
    assert canny.threshold_a is not None and canny.threshold_a.label == "Low Threshold"
    assert canny.threshold_b is not None and canny.threshold_b.label == "High Threshold"
    image = square()
    assert preprocess("canny", image, resolution=64).tobytes() == preprocess(
        "canny", image, resolution=64, threshold_a=100, threshold_b=200).tobytes()


def test_canny_short_side_goes_to_the_resolution() -> None:
    out = preprocess("canny", Image.new("RGB", (300, 200)), resolution=128)
    assert out.size == (192, 128)


def test_invert_is_255_minus_the_image_at_its_own_size() -> None:
    a = np.arange(30 * 20 * 3, dtype=np.uint32).reshape(30, 20, 3) % 256
    out = preprocess("invert", Image.fromarray(a.astype(np.uint8)), resolution=512)
    assert out.size == (20, 30)
    assert (np.asarray(out) == 255 - a).all()


def test_transparency_is_over_white_as_the_extension() -> None:
    rgba = Image.new("RGBA", (8, 8), (0, 0, 0, 0))
    assert np.asarray(preprocess("invert", rgba)).max() == 0  # white, inverted


def test_lineart_standard_turns_a_black_line_on_white_into_a_white_line() -> None:
    a = np.full((64, 64, 3), 255, np.uint8)
    a[:, 30:32] = 0
    out = grey(preprocess("lineart_standard", Image.fromarray(a), resolution=64))
    expected = np.zeros((64, 64), np.uint8)
    expected[:, 30:32] = 127  # the median line strength maps to 127
    assert (out == expected).all()


def test_lineart_standard_of_a_blank_image_is_black() -> None:
    out = grey(preprocess("lineart_standard", Image.new("RGB", (64, 64), "white"),
                          resolution=64))
    assert not out.any()


def test_scribble_xdog_draws_a_band_along_the_edges_only() -> None:
    out = grey(preprocess("scribble_xdog", square(), resolution=64))
    assert set(np.unique(out)) == {0, 255}
    assert not out[22:42, 22:42].any()  # inside, far from the edge
    assert not out[:4, :4].any() and not out[60:, 60:].any()  # corners of the black field
    for k in (14, 15):  # just outside each side of the square, all along it
        assert out[k, 20:44].all() and out[20:44, k].all()
        assert out[63 - k, 20:44].all() and out[20:44, 63 - k].all()
    more = grey(preprocess("scribble_xdog", square(), resolution=64, threshold_a=64))
    assert more.sum() < out.sum()  # a higher threshold keeps fewer pixels


def test_threshold_binarises_at_the_threshold() -> None:
    row = np.arange(0, 256, 4, dtype=np.uint8)
    a = np.dstack([np.tile(row, (64, 1))] * 3)
    out = grey(preprocess("threshold", Image.fromarray(a), resolution=64))
    assert (out == np.where(row > 127, 255, 0)).all()
    out = grey(preprocess("threshold", Image.fromarray(a), resolution=64, threshold_a=200))
    assert (out == np.where(row > 200, 255, 0)).all()


def test_tile_resample_downsamples_by_the_rate() -> None:
    image = Image.new("RGB", (64, 48), (10, 20, 30))
    assert preprocess("tile_resample", image).size == (64, 48)  # rate 1: unchanged
    assert preprocess("tile_resample", image, threshold_a=1.05).size == (64, 48)
    out = preprocess("tile_resample", image, threshold_a=2.0)
    assert out.size == (32, 24)
    assert (np.asarray(out) == (10, 20, 30)).all()


def test_blur_gaussian_is_a_blur_at_the_resolution() -> None:
    out = np.asarray(preprocess("blur_gaussian", square(), resolution=64, threshold_a=2.0))
    assert out.shape == (64, 64, 3)
    assert 0 < out[32, 16, 0] < 255 and out[32, 32, 0] == 255 and out[0, 0, 0] == 0


def test_soft_edge_is_grey_level_along_the_edges_and_symmetric() -> None:
    out = grey(preprocess("softedge_sdstudio", square(), resolution=64))
    assert out[32, 15:17].min() > 200  # strongest on the edge
    assert out[32, 32] == 0 and out[2, 2] == 0  # nothing far from it
    assert len(np.unique(out)) > 10  # soft, not binary
    assert (out == out[:, ::-1]).all() and (out == out.T).all()
    blank = grey(preprocess("softedge_sdstudio", Image.new("RGB", (64, 64), "gray"),
                            resolution=64))
    assert not blank.any()


def test_shuffle_is_seeded() -> None:
    rng = np.random.default_rng(0)
    image = Image.fromarray(rng.integers(0, 256, (64, 96, 3), dtype=np.uint8))
    a = preprocess("shuffle", image, resolution=64, seed=7)
    b = preprocess("shuffle", image, resolution=64, seed=7)
    c = preprocess("shuffle", image, resolution=64, seed=8)
    assert a.tobytes() == b.tobytes()
    assert a.tobytes() != c.tobytes()
    assert a.size == (96, 64) and a.tobytes() != image.tobytes()


def test_shuffle_only_moves_pixels() -> None:
    out = np.asarray(preprocess("shuffle", Image.new("RGB", (64, 64), (40, 90, 200)),
                                resolution=64, seed=1))
    assert (out == (40, 90, 200)).all()


def test_recolor_gamma() -> None:
    row = np.arange(0, 256, 4, dtype=np.uint8)
    image = Image.fromarray(np.dstack([np.tile(row, (8, 1))] * 3))
    one = grey(preprocess("recolor_intensity", image))
    assert (one[0] == row).all()  # V of grey is the grey level
    two = grey(preprocess("recolor_intensity", image, threshold_a=2.0))
    assert (two[0] == ((row / 255.0) ** 2 * 255).astype(np.uint8)).all()
    lum = grey(preprocess("recolor_luminance", image))
    assert lum[0, 0] == 0 and lum[0, -1] > 240 and (np.diff(lum[0].astype(int)) >= 0).all()


def test_color_grid_is_squares_of_colour() -> None:
    a = np.zeros((128, 128, 3), np.uint8)
    a[:, 64:] = (255, 0, 0)
    out = np.asarray(preprocess("t2ia_color_grid", Image.fromarray(a), resolution=128))
    assert out.shape == (128, 128, 3)
    assert len({tuple(p) for p in out[:64, :64].reshape(-1, 3)}) == 1  # one 64-pixel cell


def test_none_is_the_image() -> None:
    image = square()
    assert preprocess("none", image).tobytes() == image.tobytes()


@pytest.mark.parametrize("module", ["inpaint_only", "inpaint_global_harmonious", "inpaint"])
def test_inpaint_marks_the_masked_area(module: str) -> None:
    image = Image.new("RGB", (32, 16), (200, 100, 50))
    mask = Image.new("L", (16, 8), 0)  # another size: scaled to the image's
    mask.paste(255, (0, 0, 8, 8))  # the left half is repainted
    out = preprocess(module, image, mask=mask)
    assert out.mode == "RGBA" and out.size == (32, 16)
    alpha = np.asarray(out.getchannel("A"))
    assert (alpha[:, :16] == 0).all() and (alpha[:, 16:] == 255).all()
    hint = control_hint(out)
    assert hint.dtype == np.float32 and hint.shape == (16, 32, 3)
    assert (hint[:, :16] == -1.0).all()
    assert np.allclose(hint[:, 16:], np.array([200, 100, 50]) / 255.0)
    shown = np.asarray(display_image(out))
    assert (shown[:, :16] == 0).all() and (shown[:, 16:] == (200, 100, 50)).all()


def test_inpaint_without_a_mask_is_refused() -> None:
    with pytest.raises(RequestError, match="needs an inpaint mask"):
        preprocess("inpaint_only", Image.new("RGB", (8, 8)))


def test_control_hint_of_an_rgb_image_is_in_0_1() -> None:
    hint = control_hint(square(8, 2, 6))
    assert hint.min() == 0.0 and hint.max() == 1.0


def test_every_weightless_module_gives_an_rgb_image() -> None:
    image = Image.fromarray(np.random.default_rng(1).integers(0, 256, (40, 56, 3),
                                                              dtype=np.uint8))
    for entry in PREPROCESSOR_LIST:
        if not entry.runnable or entry.needs_mask:
            continue
        out = preprocess(entry.name, image, resolution=64)
        assert out.mode == "RGB", entry.name


def test_the_table() -> None:
    names = [p.name for p in PREPROCESSOR_LIST]
    assert len(names) == len(set(names)) and names[0] == "none"
    for entry in PREPROCESSOR_LIST:
        assert find_preprocessor(entry.name) is entry
        assert find_preprocessor(entry.label) is entry
        assert entry.runnable != (entry.needs_weights or entry.kind == IP_ADAPTER), entry.name
        for slider in (entry.threshold_a, entry.threshold_b):
            if slider:
                assert slider.minimum <= slider.default <= slider.maximum, entry.name
    for name in ("canny", "invert", "lineart_standard", "scribble_xdog", "tile_resample",
                 "inpaint_only", "inpaint_global_harmonious", "shuffle", "none"):
        assert PREPROCESSORS[name].runnable
    for name in ("depth_midas", "depth_zoe", "openpose", "softedge_hed", "lineart_realistic",
                 "normal_bae", "seg_ofade20k", "mlsd"):
        assert PREPROCESSORS[name].needs_weights
    assert PREPROCESSORS["ip-adapter_clip_sd15"].kind == IP_ADAPTER
    assert PREPROCESSORS["ip-adapter_clip_sdxl"].kind == IP_ADAPTER


@pytest.mark.parametrize(("written", "name"), [
    ("inpaint", "inpaint_global_harmonious"), ("hed", "softedge_hed"), ("depth", "depth_midas"),
    ("invert (from white bg & black line)", "invert"), ("Canny", "canny"),
    ("ip-adapter_clip_h", "ip-adapter_clip_sd15"), ("lineart", "lineart_realistic"),
    ("pidinet_scribble", "scribble_pidinet"), (" canny ", "canny")])
def test_the_extension_s_names_and_labels_are_accepted(written: str, name: str) -> None:
    assert canonical_module(written) == name


def test_refusals_are_one_clear_line() -> None:
    image = square()
    with pytest.raises(RequestError, match="unknown ControlNet preprocessor: 'blurry'"):
        preprocess("blurry", image)
    with pytest.raises(RequestError, match="use a ready-made control image"):
        preprocess("depth_midas", image)
    with pytest.raises(RequestError, match="IP-Adapter"):
        preprocess("ip-adapter_clip_sd15", image)
    with pytest.raises(RequestError, match="resolution must be 64-2048, not 32"):
        preprocess("canny", image, resolution=32)
    with pytest.raises(RequestError, match="Low Threshold must be 0-256, not 300"):
        preprocess("canny", image, threshold_a=300)
    with pytest.raises(RequestError, match="too long and narrow"):
        preprocess("canny", Image.new("RGB", (8000, 2)), resolution=2048)
    with pytest.raises(RequestError, match="unknown ControlNet preprocessor"):
        canonical_module("os.system")


@pytest.mark.parametrize(("image", "target", "mode", "expected"), [
    ((512, 512), (512, 512), "Crop and Resize", 512),
    ((1024, 768), (512, 512), "Crop and Resize", 512),  # max(512/768, 512/1024) * 768
    ((1024, 768), (512, 512), "Resize and Fill", 384),  # min(...) * 768
    ((1024, 768), (512, 512), "Just Resize", 512),
    ((256, 256), (768, 512), "Crop and Resize", 768),
])
def test_pixel_perfect_resolution(image: tuple[int, int], target: tuple[int, int], mode: str,
                                  expected: int) -> None:
    assert pixel_perfect_resolution(image, target, mode) == expected
