"""Decoder-only fine-tuning of SAM for retinal vessels with the BSD loss.

* :mod:`~napari_retsam.training.losses` — :func:`bsd_loss` (batch-size-based dynamic Dice)
* :mod:`~napari_retsam.training.config` — :class:`FinetuneConfig` (JSON-serialisable)
* :mod:`~napari_retsam.training.data` — training items, prompts, augmentation, tiling
* :mod:`~napari_retsam.training.loop` — :func:`train` / :class:`FinetuneTrainer` (the loop,
  one method per step; validation)
* :mod:`~napari_retsam.training.checkpoint` — ``last.pt``/``best.pt`` contents, resume checks
* :mod:`~napari_retsam.training.units` / :mod:`~napari_retsam.training.embedding_store` —
  tiles, targets and cached embeddings
* :mod:`~napari_retsam.training.distributed` — torchrun / DDP helpers
* :mod:`~napari_retsam.training.runner` — :func:`finetune` (options -> run; CLI and widget)

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
    "FinetuneTrainer": "napari_retsam.training.loop",
    "TrainResult": "napari_retsam.training.loop",
    "TrainingDiverged": "napari_retsam.training.loop",
    "DataOptions": "napari_retsam.training.runner",
    "finetune": "napari_retsam.training.runner",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'napari_retsam.training' has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)
