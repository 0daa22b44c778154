"""FID-free quality report of a generator against the real training set.

FID needs Inception weights downloaded from the network; this report needs
nothing but numpy, scikit-image and the Frangi baseline. All statistics are
computed inside the field of view (FOV) of each image, at the GAN resolution
(real images are prepared exactly like the training pairs: whole images fitted
to the GAN size, or, for a patch generator, patches at native resolution cut
with :func:`napari_retsam.gan.data.crop_pairs`, whose masks and FOVs condition
the generated set, so both sets hold the same vessel trees).

Image statistics
    colour histogram distance: per channel c, the histogram h_c of all FOV
    pixels of a set in 32 equal bins over 0..255, normalised to sum 1; the
    distance of two sets is the mean over R, G, B of the total variation
    ½ Σ_b |h_c^A(b) − h_c^B(b)| ∈ [0, 1] (0: identical distributions).
    Reported generated-vs-real, and real-half-vs-other-half as the level two
    samples of the *same* distribution reach.
    vessel density: |mask ∩ FOV| / |FOV| per image (mean, std).
    vessel width: |mask ∩ FOV| / |skeleton(mask ∩ FOV)|, the mean vessel width
    in pixels (area over centre-line length); reported for the pairs' masks and
    for the segmenter's masks of their images (how wide the vessels *drawn* in
    the images are, next to how wide the masks say they are).
    RMS contrast: standard deviation of the green channel / 255 in the FOV.
    vessel contrast: (mean green of FOV background − mean green of vessel
    pixels) / 255; positive when vessels are darker, as in fundus photographs.

Pairing fidelity
    Dice(mask, Frangi(image)) = 2 |A ∩ B| / (|A| + |B|) inside the FOV, where
    Frangi(image) is :func:`napari_retsam.baseline.frangi_segment`'s vessel
    segmentation with its scales σ multiplied by (FOV diameter / 540 px), the
    DRIVE FOV they were tuned on (patches are at native resolution: factor 1),
    or the segmenter the caller passes (``segment``, e.g. a fine-tuned SAM: the
    benchmark ``benchmarks/gan_downstream.py`` does). Dice is 1 when both are
    empty. Reported for the generated pairs,
    for the real pairs, and for the real set with its masks shuffled (mask i
    paired with image i+1) – the chance level of unrelated pairs. A generator
    whose masks do not follow its images lands near the shuffled figure.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from napari_retsam.errors import RetsamInputError

__all__ = ["BINS", "real_reference", "colour_histograms", "histogram_distance", "vessel_density", "vessel_width",
           "rms_contrast", "vessel_contrast", "dice", "pairing_dice", "set_statistics", "quality_report", "report_figure",
           "GeneratedVsReal", "report_summary_lines", "frangi_masks"]

BINS = 32


def colour_histograms(images: np.ndarray, fovs: np.ndarray) -> np.ndarray:
    """3×BINS histogram of the FOV pixels of all images, each channel summing to 1."""
    fovs = np.broadcast_to(fovs, images.shape[:3])
    pixels = images[fovs]  # P×3
    if pixels.shape[0] == 0:
        raise RetsamInputError("no pixels inside the field of view")
    hist = np.stack([np.bincount(pixels[:, c].astype(np.int64) * BINS // 256, minlength=BINS) for c in range(3)])
    return hist / hist.sum(axis=1, keepdims=True)


def histogram_distance(h_a: np.ndarray, h_b: np.ndarray) -> float:
    """Mean over channels of the total variation ½ Σ |h_a − h_b|."""
    return float(np.mean(0.5 * np.abs(h_a - h_b).sum(axis=1)))


def vessel_density(masks: np.ndarray, fovs: np.ndarray) -> np.ndarray:
    """Per image: |mask ∩ FOV| / |FOV|."""
    fovs = np.broadcast_to(fovs, masks.shape)
    return (masks & fovs).sum(axis=(1, 2)) / np.maximum(fovs.sum(axis=(1, 2)), 1)


def vessel_width(masks: np.ndarray, fovs: np.ndarray) -> np.ndarray:
    """Per image: mean vessel width in px, |mask ∩ FOV| / |skeleton| (NaN when there is no vessel)."""
    from skimage.morphology import skeletonize

    fovs = np.broadcast_to(fovs, masks.shape)
    out = np.full(len(masks), np.nan)
    for i in range(len(masks)):
        vessels = masks[i] & fovs[i]
        length = int(skeletonize(vessels).sum())
        if length:
            out[i] = vessels.sum() / length
    return out


def rms_contrast(images: np.ndarray, fovs: np.ndarray) -> np.ndarray:
    """Per image: std of the green channel / 255 inside the FOV."""
    fovs = np.broadcast_to(fovs, images.shape[:3])
    return np.array([images[i, ..., 1][fovs[i]].std() / 255.0 for i in range(len(images))])


def vessel_contrast(images: np.ndarray, masks: np.ndarray, fovs: np.ndarray) -> np.ndarray:
    """Per image: (mean green of background − mean green of vessels) / 255 in the FOV (NaN if a class is empty)."""
    fovs = np.broadcast_to(fovs, masks.shape)
    out = np.full(len(images), np.nan)
    for i in range(len(images)):
        g = images[i, ..., 1].astype(np.float64)
        v, b = masks[i] & fovs[i], ~masks[i] & fovs[i]
        if v.any() and b.any():
            out[i] = (g[b].mean() - g[v].mean()) / 255.0
    return out


def dice(a: np.ndarray, b: np.ndarray) -> float:
    """2 |a ∩ b| / (|a| + |b|); 1.0 when both are empty."""
    total = int(a.sum()) + int(b.sum())
    return 1.0 if total == 0 else 2.0 * int((a & b).sum()) / total


#: FOV diameter (px) of the images the Frangi baseline's scales were tuned on (DRIVE).
FRANGI_REFERENCE_FOV_DIAMETER = 540.0


def frangi_params_for(fov: np.ndarray) -> object:
    """The baseline's Frangi parameters with the scales σ multiplied by
    d / 540, d = 2·sqrt(|FOV| / π) the FOV diameter in px (σ ≥ 0.5 px), so the
    filter sees vessels of the same relative width at the GAN resolution."""
    from napari_retsam.baseline import DEFAULT_PARAMS

    d = 2.0 * np.sqrt(max(int(np.count_nonzero(fov)), 1) / np.pi)
    factor = d / FRANGI_REFERENCE_FOV_DIAMETER
    sigmas = tuple(sorted({round(max(0.5, s * factor), 3) for s in DEFAULT_PARAMS.sigmas}))
    return DEFAULT_PARAMS.with_(sigmas=sigmas)


def frangi_masks(images: np.ndarray, fovs: np.ndarray, *, native: bool = False) -> np.ndarray:
    """The Frangi baseline's vessel segmentation of every image (N×H×W bool),
    with scales adapted to the FOV size (:func:`frangi_params_for`), or the
    tuned scales unchanged when ``native`` (patches at native resolution)."""
    from napari_retsam.baseline import DEFAULT_PARAMS, frangi_segment

    fovs = np.broadcast_to(fovs, images.shape[:3])
    return np.stack([np.asarray(frangi_segment(images[i], fovs[i],
                                               params=DEFAULT_PARAMS if native else frangi_params_for(fovs[i]))[1],
                                dtype=bool)
                     for i in range(len(images))])


def real_reference(dataset: Any, checkpoint: Any, *, n: int | None = None, seed: int = 0) -> Any:
    """The real pairs a generator is compared with (:class:`~napari_retsam.gan.data.PreparedPairs`
    with masks): the whole images at the generator's size, or for a patch generator ``n``
    patches (default: 4 per image) cut with :func:`~napari_retsam.gan.data.crop_pairs`."""
    from napari_retsam.gan.data import crop_pairs, prepare_native, prepare_pairs

    size, unit = checkpoint.size, checkpoint.config.unit
    if unit == "patch":
        native = prepare_native(dataset, size, require_masks=True)
        return crop_pairs(native, 4 * len(native) if n is None else n, size, seed)
    return prepare_pairs(dataset, size, require_masks=True)


def pairing_dice(images: np.ndarray, masks: np.ndarray, fovs: np.ndarray,
                 segmented: np.ndarray | None = None) -> np.ndarray:
    """Per pair: Dice(mask ∩ FOV, Frangi(image) ∩ FOV). ``segmented`` reuses Frangi masks."""
    fovs = np.broadcast_to(fovs, masks.shape)
    seg = frangi_masks(images, fovs) if segmented is None else segmented
    return np.array([dice(masks[i] & fovs[i], seg[i] & fovs[i]) for i in range(len(images))])


def _summary(values: np.ndarray) -> dict[str, float]:
    v = np.asarray(values, dtype=np.float64)
    v = v[np.isfinite(v)]
    if v.size == 0:  # e.g. vessel contrast when every mask is empty
        return {"mean": None, "std": None, "n": 0}
    return {"mean": float(v.mean()), "std": float(v.std()), "n": int(v.size)}


def set_statistics(images: np.ndarray, masks: np.ndarray, fovs: np.ndarray,
                   segmented: np.ndarray | None = None) -> dict[str, Any]:
    """Vessel density, widths, contrasts and pairing Dice of one set (summaries + per-image Dice)."""
    seg = frangi_masks(images, fovs) if segmented is None else segmented
    pair = pairing_dice(images, masks, fovs, seg)
    return {
        "vessel_density": _summary(vessel_density(masks, fovs)),
        "vessel_width": _summary(vessel_width(masks, fovs)),
        "segmented_width": _summary(vessel_width(np.asarray(seg, dtype=bool), fovs)),
        "rms_contrast": _summary(rms_contrast(images, fovs)),
        "vessel_contrast": _summary(vessel_contrast(images, masks, fovs)),
        "pairing_dice": _summary(pair),
        "pairing_dice_per_image": [float(x) for x in pair],
    }


@dataclass
class GeneratedVsReal:
    """Arrays behind a report, for figures."""

    gen_images: np.ndarray
    gen_masks: np.ndarray
    gen_fov: np.ndarray
    real_images: np.ndarray
    real_masks: np.ndarray
    real_fovs: np.ndarray


def quality_report(checkpoint: Any, real: Any, *, n: int | None = None, seed: int = 0,
                   device: str = "cpu", return_arrays: bool = False,
                   segment: Any = None, segmenter_name: str | None = None,
                   ) -> dict[str, Any] | tuple[dict[str, Any], GeneratedVsReal]:
    """Compare a generator (path or :class:`GeneratorCheckpoint`) with real pairs.

    ``real`` is a :class:`napari_retsam.gan.data.PreparedPairs` at the
    generator's size, with masks (:func:`real_reference`). ``n`` generated samples (default: as many as
    real images). A conditional generator is fed the real masks (cycled), with
    their FOVs for a patch generator. ``segment(images, fovs) -> masks`` is the
    segmenter of the pairing Dice (default: Frangi). Returns a JSON-safe dict
    (see the module docstring for every figure).
    """
    from napari_retsam.gan.checkpoint import GeneratorCheckpoint, load_generator
    from napari_retsam.gan.sample import check_count, generate

    ckpt = checkpoint if isinstance(checkpoint, GeneratorCheckpoint) else load_generator(checkpoint)
    if real.masks is None:
        raise RetsamInputError("the quality report needs a real dataset with vessel masks")
    if real.size != ckpt.size:
        raise RetsamInputError(f"real pairs are {real.size} px but the generator is {ckpt.size} px")
    n = check_count(len(real) if n is None else n)
    masks_in = fovs_in = None
    if ckpt.mode == "conditional":
        order = [i % len(real) for i in range(n)]
        masks_in = real.masks[order]
        fovs_in = real.fovs[order] if ckpt.config.unit == "patch" else None
    gen = generate(ckpt, n, seed, masks=masks_in, fovs=fovs_in, device=device)
    gen_fovs = gen.fov
    if segment is None:
        native = ckpt.config.unit == "patch"

        def segment(images: np.ndarray, fovs: np.ndarray) -> np.ndarray:
            return frangi_masks(images, fovs, native=native)

        segmenter_name = "Frangi baseline"

    real_seg = np.asarray(segment(real.images, real.fovs), dtype=bool)
    real_stats = set_statistics(real.images, real.masks, real.fovs, real_seg)
    shuffled = np.roll(np.arange(len(real)), -1)
    real_shuffled = pairing_dice(real.images, real.masks[shuffled], real.fovs & real.fovs[shuffled], real_seg)
    gen_stats = set_statistics(gen.images, gen.masks, gen_fovs, np.asarray(segment(gen.images, gen_fovs), dtype=bool))

    h_real = colour_histograms(real.images, real.fovs)
    h_gen = colour_histograms(gen.images, gen_fovs)
    half = len(real) // 2
    ref = None
    if half >= 1:
        ref = histogram_distance(colour_histograms(real.images[:half], real.fovs[:half]),
                                 colour_histograms(real.images[half:], real.fovs[half:]))
    report = {
        "generator": {"mode": ckpt.mode, "unit": ckpt.config.unit, "size": ckpt.size,
                      "iteration": ckpt.iteration, "masks_trained": gen.masks_trained, "dataset": ckpt.dataset},
        "segmenter": segmenter_name or "caller's segmenter",
        "n_generated": n,
        "n_real": len(real),
        "seed": int(seed),
        "colour_histogram_distance": {"generated_vs_real": histogram_distance(h_gen, h_real),
                                      "real_half_vs_half": ref, "bins": BINS},
        "generated": gen_stats,
        "real": real_stats,
        "real_shuffled_pairing_dice": _summary(real_shuffled),
        "colour_histograms": {"generated": h_gen.tolist(), "real": h_real.tolist()},
    }
    if not gen.masks_trained:
        report["warning"] = "generator trained without vessel masks: its masks are untrained"
    if return_arrays:
        return report, GeneratedVsReal(gen.images, gen.masks, gen.fov, real.images, real.masks, real.fovs)
    return report


def report_summary_lines(report: dict[str, Any]) -> list[str]:
    """Human-readable lines of a report (CLI and widget)."""
    g, r = report["generated"], report["real"]
    chd = report["colour_histogram_distance"]
    ref = chd["real_half_vs_half"]

    def ms(d: dict[str, Any], fmt: str = ".3f") -> str:
        if d["mean"] is None:
            return "n/a"
        return f"{d['mean']:{fmt}} ± {d['std']:{fmt}}"

    lines = [
        f"generator: {report['generator']['mode']}, "
        f"{'patches' if report['generator'].get('unit') == 'patch' else 'images'} of "
        f"{report['generator']['size']} px, "
        f"iteration {report['generator']['iteration']}; {report['n_generated']} generated vs {report['n_real']} real",
        f"colour histogram distance (TV, 0 = identical): generated vs real {chd['generated_vs_real']:.3f}"
        + (f" (real half vs half {ref:.3f})" if ref is not None else ""),
        f"vessel density: generated {ms(g['vessel_density'])}, real {ms(r['vessel_density'])}",
        f"vessel width (px, masks): generated {ms(g['vessel_width'], '.2f')}, real {ms(r['vessel_width'], '.2f')}",
        f"vessel width (px, segmented from the images): generated {ms(g['segmented_width'], '.2f')}, "
        f"real {ms(r['segmented_width'], '.2f')}",
        f"RMS contrast (green): generated {ms(g['rms_contrast'])}, real {ms(r['rms_contrast'])}",
        f"vessel contrast (green): generated {ms(g['vessel_contrast'])}, real {ms(r['vessel_contrast'])}",
        f"pairing Dice (mask vs {report.get('segmenter', 'Frangi baseline')} of image): generated {ms(g['pairing_dice'])}, real {ms(r['pairing_dice'])}, "
        f"real shuffled {ms(report['real_shuffled_pairing_dice'])}",
    ]
    if "warning" in report:
        lines.append(f"warning: {report['warning']}")
    return lines


def report_figure(report: dict[str, Any], figure: Any | None = None) -> Any:
    """Draw the report into a matplotlib Figure (created when ``figure`` is None):
    colour histograms (real solid, generated dashed) and bar charts of the statistics."""
    if figure is None:
        from matplotlib.figure import Figure

        figure = Figure(figsize=(9, 3.2), dpi=80)
    figure.clear()
    ax_h, ax_s, ax_p = figure.subplots(1, 3)
    centres = (np.arange(BINS) + 0.5) * 256 / BINS
    for c, colour in enumerate(("tab:red", "tab:green", "tab:blue")):
        ax_h.plot(centres, report["colour_histograms"]["real"][c], color=colour, lw=1.5)
        ax_h.plot(centres, report["colour_histograms"]["generated"][c], color=colour, lw=1.5, ls="--")
    ax_h.set_title(f"colour histograms (TV {report['colour_histogram_distance']['generated_vs_real']:.3f})",
                   fontsize=9)
    ax_h.set_xlabel("value (solid real, dashed generated)", fontsize=8)
    names = ["vessel_density", "rms_contrast", "vessel_contrast"]
    x = np.arange(len(names))
    for off, key, colour in ((-0.2, "real", "tab:gray"), (0.2, "generated", "tab:orange")):
        ax_s.bar(x + off, [report[key][k]["mean"] or 0.0 for k in names], 0.4,
                 yerr=[report[key][k]["std"] or 0.0 for k in names], color=colour, label=key)
    ax_s.set_xticks(x, ["density", "RMS contr.", "vessel contr."], fontsize=8)
    ax_s.legend(fontsize=8)
    ax_s.set_title("image statistics", fontsize=9)
    vals = [report["real"]["pairing_dice"], report["real_shuffled_pairing_dice"], report["generated"]["pairing_dice"]]
    ax_p.bar([0, 1, 2], [v["mean"] for v in vals], yerr=[v["std"] for v in vals],
             color=["tab:gray", "lightgray", "tab:orange"])
    ax_p.set_xticks([0, 1, 2], ["real", "real shuffled", "generated"], fontsize=8)
    ax_p.set_ylim(0, 1)
    ax_p.set_title("pairing Dice (mask vs Frangi)", fontsize=9)
    figure.tight_layout()
    return figure
