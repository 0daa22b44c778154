"""SAM (auto): segment-anything's automatic mask generator turned into a vessel map.

The comparison row "SAM (auto)" runs SAM with no prompts: a regular grid of
``points_per_side²`` point prompts, each mask kept when its predicted IoU and
stability score pass the thresholds, then non-maximum suppression
(``segment_anything.SamAutomaticMaskGenerator``, plain SAM: the fusion block is
not used).

The image embedding is the project's own whole-image embedding (the encoder
input of :meth:`RetsamSam.prepare <napari_retsam.sam.models.RetsamSam.prepare>`,
the model's normalisation and encoder precision), taken from an
:class:`~napari_retsam.sam.embeddings.EmbeddingCache` when one is given: it is the
same entry the box-prompted :class:`~napari_retsam.sam.segmenter.Segmenter` uses in
whole-image mode (tile 0), so SAM (auto) after a whole-image segmentation, or a
second SAM (auto) on the same image, runs no encoder pass. The generator's
predictor is handed that embedding instead of computing its own (segment-anything's
``set_image`` would run the encoder again). Cancel is checked inside the encoder
pass (per block) and before each batch of ``points_per_batch`` point prompts.

SAM's automatic masks are objects, so on a fundus photograph the largest ones are
the whole field of view or the optic disc; masks larger than ``max_area_fraction``
of the image are therefore dropped, and the vessel probability of a pixel is the
largest predicted IoU (clipped to [0, 1]) of the kept masks that cover it (0 where
none does); ``mask = prob ≥ 0.5``.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from napari_retsam.errors import RetsamInputError
from napari_retsam.sam.preprocess import to_uint8_rgb
from napari_retsam.progress import ProgressFn, StopFn, check_stop, report
from napari_retsam.sam.segmenter import SegmentResult

__all__ = ["auto_segment"]


def _cached_predictor(model: Any, embedding: Any, original_size: tuple[int, int], input_size: tuple[int, int],
                      on_batch: Any) -> Any:
    """A ``SamPredictor`` of ``model.sam`` whose ``set_image`` installs ``embedding`` (1 image,
    C×h×w) instead of running the encoder; ``on_batch()`` is called before each prompt batch."""
    from segment_anything import SamPredictor

    class _Predictor(SamPredictor):
        def set_image(self, image: np.ndarray, image_format: str = "RGB") -> None:
            if tuple(image.shape[:2]) != original_size:
                raise RetsamInputError(  # only whole-image crops (crop_n_layers=0) are embedded here
                    f"the automatic mask generator asked for a {image.shape[1]}×{image.shape[0]} crop; only the "
                    f"whole {original_size[1]}×{original_size[0]} image is embedded")
            self.reset_image()
            self.original_size = original_size
            self.input_size = input_size
            self.features = embedding[None].to(self.device)
            self.is_image_set = True

        def predict_torch(self, *args: Any, **kwargs: Any) -> Any:
            on_batch()
            return super().predict_torch(*args, **kwargs)

    return _Predictor(model.sam)


def auto_segment(
    model: Any,
    image: np.ndarray,
    *,
    points_per_side: int = 32,
    pred_iou_thresh: float = 0.88,
    stability_score_thresh: float = 0.95,
    max_area_fraction: float = 0.05,
    points_per_batch: int = 64,
    cache: Any = None,
    progress: ProgressFn | None = None,
    should_stop: StopFn | None = None,
) -> SegmentResult:
    """Prompt-free SAM segmentation of ``image`` as a :class:`SegmentResult` (one class).

    ``cache``: an :class:`~napari_retsam.sam.embeddings.EmbeddingCache` (e.g. a
    :class:`~napari_retsam.sam.segmenter.Segmenter`'s) to take the whole-image
    embedding from and store it in; ``n_embedded`` of the result is 0 when it was
    cached. Raises :class:`~napari_retsam.progress.Cancelled` when
    ``should_stop()`` turns True.
    """
    import time

    import torch
    from segment_anything import SamAutomaticMaskGenerator

    from napari_retsam.sam.embeddings import EmbeddingCache, embedding_signature, image_sha256

    if points_per_side < 1:
        raise RetsamInputError(f"points per side must be at least 1, got {points_per_side}")
    if not 0.0 < max_area_fraction <= 1.0:
        raise RetsamInputError(f"max area fraction must be in (0, 1], got {max_area_fraction}")
    start = time.perf_counter()
    rgb = to_uint8_rgb(image)
    height, width = rgb.shape[:2]
    cache = cache if cache is not None else EmbeddingCache()
    n_batches = -(-int(points_per_side) ** 2 // max(int(points_per_batch), 1))
    total = 1 + n_batches
    check_stop(should_stop)
    report(progress, 0, total, "embedding the image")

    def on_block(k: int, n: int) -> None:
        check_stop(should_stop)  # Cancel within one encoder block
        if k:
            report(progress, 0, total, f"embedding the image (block {k}/{n})")

    prepared = model.prepare(rgb)

    def compute() -> torch.Tensor:
        with torch.no_grad():
            return model.embed(prepared.tensor.unsqueeze(0).to(model.device), on_block=on_block)[0]

    misses_before = cache.misses
    signature = embedding_signature(model, image_sha256(rgb), (0, 0, height, width))
    embedding = cache.get_or_compute(signature, compute)
    n_embedded = cache.misses - misses_before
    batches = [0]

    def on_batch() -> None:
        check_stop(should_stop)
        report(progress, 1 + batches[0], total, f"SAM automatic masks: prompt batch {batches[0] + 1}/{n_batches}")
        batches[0] += 1

    generator = SamAutomaticMaskGenerator(
        model.sam,
        points_per_side=int(points_per_side),
        points_per_batch=int(points_per_batch),
        pred_iou_thresh=float(pred_iou_thresh),
        stability_score_thresh=float(stability_score_thresh),
        output_mode="binary_mask",
    )
    generator.predictor = _cached_predictor(model, embedding, (height, width), tuple(prepared.input_size), on_batch)
    with torch.no_grad():
        records = generator.generate(rgb)
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
    report(progress, total, total, "done")
    elapsed = time.perf_counter() - start
    return SegmentResult(
        probs=prob[None],
        boxes=np.zeros((0, 4)),
        tiles=[(0, 0, height, width)],
        n_embedded=n_embedded,
        timings={"total_s": elapsed, "masks": float(len(records)), "kept": float(kept)},
    )
