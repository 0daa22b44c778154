"""Procedural synthetic colour fundus images with an exact vessel mask and FOV.

:func:`synthetic_fundus` draws a fundus photograph from a seed, with no data
files and numpy / scikit-image only:

* a circular field of view (FOV) on black;
* an orange-red background with radial vignetting and smooth low-frequency
  texture (choroidal blotches);
* a bright yellowish optic disc (OD) on the left or right and a darker macula
  with a fovea about 2.5 disc diameters temporal to it;
* a branching vessel tree: four artery/vein pairs leave the OD (two temporal
  arcades that curve around the macula, two nasal trunks), each vessel is a
  smooth random walk that tapers and branches recursively, child widths
  following Murray's law ``w_parent**3 = w_child**3 + w_rest**3``; widths go from
  about 8 px (veins) / 6 px (arteries) at the disc down to 1 px at ``size=512``
  (scaled linearly with ``size``, never below 1 px);
* vessels are darker than the background, mostly in the green channel, with a
  per-vessel contrast, fainter for thin vessels;
* Gaussian sensor noise and a mild blur.

Rendering is analytic: every vessel is a chain of capsules (segments with a
radius ``r`` linearly interpolated along them). For a pixel centre at distance
``d`` from a capsule's axis the covered fraction is approximated by
``clip(r + 0.5 - d, 0, 1)`` (a one-pixel box filter across the edge), which
anti-aliases the image. The vessel mask is ``d <= r`` for some capsule,
i.e. the pixels whose centre lies inside a vessel, which are exactly the
pixels with coverage >= 0.5 in the rendered image.

:func:`write_synthetic_folder` writes ``n`` of them in the generic folder layout
(``images/<id>.png``, ``masks/<id>.png`` 0/255, ``fov/<id>.png`` 0/255).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from napari_retsam.errors import RetsamInputError

__all__ = ["SyntheticFundus", "synthetic_fundus", "write_synthetic_folder"]

#: Reference size for the vessel widths given in pixels below.
REFERENCE_SIZE = 512
#: FOV radius as a fraction of the image size (DRIVE: about 0.47 of the width).
FOV_RADIUS_FRACTION = 0.46
#: Optic disc radius as a fraction of the image size (DRIVE: about 40 px of 565).
OD_RADIUS_FRACTION = 0.065
#: Root widths (px at ``REFERENCE_SIZE``) of veins and arteries at the disc.
VEIN_ROOT_WIDTH = 8.0
ARTERY_ROOT_WIDTH = 6.0
#: Vessels stop once their width (px at ``REFERENCE_SIZE``) falls below this.
MIN_WIDTH = 1.0
#: Length of one capsule of a vessel polyline, as a fraction of the image size.
STEP_FRACTION = 0.008
#: Background colour at the centre of the FOV (RGB, 0..255).
BACKGROUND_RGB = (205.0, 92.0, 38.0)
#: Relative darkening of R, G, B inside a vessel of contrast 1.
VESSEL_CHANNEL_WEIGHTS = (0.35, 1.0, 0.6)


@dataclass
class SyntheticFundus:
    """One synthetic fundus image with its ground truth.

    Attributes:
        image: H×W×3 uint8 RGB image (black outside the FOV).
        vessels: H×W bool, pixels whose centre lies inside a vessel.
        fov: H×W bool circular field of view.
        od_center: optic disc centre (row, col) in pixels.
        od_radius: optic disc radius in pixels.
        fovea_center: fovea centre (row, col) in pixels.
        seed: the seed that produced it.
        vessel_coverage: H×W float32 anti-aliased vessel coverage in [0, 1].
    """

    image: np.ndarray
    vessels: np.ndarray
    fov: np.ndarray
    od_center: tuple[float, float]
    od_radius: float
    fovea_center: tuple[float, float]
    seed: int
    vessel_coverage: np.ndarray = field(repr=False, default_factory=lambda: np.zeros((0, 0), np.float32))


@dataclass
class _Vessel:
    """A vessel polyline: points (N×2, row/col px), radii (N, px) and contrast."""

    points: np.ndarray
    radii: np.ndarray
    contrast: float


class _TreeGrower:
    """Grows the vessel tree as a list of :class:`_Vessel` polylines.

    Coordinates are in pixels of the output image; widths are converted from
    reference pixels with ``scale = size / REFERENCE_SIZE``.
    """

    def __init__(self, rng: np.random.Generator, size: int, center: float, fov_radius: float,
                 fovea: np.ndarray, max_vessels: int = 260) -> None:
        self.rng = rng
        self.size = size
        self.scale = size / REFERENCE_SIZE
        self.center = np.array([center, center])
        self.fov_radius = fov_radius
        self.fovea = fovea
        self.step = max(STEP_FRACTION * size, 1.5)
        self.max_vessels = max_vessels
        self.vessels: list[_Vessel] = []

    def _radius_px(self, width_ref: float) -> float:
        """Pixel radius of a vessel of width ``width_ref`` reference px (>= 0.5 px)."""
        return max(width_ref * self.scale, 1.0) / 2.0

    def grow(self, start: np.ndarray, angle: float, width: float, contrast: float,
             bend: float, depth: int, length_scale: float) -> None:
        """Grow one vessel from ``start`` in direction ``angle`` (rad, row/col frame).

        ``width`` in reference px tapers as ``width * exp(-s / L)`` along the arc
        length ``s`` (``L = length_scale * size``); ``bend`` is a steady turning
        rate (rad per image size) on top of a smoothly varying random one.
        Branches spawn at exponentially distributed intervals; each takes a
        Murray's-law share of the width and grows recursively.
        """
        if len(self.vessels) >= self.max_vessels:
            return
        rng = self.rng
        pos = np.array(start, dtype=float)
        points = [pos.copy()]
        radii = [self._radius_px(width)]
        turn_rate = 0.0
        taper_length = length_scale * self.size
        next_branch = rng.exponential(0.09 * self.size) + 0.04 * self.size
        side = 1.0 if rng.random() < 0.5 else -1.0
        travelled = 0.0
        pending: list[tuple[np.ndarray, float, float, float, float]] = []
        while width >= MIN_WIDTH:
            # Smooth random turning (an Ornstein-Uhlenbeck process on the turn rate).
            turn_rate = 0.85 * turn_rate + rng.normal(0.0, 0.08)
            angle += turn_rate * self.step / (0.02 * self.size) * 0.5 + bend * self.step / self.size
            pos = pos + self.step * np.array([math.sin(angle), math.cos(angle)])
            travelled += self.step
            if np.hypot(*(pos - self.center)) > self.fov_radius * 1.02:
                break
            width *= math.exp(-self.step / taper_length)
            # Vessels avoid the fovea: push the heading away when close to it.
            to_fovea = self.fovea - pos
            dist_fovea = float(np.hypot(*to_fovea))
            if dist_fovea < 0.09 * self.size and depth > 0:
                away = math.atan2(-to_fovea[0], -to_fovea[1])
                delta = (away - angle + math.pi) % (2 * math.pi) - math.pi
                angle += 0.25 * delta
            points.append(pos.copy())
            radii.append(self._radius_px(width))
            if travelled >= next_branch and depth < 6:
                child_width = width * rng.uniform(0.45, 0.85)
                if child_width >= MIN_WIDTH * 1.2:
                    rest = max(width**3 - child_width**3, 0.0) ** (1.0 / 3.0)
                    width = max(rest, width * 0.7)
                    branch_angle = angle + side * math.radians(rng.uniform(30.0, 75.0))
                    side = -side
                    child_contrast = float(np.clip(contrast * rng.uniform(0.8, 1.05), 0.15, 0.9))
                    child_bend = rng.normal(0.0, 1.5)
                    pending.append((pos.copy(), branch_angle, child_width, child_contrast, child_bend))
                next_branch = travelled + rng.exponential(0.055 * self.size) + 0.025 * self.size
        if len(points) >= 2:
            self.vessels.append(_Vessel(np.asarray(points), np.asarray(radii), contrast))
        for b_pos, b_angle, b_width, b_contrast, b_bend in pending:
            self.grow(b_pos, b_angle, b_width, b_contrast, b_bend, depth + 1,
                      length_scale * rng.uniform(0.55, 0.8))


def _render_vessels(vessels: list[_Vessel], shape: tuple[int, int]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Rasterise capsule chains into (coverage, darkness, mask).

    For each segment ``a -> b`` with radii ``ra -> rb`` and each pixel centre
    ``p`` in its bounding box: ``t = clip(((p-a)·(b-a)) / |b-a|**2, 0, 1)``,
    ``d = |p - (a + t (b-a))|``, ``r = ra + t (rb - ra)``; coverage
    ``c = clip(r + 0.5 - d, 0, 1)``; darkness ``contrast * c * profile`` with a
    rounded cross-section ``profile = 0.7 + 0.3 sqrt(max(0, 1 - (d/r)**2))`` and
    fainter thin vessels (``contrast * (0.55 + 0.45 min(1, 2r/4))``).
    Overlaps take the maximum. Mask: ``d <= r``.
    """
    h, w = shape
    coverage = np.zeros(shape, np.float32)
    darkness = np.zeros(shape, np.float32)
    mask = np.zeros(shape, bool)
    for vessel in vessels:
        pts, rad = vessel.points, vessel.radii
        for i in range(len(pts) - 1):
            a, b = pts[i], pts[i + 1]
            ra, rb = rad[i], rad[i + 1]
            rmax = max(ra, rb) + 1.0
            r0 = max(int(math.floor(min(a[0], b[0]) - rmax)), 0)
            r1 = min(int(math.ceil(max(a[0], b[0]) + rmax)) + 1, h)
            c0 = max(int(math.floor(min(a[1], b[1]) - rmax)), 0)
            c1 = min(int(math.ceil(max(a[1], b[1]) + rmax)) + 1, w)
            if r0 >= r1 or c0 >= c1:
                continue
            yy = np.arange(r0, r1, dtype=np.float32)[:, None]
            xx = np.arange(c0, c1, dtype=np.float32)[None, :]
            ab = b - a
            len2 = float(ab @ ab) or 1e-12
            t = np.clip(((yy - a[0]) * ab[0] + (xx - a[1]) * ab[1]) / len2, 0.0, 1.0)
            dy = yy - (a[0] + t * ab[0])
            dx = xx - (a[1] + t * ab[1])
            d = np.sqrt(dy * dy + dx * dx)
            r = ra + t * (rb - ra)
            cov = np.clip(r + 0.5 - d, 0.0, 1.0)
            profile = 0.7 + 0.3 * np.sqrt(np.clip(1.0 - (d / r) ** 2, 0.0, 1.0))
            thin = 0.55 + 0.45 * np.minimum(1.0, 2.0 * r / 4.0)
            dark = vessel.contrast * cov * profile * thin
            np.maximum(coverage[r0:r1, c0:c1], cov, out=coverage[r0:r1, c0:c1])
            np.maximum(darkness[r0:r1, c0:c1], dark, out=darkness[r0:r1, c0:c1])
            mask[r0:r1, c0:c1] |= d <= r
    return coverage, darkness, mask


