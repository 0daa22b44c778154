"""SAM engine: models, checkpoints, Feature Fusion Block, batched decoding, tiling.

Importing this package is cheap: torch and segment-anything load only when one of
the names below is first used (``napari_retsam.sam.load_sam`` etc.).

Public names::

    build_sam, load_sam, RetsamSam, SamConfig, MODEL_CONFIGS   (models)
    FeatureFusionBlock                                          (fusion)
    decode_prompts                                              (decoder)
    EmbeddingCache                                              (embeddings)
    Segmenter, SegmentResult, Cancelled                         (segmenter)
    auto_segment                                                (auto)
    select_device                                               (device)
"""

from __future__ import annotations

import importlib
from typing import Any

_LAZY = {
    "build_sam": "models",
    "load_sam": "checkpoints",
    "RetsamSam": "models",
    "SamConfig": "models",
    "MODEL_CONFIGS": "models",
    "MODEL_TYPES": "models",
    "FeatureFusionBlock": "fusion",
    "decode_prompts": "decoder",
    "EmbeddingCache": "embeddings",
    "Segmenter": "segmenter",
    "SegmentResult": "segmenter",
    "Cancelled": "segmenter",
    "auto_segment": "auto",
    "select_device": "device",
}

__all__ = sorted(_LAZY)


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{module}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return __all__
