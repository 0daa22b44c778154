"""Dataset fixtures: tiny synthetic copies of DRIVE, STARE, CHASE_DB1 and a generic folder.

Every fixture writes files into ``tmp_path`` in the dataset's *published* layout
and file formats and returns the root folder. The images are small fundus-like
pictures drawn by :func:`fundus_arrays` (a bright disc on a near-black border,
darker vessels: a few branching line segments 1-3 px wide), so that FOV
computation and vessel counts are meaningful; vessel masks are non-trivial and
differ between the two annotators.

==================  ==========================================================
fixture             contents
==================  ==========================================================
``drive_root``      ``training/`` ids 21, 22 and ``test/`` ids 01, 02, 03
                    (48×44): ``images/*.tif``, ``1st_manual/*.gif`` (L, 0/255),
                    ``test/2nd_manual/*.gif`` (palette GIF, indices 0/1),
                    ``mask/*_mask.gif`` (L, 0/255)
``stare_root``      ``images/`` im0001, im0044 (train), im0162, im0324 (test),
                    60×70, ``.ppm`` and one ``.ppm.gz``; ``labels-ah/`` and
                    ``labels-vk/`` mixing ``.ah.ppm`` (RGB P6), ``.ah.pgm``,
                    ``.ppm.gz`` and ``.pgm.gz`` spellings
``chase_root``      flat folder, Image_01L, Image_01R (train), Image_11L,
                    Image_14R (test), 60×72, disc clipped by the frame:
                    ``*.jpg``, ``*_1stHO.png`` (1-bit PNG), ``*_2ndHO.png`` (L 0/255)
``folder_root``     ``images/`` a.png (40×48), b.jpg (40×48), c.tif (52×44);
                    ``masks/`` a.png (0/255), b.gif (0/255), c.npy (bool);
                    ``fov/`` a.png, b.png, c.npy
``folder_root_nofov``  like ``folder_root`` without ``fov/`` (FOV computed)
==================  ==========================================================
"""

from __future__ import annotations

import gzip
import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

__all__ = [
    "chase_root",
    "drive_root",
    "folder_root",
    "folder_root_nofov",
    "fundus_arrays",
    "stare_root",
    "write_gz",
]

DRIVE_SHAPE = (48, 44)
STARE_SHAPE = (60, 70)
CHASE_SHAPE = (60, 72)


def _segment_distance(yy: np.ndarray, xx: np.ndarray, p0: np.ndarray, p1: np.ndarray) -> np.ndarray:
    d = p1 - p0
    t = ((yy - p0[0]) * d[0] + (xx - p0[1]) * d[1]) / max(float(d @ d), 1e-9)
    t = np.clip(t, 0.0, 1.0)
    return np.hypot(yy - (p0[0] + t * d[0]), xx - (p0[1] + t * d[1]))


