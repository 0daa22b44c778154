"""Image and mask reading: formats, palette GIFs, gzip, npy, bad files."""

from __future__ import annotations

import gzip
import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from napari_retsam.data.imageio import is_image_file, read_binary_mask, read_image, split_image_name
from napari_retsam.errors import RetsamInputError


@pytest.fixture
def rgb() -> np.ndarray:
    rng = np.random.default_rng(0)
    return rng.integers(0, 256, size=(9, 7, 3), dtype=np.uint8)


@pytest.fixture
def mask() -> np.ndarray:
    rng = np.random.default_rng(1)
    m = rng.random((9, 7)) < 0.3
    m[0, 0], m[0, 1] = True, False
    return m


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("01_test.tif", ("01_test", ".tif")),
        ("im0001.ah.ppm.gz", ("im0001.ah", ".ppm.gz")),
        ("im0001.ah.pgm", ("im0001.ah", ".pgm")),
        ("Image_01L_1stHO.PNG", ("Image_01L_1stHO", ".png")),
        ("noext", ("noext", "")),
    ],
)
def test_split_image_name(name: str, expected: tuple[str, str]) -> None:
    assert split_image_name(name) == expected


def test_is_image_file() -> None:
    assert is_image_file("a/im0001.ppm.gz") and is_image_file("x.JPG") and is_image_file("m.npy")
    assert not is_image_file("README.md") and not is_image_file(".hidden.png") and not is_image_file("a.txt.gz")


@pytest.mark.parametrize("ext", ["png", "tif", "ppm", "bmp"])
def test_read_image_lossless_roundtrip(tmp_path: Path, rgb: np.ndarray, ext: str) -> None:
    path = tmp_path / f"img.{ext}"
    Image.fromarray(rgb).save(path)
    out = read_image(path)
    assert out.dtype == np.uint8 and out.shape == (9, 7, 3)
    np.testing.assert_array_equal(out, rgb)


def test_read_image_gzipped_ppm(tmp_path: Path, rgb: np.ndarray) -> None:
    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, format="PPM")
    path = tmp_path / "im0001.ppm.gz"
    path.write_bytes(gzip.compress(buf.getvalue()))
    np.testing.assert_array_equal(read_image(path), rgb)


def test_read_image_grey_rgba_jpeg_and_npy(tmp_path: Path, rgb: np.ndarray) -> None:
    grey = rgb[..., 1]
    Image.fromarray(grey).save(tmp_path / "g.pgm")
    out = read_image(tmp_path / "g.pgm")
    assert out.shape == (9, 7, 3)
    for c in range(3):
        np.testing.assert_array_equal(out[..., c], grey)

    rgba = np.dstack([rgb, np.full(rgb.shape[:2], 17, np.uint8)])
    Image.fromarray(rgba).save(tmp_path / "a.png")
    np.testing.assert_array_equal(read_image(tmp_path / "a.png"), rgb)

    smooth = np.zeros((16, 16, 3), np.uint8) + np.array([200, 90, 40], np.uint8)
    Image.fromarray(smooth).save(tmp_path / "j.jpg", quality=95)
    assert np.abs(read_image(tmp_path / "j.jpg").astype(int) - smooth).max() <= 3

    np.save(tmp_path / "f.npy", rgb.astype(np.float32) / 255.0)
    np.testing.assert_array_equal(read_image(tmp_path / "f.npy"), rgb)
    np.save(tmp_path / "u16.npy", rgb.astype(np.uint16) * 257)  # 16-bit: v * 255 / 65535
    np.testing.assert_array_equal(read_image(tmp_path / "u16.npy"), rgb)


def test_read_image_palette_gif_gives_colours(tmp_path: Path) -> None:
    idx = np.array([[0, 1], [1, 0]], np.uint8)
    img = Image.fromarray(idx, mode="P")
    img.putpalette([10, 20, 30, 200, 100, 50] + [0] * 762)
    img.save(tmp_path / "p.gif")
    out = read_image(tmp_path / "p.gif")
    np.testing.assert_array_equal(out[0, 1], [200, 100, 50])
    np.testing.assert_array_equal(out[0, 0], [10, 20, 30])


