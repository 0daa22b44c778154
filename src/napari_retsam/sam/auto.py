"""SAM (auto): segment-anything's automatic mask generator turned into a vessel map.

The comparison row "SAM (auto)" runs SAM with no prompts: a regular grid of
``points_per_side²`` point prompts, each mask kept when its predicted IoU and
stability score pass the thresholds, then non-maximum suppression
(``segment_anything.SamAutomaticMaskGenerator``, plain SAM: the fusion block is
not used). segment-anything's predictor normalises with ``Sam.pixel_mean`` /
``pixel_std``; for a model with LiteMedSAM's min–max normalisation these are set,
for this call only, to the image's minimum and range (the same [0, 1] scaling). SAM's automatic masks are objects, so on a fundus photograph the
largest ones are the whole field of view or the optic disc; masks larger than
``max_area_fraction`` of the image are therefore dropped, and the vessel
probability of a pixel is the largest predicted IoU (clipped to [0, 1]) of the
kept masks that cover it (0 where none does); ``mask = prob ≥ 0.5``.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from napari_retsam.errors import RetsamInputError
from napari_retsam.sam.preprocess import to_uint8_rgb
from napari_retsam.sam.progress import ProgressFn, StopFn, check_stop, report
from napari_retsam.sam.segmenter import SegmentResult

__all__ = ["auto_segment"]


def auto_segment(
    model: Any,
    image: np.ndarray,
    *,
    points_per_side: int = 32,
    pred_iou_thresh: float = 0.88,
    stability_score_thresh: float = 0.95,
    max_area_fraction: float = 0.05,
    points_per_batch: int = 64,
    progress: ProgressFn | None = None,
    should_stop: StopFn | None = None,
) -> SegmentResult:
    """Prompt-free SAM segmentation of ``image`` as a :class:`SegmentResult` (one class)."""
    import time

    import torch
    from segment_anything import SamAutomaticMaskGenerator

    if points_per_side < 1:
        raise RetsamInputError(f"points per side must be at least 1, got {points_per_side}")
    if not 0.0 < max_area_fraction <= 1.0:
        raise RetsamInputError(f"max area fraction must be in (0, 1], got {max_area_fraction}")
    start = time.perf_counter()
    rgb = to_uint8_rgb(image)
    height, width = rgb.shape[:2]
    check_stop(should_stop)
    report(progress, 0, 2, "SAM automatic masks")
    generator = SamAutomaticMaskGenerator(
        model.sam,
        points_per_side=int(points_per_side),
        points_per_batch=int(points_per_batch),
        pred_iou_thresh=float(pred_iou_thresh),
        stability_score_thresh=float(stability_score_thresh),
        output_mode="binary_mask",
    )
    sam = model.sam
    saved = (sam.pixel_mean.clone(), sam.pixel_std.clone())
    try:
        if getattr(getattr(model, "config", None), "normalize", "imagenet") == "minmax":
            lo, hi = float(rgb.min()), float(rgb.max())
            sam.pixel_mean.fill_(lo)
            sam.pixel_std.fill_(max(hi - lo, 1e-8))
        with torch.no_grad():
            records = generator.generate(rgb)
    finally:
        sam.pixel_mean.copy_(saved[0])
        sam.pixel_std.copy_(saved[1])
    check_stop(should_stop)
    prob = np.zeros((height, width), dtype=np.float32)
    limit = max_area_fraction * height * width
    kept = 0
    for record in records:
        if record["area"] > limit:
            continue
        score = np.float32(min(max(float(record["predicted_iou"]), 0.0), 1.0))
        np.maximum(prob, np.where(record["segmentation"], score, np.float32(0)), out=prob)
        kept += 1
    report(progress, 2, 2, "done")
    total = time.perf_counter() - start
    return SegmentResult(
        probs=prob[None],
        boxes=np.zeros((0, 4)),
        tiles=[(0, 0, height, width)],
        n_embedded=1,
        timings={"total_s": total, "masks": float(len(records)), "kept": float(kept)},
    )