def _smooth_noise(rng: np.random.Generator, size: int, cells: int) -> np.ndarray:
    """Low-frequency noise in about [-1, 1]: a ``cells``×``cells`` random grid, bicubically upsampled."""
    from skimage.transform import resize

    grid = rng.normal(0.0, 1.0, (cells, cells))
    return resize(grid, (size, size), order=3, mode="reflect", anti_aliasing=False).astype(np.float32) / 1.5


def synthetic_fundus(seed: int = 0, size: int = 512) -> SyntheticFundus:
    """A procedural colour fundus image with its vessel mask and FOV.

    Args:
        seed: random seed; the same seed and size give identical arrays.
        size: side length in pixels (square image), at least 64.

    Returns:
        A :class:`SyntheticFundus`; ``vessels`` lies inside ``fov``.

    Raises:
        RetsamInputError: ``size`` below 64 or not an integer, negative seed.
    """
    if isinstance(size, bool) or not isinstance(size, (int, np.integer)) or size < 64:
        raise RetsamInputError(f"synthetic fundus size must be an integer >= 64, got {size!r}")
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise RetsamInputError(f"synthetic fundus seed must be a non-negative integer, got {seed!r}")
    size = int(size)
    rng = np.random.default_rng(int(seed))
    from scipy import ndimage

    center = (size - 1) / 2.0
    fov_radius = FOV_RADIUS_FRACTION * size
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    rr = np.hypot(yy - center, xx - center)
    fov = rr <= fov_radius

    # Optic disc left or right (left / right eye), fovea on the other side of the centre.
    side = -1.0 if rng.random() < 0.5 else 1.0
    od = np.array([center + rng.uniform(-0.04, 0.04) * size, center + side * rng.uniform(0.24, 0.29) * size])
    od_radius = OD_RADIUS_FRACTION * size * rng.uniform(0.9, 1.1)
    fovea = np.array([od[0] + rng.uniform(0.01, 0.04) * size, od[1] - side * rng.uniform(0.30, 0.34) * size])

    # Background: colour, vignetting, low-frequency texture.
    base = np.array(BACKGROUND_RGB, np.float32) * rng.uniform(0.88, 1.08, 3).astype(np.float32)
    vignette = 1.0 - 0.45 * (np.clip(rr / fov_radius, 0, 1.2) ** 2.4)
    texture = 1.0 + 0.06 * _smooth_noise(rng, size, 9) + 0.03 * _smooth_noise(rng, size, 31)
    d_fovea = np.hypot(yy - fovea[0], xx - fovea[1])
    macula = 1.0 - 0.28 * np.exp(-(d_fovea / (0.085 * size)) ** 2) - 0.12 * np.exp(-(d_fovea / (0.02 * size)) ** 2)
    shade = (vignette * texture * macula)[..., None]
    img = base[None, None, :] * shade

    # Optic disc: bright, slightly yellow, a soft-edged disc plus a brighter cup.
    d_od = np.hypot(yy - od[0], xx - od[1])
    disc = 1.0 / (1.0 + np.exp((d_od - od_radius) / (0.08 * od_radius)))
    cup = np.exp(-(d_od / (0.45 * od_radius)) ** 2)
    od_colour = np.array([250.0, 205.0, 135.0], np.float32)
    cup_colour = np.array([255.0, 235.0, 190.0], np.float32)
    glow = np.exp(-(d_od / (2.2 * od_radius)) ** 2)[..., None] * 0.25
    img = img * (1 - glow) + np.array([235.0, 150.0, 80.0], np.float32) * glow
    img = img * (1 - disc[..., None]) + od_colour * disc[..., None]
    img = img * (1 - 0.6 * cup[..., None]) + cup_colour * 0.6 * cup[..., None]

    # Vessel tree: artery/vein pairs of two temporal arcades and two nasal trunks.
    grower = _TreeGrower(rng, size, center, fov_radius, fovea)
    to_fovea = math.atan2(fovea[0] - od[0], fovea[1] - od[1])
    roots = [  # (angle offset from the OD->fovea axis, steady bend sign, length scale)
        (math.radians(80), -1.0, 0.8),    # temporal arcade on one side of the macula
        (math.radians(-80), 1.0, 0.8),    # temporal arcade on the other side
        (math.radians(135), 0.0, 0.5),    # nasal trunks
        (math.radians(-135), 0.0, 0.5),
    ]
    for offset, bend_sign, length_scale in roots:
        for kind in ("vein", "artery"):
            jitter = math.radians(rng.uniform(-12, 12)) + (math.radians(8) if kind == "artery" else 0.0)
            angle = to_fovea + offset + jitter
            start = od + rng.uniform(0.05, 0.3) * od_radius * np.array([math.sin(angle), math.cos(angle)])
            width = (VEIN_ROOT_WIDTH if kind == "vein" else ARTERY_ROOT_WIDTH) * rng.uniform(0.9, 1.1)
            contrast = rng.uniform(0.5, 0.65) if kind == "vein" else rng.uniform(0.35, 0.5)
            # Arcades turn steadily towards the macula (about 2.7 rad per image size).
            bend = bend_sign * 2.7 * rng.uniform(0.85, 1.15) if bend_sign else rng.normal(0.0, 0.8)
            grower.grow(start, angle, width, float(contrast), bend, 0, length_scale * rng.uniform(0.85, 1.15))
    coverage, darkness, vessels = _render_vessels(grower.vessels, (size, size))

    weights = np.array(VESSEL_CHANNEL_WEIGHTS, np.float32)
    img = img * (1.0 - darkness[..., None] * weights[None, None, :])

    # Sensor noise, mild blur, FOV with a one-pixel soft edge, black outside.
    img = img + rng.normal(0.0, 2.5, img.shape).astype(np.float32)
    img = ndimage.gaussian_filter(img, sigma=(0.6, 0.6, 0))
    edge = np.clip(fov_radius + 0.5 - rr, 0.0, 1.0)
    img = img * edge[..., None]
    image = np.clip(np.rint(img), 0, 255).astype(np.uint8)
    vessels &= fov
    coverage *= fov
    return SyntheticFundus(
        image=image,
        vessels=vessels,
        fov=fov,
        od_center=(float(od[0]), float(od[1])),
        od_radius=float(od_radius),
        fovea_center=(float(fovea[0]), float(fovea[1])),
        seed=int(seed),
        vessel_coverage=coverage.astype(np.float32),
    )