def test_read_image_errors(tmp_path: Path) -> None:
    with pytest.raises(RetsamInputError, match="file not found"):
        read_image(tmp_path / "missing.png")
    (tmp_path / "broken.png").write_bytes(b"not a png at all")
    with pytest.raises(RetsamInputError, match="cannot read image .*broken.png"):
        read_image(tmp_path / "broken.png")
    good = io.BytesIO()
    Image.fromarray(np.zeros((50, 50, 3), np.uint8) + 7).save(good, format="PNG")
    (tmp_path / "truncated.png").write_bytes(good.getvalue()[: len(good.getvalue()) // 2])
    with pytest.raises(RetsamInputError, match="truncated.png"):
        read_image(tmp_path / "truncated.png")
    (tmp_path / "bad.ppm.gz").write_bytes(b"\x1f\x8b garbage")
    with pytest.raises(RetsamInputError, match="gzip"):
        read_image(tmp_path / "bad.ppm.gz")
    np.save(tmp_path / "nan.npy", np.full((4, 4, 3), np.nan))
    with pytest.raises(RetsamInputError, match="NaN"):
        read_image(tmp_path / "nan.npy")
    np.save(tmp_path / "vol.npy", np.zeros((4, 4, 4, 4)))
    with pytest.raises(RetsamInputError, match="shape"):
        read_image(tmp_path / "vol.npy")
    with pytest.raises(RetsamInputError, match="folder"):
        read_image(tmp_path)


@pytest.mark.parametrize("high", [255, 1])
def test_read_binary_mask_two_values(tmp_path: Path, mask: np.ndarray, high: int) -> None:
    Image.fromarray(mask.astype(np.uint8) * high).save(tmp_path / "m.png")
    out = read_binary_mask(tmp_path / "m.png")
    assert out.dtype == bool
    np.testing.assert_array_equal(out, mask)


def test_read_binary_mask_one_bit_png(tmp_path: Path, mask: np.ndarray) -> None:
    Image.fromarray(mask).convert("1").save(tmp_path / "m.png")
    assert Image.open(tmp_path / "m.png").mode == "1"
    np.testing.assert_array_equal(read_binary_mask(tmp_path / "m.png"), mask)


def _palette_gif(path: Path, index: np.ndarray, colours: list[tuple[int, int, int]]) -> None:
    img = Image.fromarray(index.astype(np.uint8), mode="P")
    flat = [v for c in colours for v in c]
    img.putpalette(flat + [0] * (768 - len(flat)))
    img.save(path, format="GIF")


def test_palette_gif_is_binarised_on_the_index(tmp_path: Path, mask: np.ndarray) -> None:
    # DRIVE's 2nd_manual: indices {0, 1} with palette (4,2,4) / (252,254,252).
    _palette_gif(tmp_path / "drive.gif", mask, [(4, 2, 4), (252, 254, 252)])
    assert Image.open(tmp_path / "drive.gif").mode == "P"
    np.testing.assert_array_equal(read_binary_mask(tmp_path / "drive.gif"), mask)
    # Foreground colour a dark grey (luminance about 48): a grey threshold at 128 would find nothing.
    _palette_gif(tmp_path / "dark.gif", mask, [(0, 0, 0), (30, 60, 30)])
    np.testing.assert_array_equal(read_binary_mask(tmp_path / "dark.gif"), mask)
    # Inverted palette: index 0 white (vessel), index 1 black (background).
    _palette_gif(tmp_path / "inv.gif", ~mask, [(255, 255, 255), (0, 0, 0)])
    np.testing.assert_array_equal(read_binary_mask(tmp_path / "inv.gif"), mask)


def test_palette_gif_with_three_colours_is_refused(tmp_path: Path) -> None:
    idx = np.array([[0, 1, 2], [2, 1, 0]])
    _palette_gif(tmp_path / "three.gif", idx, [(0, 0, 0), (128, 128, 128), (255, 255, 255)])
    with pytest.raises(RetsamInputError, match="not binary"):
        read_binary_mask(tmp_path / "three.gif")


def test_read_binary_mask_gz_rgb_npy_jpeg(tmp_path: Path, mask: np.ndarray) -> None:
    buf = io.BytesIO()
    Image.fromarray(np.repeat(mask[..., None].astype(np.uint8) * 255, 3, axis=2)).save(buf, format="PPM")
    (tmp_path / "im0001.ah.ppm.gz").write_bytes(gzip.compress(buf.getvalue()))
    np.testing.assert_array_equal(read_binary_mask(tmp_path / "im0001.ah.ppm.gz"), mask)

    for name, arr in (("b.npy", mask), ("u.npy", mask.astype(np.uint8)), ("f.npy", mask.astype(np.float32))):
        np.save(tmp_path / name, arr)
        np.testing.assert_array_equal(read_binary_mask(tmp_path / name), mask)

    big = np.kron(mask, np.ones((8, 8), bool))  # JPEG artefacts at the edges
    Image.fromarray(big.astype(np.uint8) * 255).save(tmp_path / "m.jpg", quality=90)
    out = read_binary_mask(tmp_path / "m.jpg")
    assert (out != big).mean() < 0.02


def test_read_binary_mask_refuses_non_binary(tmp_path: Path) -> None:
    labels = np.array([[0, 1, 2], [3, 0, 1]], np.uint8)
    Image.fromarray(labels).save(tmp_path / "labels.png")
    with pytest.raises(RetsamInputError, match=r"labels.png is not binary: 4 distinct values"):
        read_binary_mask(tmp_path / "labels.png")
    Image.fromarray(np.array([[10, 255]], np.uint8)).save(tmp_path / "offset.png")
    with pytest.raises(RetsamInputError, match="not binary"):
        read_binary_mask(tmp_path / "offset.png")
    colour = np.zeros((3, 3, 3), np.uint8)
    colour[1, 1] = (255, 0, 0)
    Image.fromarray(colour).save(tmp_path / "colour.png")
    with pytest.raises(RetsamInputError, match="colour image"):
        read_binary_mask(tmp_path / "colour.png")
    np.save(tmp_path / "nan.npy", np.array([[0.0, np.nan]]))
    with pytest.raises(RetsamInputError, match="NaN"):
        read_binary_mask(tmp_path / "nan.npy")
    with pytest.raises(RetsamInputError, match="file not found"):
        read_binary_mask(tmp_path / "none.gif")


def test_error_messages_are_one_line(tmp_path: Path) -> None:
    (tmp_path / "x.tif").write_bytes(b"II*\x00garbage\n\nmore")
    with pytest.raises(RetsamInputError) as info:
        read_image(tmp_path / "x.tif")
    assert "\n" not in str(info.value) and "x.tif" in str(info.value)


# ---------------------------------------------------------------------- size policy (issue 12)
def _png_header(width: int, height: int) -> bytes:
    """A PNG declaring ``width``×``height`` RGB with almost no data (a "decompression bomb")."""
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 16)) + chunk(b"IEND", b"")