def fundus_arrays(
    shape: tuple[int, int], seed: int, radius_frac: float = 0.45, extra_vessel: bool = False
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A tiny fundus-like picture: ``(image uint8 H×W×3, vessels bool, disc bool)``.

    The disc is centred with radius ``radius_frac * min(H, W)`` (values above
    0.5 clip it at the frame, as in CHASE_DB1); outside it the image is noise in
    ``[0, 12]``. Vessels: 4 segments from an "optic disc" point plus 2 branches,
    half-widths 0.6-1.5 px, kept 2 px inside the disc; ``extra_vessel`` adds one
    more segment (the second annotator's mask).
    """
    rng = np.random.default_rng(seed)
    h, w = shape
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float64)
    cy, cx = (h - 1) / 2.0, (w - 1) / 2.0
    radius = radius_frac * min(h, w)
    rr = np.hypot(yy - cy, xx - cx)
    disc = rr <= radius
    inner = rr <= radius - 2.0

    od = np.array([cy + rng.uniform(-0.1, 0.1) * h, cx + rng.uniform(0.15, 0.25) * w])
    vessels = np.zeros(shape, dtype=bool)
    ends = []
    for k in range(4):
        angle = np.pi / 2 * k + rng.uniform(0.2, 1.2)
        end = od + radius * 1.6 * np.array([np.sin(angle), np.cos(angle)])
        vessels |= _segment_distance(yy, xx, od, end) <= rng.uniform(0.9, 1.5)
        ends.append((od, end))
    for p0, p1 in ends[:2]:
        mid = p0 + 0.5 * (p1 - p0)
        angle = rng.uniform(0, 2 * np.pi)
        vessels |= _segment_distance(yy, xx, mid, mid + radius * np.array([np.sin(angle), np.cos(angle)])) <= 0.6
    if extra_vessel:  # a vertical vessel left of the centre, which only the second annotator drew
        x0 = cx - rng.uniform(0.3, 0.5) * radius
        p0, p1 = np.array([cy - 0.6 * radius, x0]), np.array([cy + 0.6 * radius, x0 + 0.2 * radius])
        vessels |= _segment_distance(yy, xx, p0, p1) <= 1.0
    vessels &= inner

    shade = 1.0 - 0.35 * (rr / max(radius, 1.0)) ** 2
    base = np.array([205.0, 95.0, 40.0])
    img = shade[..., None] * base[None, None, :]
    img[vessels] *= np.array([0.75, 0.45, 0.55])
    img += rng.normal(0, 3.0, size=img.shape)
    img[~disc] = rng.uniform(0, 12, size=(int((~disc).sum()), 3))
    image = np.clip(np.round(img), 0, 255).astype(np.uint8)
    return image, vessels, disc


def _mask_u8(mask: np.ndarray) -> np.ndarray:
    return mask.astype(np.uint8) * 255


def _pil_bytes(img: Image.Image, fmt: str) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format=fmt)
    return buf.getvalue()


def write_gz(path: Path, img: Image.Image, fmt: str) -> Path:
    """Save ``img`` in format ``fmt`` gzipped at ``path`` (a name ending in ``.gz``)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(gzip.compress(_pil_bytes(img, fmt)))
    return path


def _grey_gif(arr: np.ndarray, path: Path) -> None:
    """A GIF with the full 256-grey palette, which Pillow reads back as mode L (like DRIVE's 1st_manual)."""
    Image.fromarray(arr).save(path, format="GIF", optimize=False)


def _palette_gif(mask: np.ndarray, path: Path) -> None:
    """A palette GIF storing indices 0/1 (like DRIVE's 2nd_manual), palette (4,2,4)/(252,254,252)."""
    img = Image.fromarray(mask.astype(np.uint8), mode="P")
    palette = [4, 2, 4, 252, 254, 252] + [0, 0, 0] * 254
    img.putpalette(palette)
    img.save(path, format="GIF")


@pytest.fixture
def drive_root(tmp_path: Path) -> Path:
    """Tiny DRIVE: training 21, 22 and test 01, 02, 03 in the published layout."""
    root = tmp_path / "DRIVE"
    for split, ids, suffix in (("training", (21, 22), "training"), ("test", (1, 2, 3), "test")):
        base = root / split
        for sub in ("images", "1st_manual", "mask") + (("2nd_manual",) if split == "test" else ()):
            (base / sub).mkdir(parents=True)
        for n in ids:
            image, vessels, disc = fundus_arrays(DRIVE_SHAPE, seed=n)
            Image.fromarray(image).save(base / "images" / f"{n:02d}_{suffix}.tif")
            _grey_gif(_mask_u8(vessels), base / "1st_manual" / f"{n:02d}_manual1.gif")
            _grey_gif(_mask_u8(disc), base / "mask" / f"{n:02d}_{suffix}_mask.gif")
            if split == "test":
                _, vessels2, _ = fundus_arrays(DRIVE_SHAPE, seed=n, extra_vessel=True)
                _palette_gif(vessels2, base / "2nd_manual" / f"{n:02d}_manual2.gif")
    return root


STARE_FILES = {
    # id: (image name, ah label name, vk label name)
    "im0001": ("im0001.ppm", "im0001.ah.ppm", "im0001.vk.pgm"),
    "im0044": ("im0044.ppm", "im0044.ah.pgm", "im0044.vk.ppm"),
    "im0162": ("im0162.ppm.gz", "im0162.ah.ppm.gz", "im0162.vk.ppm"),
    "im0324": ("im0324.ppm", "im0324.ah.pgm.gz", "im0324.vk.ppm.gz"),
}


def _save_netpbm(arr: np.ndarray, path: Path) -> None:
    """Binary PPM (RGB) or PGM (grey) content, gzipped when the name ends in .gz."""
    img = Image.fromarray(arr)
    if path.name.endswith(".gz"):
        write_gz(path, img, "PPM")
    else:
        img.save(path, format="PPM")


@pytest.fixture
def stare_root(tmp_path: Path) -> Path:
    """Tiny STARE (4 images, 2 train / 2 test) with every label spelling that occurs."""
    root = tmp_path / "STARE"
    for sub in ("images", "labels-ah", "labels-vk"):
        (root / sub).mkdir(parents=True)
    for k, (sid, (img_name, ah_name, vk_name)) in enumerate(STARE_FILES.items()):
        image, vessels, _ = fundus_arrays(STARE_SHAPE, seed=100 + k)
        _, vessels2, _ = fundus_arrays(STARE_SHAPE, seed=100 + k, extra_vessel=True)
        _save_netpbm(image, root / "images" / img_name)
        ah = _mask_u8(vessels)
        if ah_name.endswith(".ah.ppm"):  # a colour P6 file with three equal channels
            ah = np.repeat(ah[..., None], 3, axis=2)
        _save_netpbm(ah, root / "labels-ah" / ah_name)
        _save_netpbm(_mask_u8(vessels2), root / "labels-vk" / vk_name)
    return root


CHASE_IDS = ("Image_01L", "Image_01R", "Image_11L", "Image_14R")


@pytest.fixture
def chase_root(tmp_path: Path) -> Path:
    """Tiny CHASE_DB1 (4 images, 2 train / 2 test): JPEG images, 1-bit PNG 1stHO, 8-bit 2ndHO."""
    root = tmp_path / "CHASE_DB1"
    root.mkdir(parents=True)
    for k, sid in enumerate(CHASE_IDS):
        image, vessels, _ = fundus_arrays(CHASE_SHAPE, seed=200 + k, radius_frac=0.55)
        _, vessels2, _ = fundus_arrays(CHASE_SHAPE, seed=200 + k, radius_frac=0.55, extra_vessel=True)
        Image.fromarray(image).save(root / f"{sid}.jpg", quality=95)
        Image.fromarray(vessels).convert("1").save(root / f"{sid}_1stHO.png")
        Image.fromarray(_mask_u8(vessels2)).save(root / f"{sid}_2ndHO.png")
    return root


def _write_folder(root: Path, with_fov: bool) -> Path:
    for sub in ("images", "masks") + (("fov",) if with_fov else ()):
        (root / sub).mkdir(parents=True)
    specs = (("a", (40, 48), "png", "png"), ("b", (40, 48), "jpg", "gif"), ("c", (52, 44), "tif", "npy"))
    for k, (sid, shape, img_ext, mask_ext) in enumerate(specs):
        image, vessels, disc = fundus_arrays(shape, seed=300 + k)
        if img_ext == "jpg":
            Image.fromarray(image).save(root / "images" / f"{sid}.jpg", quality=95)
        else:
            Image.fromarray(image).save(root / "images" / f"{sid}.{img_ext}")
        if mask_ext == "npy":
            np.save(root / "masks" / f"{sid}.npy", vessels)
            if with_fov:
                np.save(root / "fov" / f"{sid}.npy", disc)
        else:
            if mask_ext == "gif":
                _grey_gif(_mask_u8(vessels), root / "masks" / f"{sid}.gif")
            else:
                Image.fromarray(_mask_u8(vessels)).save(root / "masks" / f"{sid}.{mask_ext}")
            if with_fov:
                Image.fromarray(_mask_u8(disc)).save(root / "fov" / f"{sid}.png")
    return root


@pytest.fixture
def folder_root(tmp_path: Path) -> Path:
    """Generic folder layout: 3 samples of mixed formats and two sizes, with ``fov/``."""
    return _write_folder(tmp_path / "folder", with_fov=True)


@pytest.fixture
def folder_root_nofov(tmp_path: Path) -> Path:
    """Generic folder layout like ``folder_root`` but without ``fov/`` (FOV computed)."""
    return _write_folder(tmp_path / "folder_nofov", with_fov=False)
