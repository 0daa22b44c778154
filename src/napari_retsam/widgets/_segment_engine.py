"""The segmentation widget's engine: model loading (cached) and the per-slice job.

Runs in napari worker threads; never touches layers or Qt. The loaded model is
kept between runs as long as model type, checkpoint, fine-tuned checkpoint and
device stay the same, and one embedding cache (signatures include the encoder's
checkpoint hash) is shared by every model, so re-running or live-prompting an
image that was embedded before only runs the decoder. SAM (auto) takes its
whole-image embedding from the same cache (the entry of whole-image mode, tile 0).
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from napari_retsam._torch_runtime import prepare_torch_runtime
from napari_retsam.errors import RetsamInputError
from napari_retsam.progress import ProgressFn, StopFn, check_stop

__all__ = ["EngineKey", "SegmentEngine", "SliceResult"]


@dataclass(frozen=True)
class EngineKey:
    """What identifies a loaded model."""

    model_type: str
    checkpoint: str
    finetuned: str
    device: str


@dataclass
class SliceResult:
    """One slice's output: ``prob`` H×W float32, ``labels`` H×W uint8 (0 background)."""

    prob: np.ndarray
    labels: np.ndarray
    n_boxes: int
    n_embedded: int


class SegmentEngine:
    """Holds the current model/Segmenter and the shared embedding cache (thread-safe)."""

    def __init__(self, disk_dir: str | Path | None = None) -> None:
        from napari_retsam.sam.embeddings import EmbeddingCache

        self._lock = threading.Lock()
        self._key: EngineKey | None = None
        self._segmenter: Any = None
        self.cache = EmbeddingCache(disk_dir=disk_dir)

    def set_disk_dir(self, disk_dir: str | Path | None) -> None:
        """Turn the on-disk embedding cache on (a folder) or off (None)."""
        self.cache.disk_dir = Path(disk_dir) if disk_dir else None

    def segmenter(self, key: EngineKey, progress: ProgressFn | None = None, should_stop: StopFn | None = None) -> Any:
        """The Segmenter for ``key``, loading the model when the key changed."""
        prepare_torch_runtime()  # before segment-anything/torchvision can import triton (see _torch_runtime)
        from napari_retsam.sam.checkpoints import load_sam
        from napari_retsam.sam.segmenter import Segmenter

        with self._lock:
            if self._key != key or self._segmenter is None:
                for name, value in (("checkpoint", key.checkpoint), ("fine-tuned checkpoint", key.finetuned)):
                    if value and not Path(value).expanduser().is_file():
                        raise RetsamInputError(f"{name} file {value} does not exist")
                if key.model_type == "tiny" and not (key.checkpoint or key.finetuned):
                    raise RetsamInputError("the tiny model has no official download; choose a checkpoint file")
                if progress is not None:
                    progress(0, 1, f"loading {key.model_type} model")
                model = load_sam(
                    key.checkpoint or None,
                    model_type=key.model_type,
                    device=key.device,
                    finetuned=key.finetuned or None,
                    progress=progress,
                    should_stop=should_stop,
                )
                self._segmenter = Segmenter(model, cache=self.cache)
                self._key = key
            return self._segmenter

    @property
    def model(self) -> Any:
        """The loaded RetsamSam, or None before the first run."""
        return None if self._segmenter is None else self._segmenter.model

    def run(
        self,
        key: EngineKey,
        data: Any,
        is_stack: bool,
        boxes: dict[int | None, list[list[float]]],
        tile: int | None,
        overlap: int,
        *,
        auto: bool = False,
        progress: ProgressFn | None = None,
        should_stop: StopFn | None = None,
    ) -> dict[int | None, SliceResult]:
        """Segment every slice that has boxes (all slices for 2-D boxes / auto mode)."""
        prepare_torch_runtime()
        segmenter = self.segmenter(key, progress, should_stop)
        if is_stack:
            n = int(np.shape(data)[0])
            slices = list(range(n)) if (auto or None in boxes) else sorted(k for k in boxes if k is not None)
        else:
            slices = [None]
        results: dict[int | None, SliceResult] = {}
        for i, s in enumerate(slices):
            check_stop(should_stop)
            image = np.asarray(data if s is None else data[s])
            prefix = "" if s is None else f"slice {s} ({i + 1}/{len(slices)}): "

            def inner(done: int, total: int, message: str, i: int = i, prefix: str = prefix) -> None:
                if progress is not None:
                    progress(i * max(total, 1) + done, len(slices) * max(total, 1), prefix + message)

            if auto:
                from napari_retsam.sam.auto import auto_segment

                result = auto_segment(segmenter.model, image, cache=segmenter.cache, progress=inner,
                                      should_stop=should_stop)
                n_boxes = 0
            else:
                slice_boxes = list(boxes.get(None, [])) + (list(boxes.get(s, [])) if s is not None else [])
                result = segmenter.segment(image, slice_boxes, tile=tile, overlap=overlap, progress=inner,
                                           should_stop=should_stop)
                n_boxes = len(slice_boxes)
            labels = result.mask.astype(np.uint8) if result.probs.shape[0] == 1 else result.labels
            results[s] = SliceResult(result.prob, labels, n_boxes, result.n_embedded)
        return results
