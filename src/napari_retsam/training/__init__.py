"""Decoder-only fine-tuning of SAM for retinal vessels with the BSD loss.

* :mod:`~napari_retsam.training.losses` — :func:`bsd_loss` (batch-size-based dynamic Dice)
* :mod:`~napari_retsam.training.config` — :class:`FinetuneConfig` (JSON-serialisable)
* :mod:`~napari_retsam.training.data` — training items, prompts, augmentation, tiling
* :mod:`~napari_retsam.training.loop` — :func:`train` (checkpoints, resume, validation)
* :mod:`~napari_retsam.training.distributed` — torchrun / DDP helpers

Names are resolved lazily, so ``import napari_retsam.training`` itself is cheap;
the sub-modules import torch.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "bsd_loss": "napari_retsam.training.losses",
    "bsd_terms": "napari_retsam.training.losses",
    "FinetuneConfig": "napari_retsam.training.config",
    "TrainItem": "napari_retsam.training.data",
    "train": "napari_retsam.training.loop",
    "TrainResult": "napari_retsam.training.loop",
    "load_finetune_checkpoint": "napari_retsam.training.checkpoint",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'napari_retsam.training' has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)
