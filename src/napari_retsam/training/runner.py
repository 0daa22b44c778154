"""One call from options to a fine-tuned model: what the CLI and the widget share.

:func:`collect_items` gathers the training and validation items from a dataset,
synthetic folders (mixed in at a ratio) and array/layer pairs;
:func:`load_base_model` loads the base SAM (official file, project checkpoint,
or the cached download) through the SAM engine's loader; :func:`finetune` joins
a torchrun process group when one is described in the environment and runs
:func:`napari_retsam.training.loop.train`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from napari_retsam.errors import RetsamInputError
from napari_retsam.training.config import FinetuneConfig
from napari_retsam.training.data import (
    TrainItem,
    items_from_arrays,
    items_from_dataset,
    items_from_folder,
    mix_synthetic,
    split_train_val,
)

__all__ = ["DataOptions", "collect_items", "load_base_model", "finetune"]


@dataclass
class DataOptions:
    """Where the training data come from (any combination; at least one source).

    ``dataset``/``root``/``split``/``limit``/``annotator``: a dataset reader's
    images; ``val_split``: validate on that split of the same dataset instead of
    holding out ``val_fraction`` of the training images; ``synthetic``: generic
    folders (GAN exports) mixed in so they make up ``synthetic_ratio`` of the
    training pixels (a 256-px patch weighs one tile, a whole fundus several); ``pairs``: (image, mask) arrays, e.g. viewer layers or stacks.
    """

    dataset: str | None = None
    root: str | Path | None = None
    split: str = "train"
    limit: int = 0
    annotator: int = 1
    val_split: str | None = None
    synthetic: list[str | Path] = field(default_factory=list)
    synthetic_ratio: float = 0.5
    pairs: list[tuple[np.ndarray, np.ndarray]] = field(default_factory=list)


def _check_disjoint_splits(options: DataOptions) -> None:
    """Refuse a ``val_split`` that shares images (same id or same image file) with the
    training images (``split``, its first ``limit`` images when limited)."""
    from napari_retsam.data import open_dataset

    if options.limit < 0:
        raise RetsamInputError(f"limit must be >= 0, got {options.limit}")
    train = open_dataset(options.dataset, options.root, split=options.split, annotator=options.annotator)
    val = open_dataset(options.dataset, options.root, split=options.val_split, annotator=options.annotator)
    n = len(train) if options.limit == 0 else min(options.limit, len(train))
    train_entries = list(train.entries)[:n]

    def file_id(path: Any) -> str:
        return str(Path(path).resolve())

    train_ids = {e.id for e in train_entries}
    train_files = {file_id(e.image) for e in train_entries}
    shared = [e.id for e in val.entries if e.id in train_ids or file_id(e.image) in train_files]
    if shared:
        shown = ", ".join(shared[:3]) + (", ..." if len(shared) > 3 else "")
        raise RetsamInputError(
            f"validation split {options.val_split!r} shares {len(shared)} of its {len(val.entries)} images with the "
            f"training split {options.split!r} ({shown}): validation must use held-out images; choose disjoint "
            "splits (e.g. --split train --val-split test) or leave --val-split out to hold out --val-fraction"
        )


def collect_items(options: DataOptions, config: FinetuneConfig) -> tuple[list[TrainItem], list[TrainItem]]:
    """Training and validation items for ``options`` (see :class:`DataOptions`).

    With ``val_split``, the validation images must be disjoint from the training
    images (no shared id or image file): checked before any image is read."""
    real: list[TrainItem] = []
    val_items: list[TrainItem] | None = None
    if options.dataset:
        if not options.root:
            raise RetsamInputError("--dataset needs --root (the dataset folder)")
        if options.val_split:
            _check_disjoint_splits(options)  # file names only, before any image is decoded
        real += items_from_dataset(options.dataset, options.root, options.split, options.limit, options.annotator)
        if options.val_split:
            val_items = items_from_dataset(options.dataset, options.root, options.val_split, 0, options.annotator)
    elif options.root:
        raise RetsamInputError("--root given without --dataset (drive, stare, chase or folder)")
    for k, (image, mask) in enumerate(options.pairs):
        real += items_from_arrays(image, mask, prefix=f"layer{k}")
    synthetic: list[TrainItem] = []
    for folder in options.synthetic:
        synthetic += items_from_folder(folder)
    if not real and not synthetic:
        raise RetsamInputError("no training data: give a dataset (--dataset/--root), --synthetic folders or layer pairs")
    items = mix_synthetic(real, synthetic, options.synthetic_ratio if real else 0.0, seed=config.seed)
    return split_train_val(items, config.val_fraction, seed=config.seed, val_items=val_items)


def load_base_model(checkpoint: str | Path | None, model_type: str | None, device: Any = "cpu"):  # -> RetsamSam
    """The base model through :func:`napari_retsam.sam.load_sam` (file, project checkpoint or cached official)."""
    from napari_retsam.sam import load_sam

    return load_sam(checkpoint if checkpoint else None, model_type=model_type, device=device)


def finetune(
    options: DataOptions,
    config: FinetuneConfig,
    out_dir: str | Path,
    *,
    resume: str | Path | None = None,
    model: Any = None,
    progress: Any = None,
    on_event: Any = None,
    should_stop: Any = None,
    overwrite: bool = True,
):  # -> TrainResult
    """Collect the data, load the base model (unless ``model`` is given) and train.

    Under torchrun (``WORLD_SIZE > 1``) this joins the process group, puts each
    rank on its own device and leaves the group at the end.

    The run owns ``out_dir`` while it runs (:func:`napari_retsam.run_lock.lock_run_folder`;
    rank 0 only): a second run there is refused with one line. A folder holding an
    earlier run (``last.pt``, ``best.pt``, ``metrics.jsonl``) is refused unless
    ``resume`` is a checkpoint in it or ``overwrite`` (the CLI's ``--overwrite``;
    True by default for library callers), in which case the earlier files are
    removed before training so none of them is left beside the new run's.
    """
    import contextlib

    from napari_retsam.run_lock import check_fresh_run_folder, clear_previous_run, lock_run_folder, resumes_in
    from napari_retsam.training.distributed import cleanup, init_from_env, rank_device
    from napari_retsam.training.loop import BEST, LAST, LOG, train

    ctx = init_from_env(config.device)
    completed = False
    try:
        with lock_run_folder(out_dir, "retsam finetune") if ctx.is_main else contextlib.nullcontext():
            earlier = []
            if ctx.is_main:
                earlier = check_fresh_run_folder(out_dir, (LAST, BEST, LOG), overwrite=overwrite, resume=resume,
                                                 what="fine-tuning run")
            if ctx.is_distributed:
                config.device = rank_device(config.device, ctx)
            train_items, val_items = collect_items(options, config)
            if model is None:
                model = load_base_model(config.checkpoint, config.model_type or None, device=config.device)
            config.model_type = model.model_type
            if ctx.is_main and earlier and not resumes_in(resume, out_dir):
                clear_previous_run(earlier, keep=[p for p in (resume, config.checkpoint) if p])
            result = train(model, train_items, val_items, config, out_dir, resume=resume, progress=progress,
                           on_event=on_event, should_stop=should_stop, ctx=ctx)
        completed = True
        return result
    finally:
        cleanup(ctx, completed=completed)


def layer_pairs(images: Sequence[np.ndarray], labels: Sequence[np.ndarray]) -> list[tuple[np.ndarray, np.ndarray]]:
    """Pair image and Labels layer data (single images or stacks) for :class:`DataOptions`."""
    if len(images) != len(labels):
        raise RetsamInputError(f"{len(images)} image layers but {len(labels)} Labels layers: pick them in pairs")
    return [(np.asarray(i), np.asarray(m)) for i, m in zip(images, labels)]
