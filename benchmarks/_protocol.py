"""The short fine-tune-then-evaluate protocol shared by the DRIVE ablation scripts.

One row: the bundled LiteMedSAM, decoder-only fine-tuning for a fixed number of
steps from the same start, seed and data (``FinetuneConfig`` defaults apart from
``change``), then the whole test images segmented with their FOV box on the
same tile grid, pooled over FOV pixels at threshold 0.5. Training and test
embeddings go to one on-disk cache, so rows that share tiles embed them once.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any


def finetune_and_evaluate(change: dict[str, Any], train_items: list[Any], test: list[Any], cache_dir: Path,
                          run_dir: Path, steps: int) -> dict[str, Any]:
    """Fine-tune with ``FinetuneConfig(**change)`` for ``steps`` steps, then score on ``test``.

    Returns the pooled AUC/F1/Se/Sp and the seconds spent training (embedding
    included) and segmenting the test images.
    """
    from napari_retsam.data import mask_bounding_box
    from napari_retsam.metrics import evaluate_set
    from napari_retsam.sam import EmbeddingCache, Segmenter, load_sam
    from napari_retsam.training.config import FinetuneConfig
    from napari_retsam.training.loop import train

    start = time.perf_counter()
    model = load_sam(model_type="lite_medsam", device="cpu")
    settings = {"epochs": 1000, "max_steps": steps, "n_views": 1, "val_fraction": 0.0, "seed": 0, **change}
    config = FinetuneConfig(device="cpu", cache_dir=str(cache_dir), **settings)
    train(model, train_items, [], config, run_dir)
    train_seconds = time.perf_counter() - start
    model.eval()
    segmenter = Segmenter(model, cache=EmbeddingCache(disk_dir=cache_dir))
    start = time.perf_counter()
    probs = [segmenter.segment(s.image, mask_bounding_box(s.fov)[None], tile=config.tile,
                               overlap=config.overlap).prob for s in test]
    test_seconds = time.perf_counter() - start
    pooled = evaluate_set(probs, [s.gold for s in test], [s.fov for s in test]).pooled
    return {"auc": pooled.auc, "f1": pooled.f1, "se": pooled.se, "sp": pooled.sp,
            "train_seconds": round(train_seconds, 1), "test_seconds": round(test_seconds, 1)}