@pytest.mark.parametrize(("width", "height"), [(20000, 20000), (13000, 12000), (200000, 1000)])
def test_images_beyond_the_size_limit_are_refused_from_the_header(tmp_path: Path, width: int, height: int) -> None:
    from napari_retsam.data.imageio import MAX_IMAGE_PIXELS

    path = tmp_path / "bomb.png"
    path.write_bytes(_png_header(width, height))
    assert width * height > MAX_IMAGE_PIXELS
    with pytest.raises(RetsamInputError, match=r"bomb\.png is too large.*144,000,000"):
        read_image(path)
    with pytest.raises(RetsamInputError, match="too large"):
        read_binary_mask(path)


def test_images_within_the_limit_read_without_pillow_warnings(tmp_path: Path, monkeypatch, rgb) -> None:
    """Pillow's DecompressionBombWarning (above its own, lower threshold) never reaches the user."""
    import warnings

    import PIL.Image

    import napari_retsam.data.imageio as imageio

    path = tmp_path / "a.png"
    Image.fromarray(rgb).save(path)
    monkeypatch.setattr(PIL.Image, "MAX_IMAGE_PIXELS", 40)  # 63 px: Pillow would warn
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert read_image(path).shape == (9, 7, 3)
    assert not caught
    monkeypatch.setattr(imageio, "MAX_IMAGE_PIXELS", 62)  # our policy below the image: refused
    with pytest.raises(RetsamInputError, match="too large: 7 × 9 = 63 pixels"):
        read_image(path)


def test_npy_and_gzip_bombs_and_truncated_npy_are_refused_before_allocating(tmp_path: Path, monkeypatch) -> None:
    import napari_retsam.data.imageio as imageio

    header = io.BytesIO()
    np.lib.format.write_array_header_1_0(header, {"descr": "<f8", "fortran_order": False,
                                                  "shape": (100000, 100000)})
    (tmp_path / "bomb.npy").write_bytes(header.getvalue())
    with pytest.raises(RetsamInputError, match=r"bomb\.npy is too large"):
        read_image(tmp_path / "bomb.npy")
    header = io.BytesIO()
    np.lib.format.write_array_header_1_0(header, {"descr": "|u1", "fortran_order": False, "shape": (50, 40)})
    (tmp_path / "short.npy").write_bytes(header.getvalue() + b"\0" * 10)
    with pytest.raises(RetsamInputError, match=r"short\.npy: truncated"):
        read_image(tmp_path / "short.npy")
    monkeypatch.setattr(imageio, "MAX_IMAGE_PIXELS", 10)  # unpack limit 80 B + 1 MiB
    (tmp_path / "zeros.ppm.gz").write_bytes(gzip.compress(b"\0" * (2 << 20)))
    with pytest.raises(RetsamInputError, match="unpacks to more than"):
        read_image(tmp_path / "zeros.ppm.gz")


def test_unreadable_image_errors_name_the_file_not_a_buffer(tmp_path: Path) -> None:
    from napari_retsam.metrics.prediction_files import read_prediction_file

    path = tmp_path / "junk.png"
    path.write_bytes(b"not an image")
    for reader in (read_image, read_binary_mask, read_prediction_file):
        with pytest.raises(RetsamInputError) as info:
            reader(path)
        assert str(path) in str(info.value) and "BytesIO" not in str(info.value)
    (tmp_path / "bomb.png").write_bytes(_png_header(20000, 20000))
    with pytest.raises(RetsamInputError, match="too large"):
        read_prediction_file(tmp_path / "bomb.png")