def write_synthetic_folder(root: str | Path, n: int, seed: int = 0, size: int = 256) -> Path:
    """Write ``n`` synthetic fundus images in the generic folder layout.

    Layout under ``root``: ``images/synth_000.png`` (RGB), ``masks/synth_000.png``
    (vessels 0/255) and ``fov/synth_000.png`` (0/255). Image ``i`` uses seed
    ``seed + i``. Returns ``root`` as a :class:`~pathlib.Path`.

    Raises:
        RetsamInputError: ``n < 1`` or the folder cannot be written.
    """
    from skimage.io import imsave

    from napari_retsam.io_utils import ensure_writable_dir

    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1:
        raise RetsamInputError(f"number of synthetic images must be a positive integer, got {n!r}")
    root = Path(root)
    folders = {name: ensure_writable_dir(root / name) for name in ("images", "masks", "fov")}
    for i in range(int(n)):
        sample = synthetic_fundus(seed=int(seed) + i, size=size)
        sid = f"synth_{i:03d}"
        try:
            imsave(folders["images"] / f"{sid}.png", sample.image, check_contrast=False)
            imsave(folders["masks"] / f"{sid}.png", sample.vessels.astype(np.uint8) * 255, check_contrast=False)
            imsave(folders["fov"] / f"{sid}.png", sample.fov.astype(np.uint8) * 255, check_contrast=False)
        except OSError as exc:
            raise RetsamInputError(f"cannot write synthetic sample {sid} under {root}: {exc}") from exc
    return root
