"""The fine-tuning loop: decoder-only PEFT of SAM with the BSD loss.

:func:`train` runs epochs over the training units (one augmented view per item
and epoch, every tile of it), with

* frozen image and prompt encoders (``requires_grad=False``, eval mode) and a
  trained Feature Fusion Block + mask decoder (``full_finetune``: everything);
  cached embeddings, so a step runs only fusion + decoder;
* AdamW; learning rate ``lr_at(step)``: linear warm-up then cosine decay
  (:func:`lr_at`); gradient accumulation; AMP (float16 autocast + GradScaler)
  on CUDA only; fixed seeds and per-sample randomness keyed by identity;
* validation every epoch on held-out items with the metrics engine (AUC, Se,
  Sp, PA, F1; FOV-masked, pooled over the validation images);
* ``last.pt`` (every epoch, on stop) and ``best.pt`` (best validation AUC, or
  F1 when AUC is undefined; with no validation items, lowest epoch loss),
  written atomically; ``metrics.jsonl`` beside them (one JSON object per step
  and per validation, rewritten atomically with each checkpoint so the log and
  ``last.pt`` always agree);
* exact resume: a checkpoint stores the weights, optimizer, AMP scaler, torch
  RNG state, the position (epoch, micro-batch) and the log; N steps straight ==
  k steps + stop + resume + N − k steps;
* ``should_stop()`` is polled after every micro-batch: the run stops at the
  last completed optimizer step (within one step), writes ``last.pt`` and
  raises :class:`~napari_retsam.progress.Cancelled` whose ``partial`` is the
  :class:`TrainResult` with ``status="stopped"`` (the package's one way to stop);
* a non-finite loss raises :class:`TrainingDiverged` naming the step, without
  writing the bad weights (the previous ``last.pt`` stays the last good one).

Checkpoint = the SAM engine's project checkpoint dict
(:func:`napari_retsam.sam.checkpoints.project_checkpoint_dict`: loads with
``load_sam``) plus a ``"training"`` entry (config, data signature, metrics,
optimizer/scaler/RNG state, position, history).
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from napari_retsam.errors import RetsamInputError
from napari_retsam.io_utils import (
    atomic_save_torch,
    atomic_write_bytes,
    ensure_writable_dir,
)
from napari_retsam.progress import STOPPED, Cancelled, ProgressFn, StopFn
from napari_retsam.sam.boxes import box_in_tile
from napari_retsam.training.config import FinetuneConfig
from napari_retsam.training.data import TrainItem, data_signature, jitter_box, rng_for
from napari_retsam.training.distributed import (
    DistContext,
    all_reduce_flag,
    all_reduce_sum,
    barrier,
    broadcast_object,
    epoch_indices,
)
from napari_retsam.training.embedding_store import EmbeddingStore
from napari_retsam.training.losses import bsd_terms, combine_bsd_terms
from napari_retsam.training.units import Unit, UnitSet, build_units, view_box

__all__ = ["TrainResult", "TrainingDiverged", "train", "lr_at", "LAST", "BEST", "LOG", "TRAINING_KEY"]

LAST = "last.pt"
BEST = "best.pt"
LOG = "metrics.jsonl"
TRAINING_KEY = "training"

EventFn = Callable[[dict[str, Any]], None]


class TrainingDiverged(RetsamInputError):
    """The loss became NaN/inf; the message names the step. ``last.pt`` is the last good state."""


@dataclass
class TrainResult:
    """Outcome of :func:`train`.

    ``steps_per_second`` = optimizer steps of this call / seconds spent inside
    them (batch assembly, forward, backward, update; not the one-off embedding,
    validation or checkpoint writing); ``wall_seconds`` = the whole call.
    """

    status: str  # "finished" | "max_steps" | "stopped" (STOPPED: only as Cancelled.partial)
    step: int
    epoch: int
    out_dir: Path
    best_score: float | None
    metrics: dict[str, Any]
    history: list[dict[str, Any]] = field(default_factory=list)
    message: str = ""
    steps_per_second: float = 0.0
    wall_seconds: float = 0.0

    @property
    def last_path(self) -> Path:
        return self.out_dir / LAST

    @property
    def best_path(self) -> Path:
        return self.out_dir / BEST

    @property
    def log_path(self) -> Path:
        return self.out_dir / LOG


def lr_at(step: int, total: int, config: FinetuneConfig) -> float:
    """Learning rate of optimizer step ``step`` (0-based) out of ``total``.

    Warm-up ``lr·(step+1)/W`` for ``step < W`` (W = ``warmup_steps``), then
    ``lr·(m + (1−m)·½(1 + cos(π·(step−W)/max(1, total−W))))`` with m = ``min_lr_ratio``.
    """
    warm = config.warmup_steps
    if step < warm:
        return config.lr * (step + 1) / warm
    progress = min(1.0, (step - warm) / max(1, total - warm))
    m = config.min_lr_ratio
    return config.lr * (m + (1 - m) * 0.5 * (1 + math.cos(math.pi * progress)))


# ------------------------------------------------------------------------------ model set-up


def _set_trainable(model: torch.nn.Module, full: bool) -> list[torch.nn.Parameter]:
    """Freeze the encoders (eval mode) unless ``full``; return the trained parameters."""
    model.train()
    for p in model.parameters():
        p.requires_grad_(full)
    if not full:
        model.sam.image_encoder.eval()
        model.sam.prompt_encoder.eval()
        for module in (model.fusion, model.sam.mask_decoder):
            for p in module.parameters():
                p.requires_grad_(True)
    return [p for p in model.parameters() if p.requires_grad]


def _seed_identity_fusion(model: torch.nn.Module, seed: int) -> None:
    """Re-draw the first convolution of a still-identity fusion block from ``seed``.

    An untrained Feature Fusion Block has ``conv2 == 0``, so its ``conv1`` weights do
    not affect the model's output yet, but they decide the first updates. The
    loader draws them from torch's global RNG; re-drawing them from the run's seed
    makes two runs of the same config (or the ranks of a distributed run and a
    single-process run) start from identical weights.
    """
    fusion = model.fusion
    if torch.count_nonzero(fusion.conv2.weight) or torch.count_nonzero(fusion.conv2.bias):
        return
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        fusion.conv1.reset_parameters()


class _DecodeHead(torch.nn.Module):
    """``forward(embeddings, boxes) = model.decode(embeddings, boxes)``: the module DDP wraps."""

    def __init__(self, model: torch.nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, embeddings: torch.Tensor, boxes: torch.Tensor, pixels: torch.Tensor | None = None) -> torch.Tensor:
        return self.model.decode(embeddings, boxes.unsqueeze(1), pixels=pixels)[:, 0]


# ------------------------------------------------------------------------------ checkpoints


def _trainable_sam_state(model: torch.nn.Module, full: bool) -> dict[str, torch.Tensor]:
    if full:
        return {k: v.detach().cpu().clone() for k, v in model.sam.state_dict().items()}
    return {f"mask_decoder.{k}": v.detach().cpu().clone() for k, v in model.sam.mask_decoder.state_dict().items()}


def _checkpoint(model: torch.nn.Module, config: FinetuneConfig, training: dict[str, Any]) -> dict[str, Any]:
    from napari_retsam.sam.checkpoints import project_checkpoint_dict

    random_base = str(getattr(model, "encoder_sha256", "")).startswith("random-")
    payload = project_checkpoint_dict(
        model,
        self_contained=config.full_finetune or random_base,
        base_checkpoint_path=config.checkpoint,
        meta={"fine_tuned_with": "napari-retsam training (BSD loss)", "kind": training.get("kind", "")},
    )
    payload["sam"] = (
        {k: v.detach().cpu().clone() for k, v in model.sam.state_dict().items()}
        if config.full_finetune or random_base else _trainable_sam_state(model, False)
    )
    payload[TRAINING_KEY] = training
    return payload


def _load_resume(path: str | Path) -> dict[str, Any]:
    """Read a ``last.pt``/``best.pt`` to resume from; every field is checked (one line naming the file
    and the field when one is missing, of the wrong type, out of range or holds NaN/inf)."""
    from napari_retsam.checkpoint_fields import CheckpointFields
    from napari_retsam.sam.checkpoints import (
        PROJECT_FORMAT,
        read_checkpoint,
        validate_project_checkpoint,
    )

    state = read_checkpoint(path)
    if state.get("format") != PROJECT_FORMAT or TRAINING_KEY not in state:
        raise RetsamInputError(f"cannot resume from {path}: not a napari-retsam training checkpoint (last.pt/best.pt)")
    validate_project_checkpoint(state, path)
    tr = CheckpointFields(state, path, "fine-tuned checkpoint").sub(TRAINING_KEY)
    tr.text("kind")
    config = tr.sub("config")
    config.flag("full_finetune")
    config.integer("epochs", lo=1)
    config.integer("max_steps", lo=0, optional=True)
    tr.text("data_signature")
    tr.mapping("metrics")
    tr.number("best_score", finite=False, optional=True, allow_none=True)
    epoch = tr.integer("epoch", lo=0)
    tr.integer("micro", lo=0)
    step = tr.integer("step", lo=0)
    total = tr.integer("total_steps", lo=0, optional=True)
    if total is not None and step > total:
        tr.fail("step", f"is {step}, beyond the run's {total} steps (total_steps)")
    if epoch > config.data["epochs"]:
        tr.fail("epoch", f"is {epoch}, beyond the run's {config.data['epochs']} epochs (config.epochs)")
    tr.optimizer("optimizer")
    tr.mapping("scaler")
    rng = tr.sub("rng")
    rng.rng_state("torch")
    rng.tensor("cuda", dtypes=(torch.uint8,), ndim=1, optional=True, allow_none=True)
    tr.sequence("history", of=dict)
    tr.integer("n_train", lo=0, optional=True)
    tr.integer("n_val", lo=0, optional=True)
    tr.sequence("train_ids", of=str, optional=True)
    tr.sequence("val_ids", of=str, optional=True)
    return state


def _check_resume_fits(state: dict[str, Any], model: torch.nn.Module, config: FinetuneConfig, path: Path,
                       *, total_steps: int | None = None, micro_per_epoch: int | None = None) -> None:
    if state.get("model_type") != model.model_type or state.get("config") != model.config.to_dict():
        raise RetsamInputError(
            f"cannot resume from {path}: it was trained on a {state.get('model_type')} model, "
            f"this run uses {model.model_type} (another architecture)"
        )
    base = state.get("base_checkpoint_sha256")
    own = getattr(model, "encoder_sha256", None)
    if base and own and not str(own).startswith("random-") and base != own:
        raise RetsamInputError(
            f"cannot resume from {path}: it was fine-tuned from another base checkpoint "
            f"(SHA-256 {str(base)[:12]}…, this run's base {str(own)[:12]}…)"
        )
    tr = state[TRAINING_KEY]
    old = tr["config"]
    if bool(old.get("full_finetune")) != config.full_finetune:
        raise RetsamInputError(f"cannot resume from {path}: full fine-tuning was {old.get('full_finetune')}, now {config.full_finetune}")
    # the position must lie inside this run
    step, epoch, micro = int(tr["step"]), int(tr["epoch"]), int(tr["micro"])
    if total_steps is not None and step > total_steps:
        raise RetsamInputError(f"cannot resume from {path}: it is at step {step}, beyond this run's {total_steps} "
                               "steps (raise --epochs/--max-steps to continue it)")
    if epoch > config.epochs:
        raise RetsamInputError(f"cannot resume from {path}: it is at epoch {epoch}, beyond this run's "
                               f"{config.epochs} epochs")
    if micro_per_epoch is not None and micro > micro_per_epoch:
        raise RetsamInputError(f"cannot resume from {path}: its position (micro-batch {micro} of epoch {epoch + 1}) "
                               f"is beyond this run's {micro_per_epoch} micro-batches per epoch")
    # the optimizer state must fit the parameters this run trains
    trained = [p for p in model.parameters() if p.requires_grad]
    groups = tr["optimizer"]["param_groups"]
    n_saved = sum(len(g["params"]) for g in groups)
    if len(groups) != 1 or n_saved != len(trained):
        raise RetsamInputError(f"cannot resume from {path}: its optimizer state covers {n_saved} parameters in "
                               f"{len(groups)} group(s), this run trains {len(trained)} in 1")
    index = {p: k for k, p in enumerate(groups[0]["params"])}
    for key, entry in tr["optimizer"]["state"].items():
        if key not in index:
            raise RetsamInputError(f"cannot resume from {path}: its optimizer state names parameter {key!r}, "
                                   "which is not in its parameter group")
        param = trained[index[key]]
        for name, value in entry.items():
            if isinstance(value, torch.Tensor) and value.ndim and tuple(value.shape) != tuple(param.shape):
                raise RetsamInputError(
                    f"cannot resume from {path}: field 'training.optimizer.state.{key}.{name}' has shape "
                    f"{tuple(value.shape)}, its parameter has {tuple(param.shape)}"
                )


def _apply_weights(model: torch.nn.Module, state: dict[str, Any]) -> None:
    sam_part = state["sam"]
    try:
        missing = model.sam.load_state_dict(sam_part, strict=False)
    except RuntimeError as exc:
        raise RetsamInputError(f"checkpoint weights do not fit this model: {str(exc).splitlines()[0][:160]}") from exc
    if missing.unexpected_keys:
        raise RetsamInputError(f"checkpoint weights do not fit this model: unexpected {missing.unexpected_keys[0]}")
    try:
        model.fusion.load_state_dict(state["fusion"], strict=True)
    except RuntimeError as exc:
        raise RetsamInputError(
            f"the fusion block weights of the checkpoint do not fit this model: {str(exc).splitlines()[0][:160]}"
        ) from exc


# ------------------------------------------------------------------------------ the loop


@dataclass
class _Position:
    epoch: int = 0
    micro: int = 0  # micro-batches of this epoch already consumed (at an optimizer-step boundary)
    step: int = 0  # optimizer steps done


def _view_of(unitset: UnitSet, seed: int, epoch: int, item: int) -> int:
    if unitset.n_views == 1:
        return 0
    return int(rng_for(seed, "view-pick", epoch, item).integers(unitset.n_views))


def _batch_inputs(
    units: list[Unit], sample_ids: list[int], epoch: int, config: FinetuneConfig
) -> tuple[list[str], torch.Tensor, torch.Tensor]:
    """Embedding keys, N×4 encoder-input boxes (jittered per sample and epoch) and N×1×h×w targets."""
    from napari_retsam.sam.preprocess import boxes_to_input

    keys, boxes, targets = [], [], []
    for unit, sample in zip(units, sample_ids):
        height, width = unit.view_size
        rng = rng_for(config.seed, "box", epoch, sample)
        local = box_in_tile(jitter_box(unit.view_box, config.box_jitter, rng, width, height), unit.window)
        if local is None:  # the jitter moved the box off this tile: use the plain box
            local = unit.local_box
        boxes.append(boxes_to_input(local, unit.tile_size, unit.input_size)[0])
        keys.append(unit.key)
        targets.append(unit.target)
    return keys, torch.tensor(np.array(boxes), dtype=torch.float32), torch.stack(targets)


@torch.no_grad()
def validate(
    model: torch.nn.Module,
    items: Sequence[TrainItem],
    store: EmbeddingStore,
    config: FinetuneConfig,
) -> dict[str, Any]:
    """Pooled, FOV-masked metrics on the validation items, through the inference path.

    Each item is segmented by :class:`~napari_retsam.sam.segmenter.Segmenter`
    (tile grid, per-window box, blending, sigmoid) with its un-jittered prompt
    box, sharing the run's embedding cache; then
    :func:`napari_retsam.metrics.evaluate_set` pools all validation pixels inside
    the FOVs (AUC, Se, Sp, PA, F1, precision, IoU at ``config.threshold``).
    """
    from napari_retsam.metrics import evaluate_set
    from napari_retsam.sam.segmenter import Segmenter

    was_training = model.training
    model.eval()
    segmenter = Segmenter(model, cache=store.cache)
    probs = []
    for item in items:
        box = view_box(item, config.box_from)
        result = segmenter.segment(item.image, box[None], tile=config.tile or None, overlap=config.overlap)
        probs.append(result.prob)
    if was_training:
        _set_trainable(model, config.full_finetune)
    report = evaluate_set(probs, [it.mask for it in items], [it.fov for it in items],
                          threshold=config.threshold, ids=[it.id for it in items])
    pooled = report.pooled
    return {
        "auc": pooled.auc, "se": pooled.se, "sp": pooled.sp, "pa": pooled.pa, "f1": pooled.f1,
        "precision": pooled.precision, "iou": pooled.iou, "n_images": len(probs),
    }


def _score(metrics: dict[str, Any] | None, epoch_loss: float) -> float:
    if metrics:
        if metrics.get("auc") is not None and math.isfinite(metrics["auc"]):
            return float(metrics["auc"])
        if metrics.get("f1") is not None and math.isfinite(metrics["f1"]):
            return float(metrics["f1"])
    return -float(epoch_loss)


def _write_log(out_dir: Path, history: list[dict[str, Any]]) -> None:
    text = "".join(json.dumps(rec, sort_keys=True) + "\n" for rec in history)
    atomic_write_bytes(out_dir / LOG, text.encode())


def train(
    model: torch.nn.Module,
    train_items: Sequence[TrainItem],
    val_items: Sequence[TrainItem],
    config: FinetuneConfig,
    out_dir: str | Path,
    *,
    resume: str | Path | None = None,
    progress: ProgressFn | None = None,
    on_event: EventFn | None = None,
    should_stop: StopFn | None = None,
    ctx: DistContext | None = None,
) -> TrainResult:
    """Fine-tune ``model`` (a :class:`~napari_retsam.sam.models.RetsamSam`) in place.

    ``progress(done_steps, total_steps, message)`` after every optimizer step and
    during preparation; ``on_event(record)`` with every log record
    (``{"kind": "step", ...}`` / ``{"kind": "val", ...}``); ``should_stop()``
    polled after every micro-batch: a stop writes ``last.pt`` and raises
    :class:`~napari_retsam.progress.Cancelled` with the partial result. Writes ``out_dir/last.pt``, ``best.pt``,
    ``metrics.jsonl`` (rank 0 only in a distributed run).
    """
    config.validate()
    ctx = ctx or DistContext()
    out_dir = Path(out_dir)
    if ctx.is_main:
        ensure_writable_dir(out_dir)
    train_items = list(train_items)
    val_items = list(val_items)
    if not train_items:
        raise RetsamInputError("no training images")
    device = torch.device(config.device)
    from napari_retsam.sam.device import autocast_dtype

    amp_dtype = autocast_dtype(device, config.amp)  # fp16 on CUDA (with a scaler), bf16 on a CPU that has it
    use_amp = amp_dtype is torch.float16
    torch.manual_seed(config.seed)
    if config.pixel_branch and not model.uses_pixels:
        model.add_pixel_branch(config.pixel_branch, seed=config.seed)
    _seed_identity_fusion(model, config.seed)
    model.to(device)
    # channels-last convolutions are several times faster on CPUs (oneDNN); values are the same
    channels_last = device.type == "cpu"
    if channels_last:
        for module in (model.fusion, model.sam.mask_decoder):
            module.to(memory_format=torch.channels_last)
    params = _set_trainable(model, config.full_finetune)
    if not params:
        raise RetsamInputError("the model has no trainable parameters")

    # a resume file is read and checked before any embedding is computed (minutes on a CPU)
    state = _load_resume(Path(resume)) if resume is not None else None

    def tell(done: int, total: int, message: str) -> None:
        if progress is not None:
            progress(done, total, message)

    # ------------------------------------------------------------- embeddings (computed once)
    cache_dir = config.cache_dir
    if ctx.is_distributed and cache_dir is None and not config.full_finetune:
        cache_dir = str(out_dir / "embedding_cache")
    store = EmbeddingStore(model, full_finetune=config.full_finetune, cache=config.cache_embeddings,
                           cache_dir=cache_dir if config.cache_embeddings else None,
                           world_size=ctx.world_size, rank=ctx.rank)
    n_tiles_done = [0]

    def register(image: np.ndarray, image_hash: str, window: tuple[int, int, int, int]) -> str:
        key = store.register(image, image_hash, window)
        n_tiles_done[0] += 1
        tell(0, 0, f"embedding tile {n_tiles_done[0]}")
        if should_stop is not None and should_stop():
            message = "stopped while computing embeddings"
            raise Cancelled(message, partial=TrainResult(STOPPED, 0, 0, out_dir, None, {}, [], message))
        return key

    train_set = build_units(train_items, config, config.n_views, model.img_size, register,
                            lowres=4 * model.config.embedding_size)
    barrier(ctx)
    store.fill_from_disk()

    samples = train_set.flat_index()
    n_samples = len(samples)
    batch_size = config.batch_size
    note = ""
    if n_samples < batch_size:
        if ctx.is_distributed and n_samples < ctx.world_size:
            raise RetsamInputError(
                f"{n_samples} training samples cannot be shared by {ctx.world_size} processes; add images"
            )
        new = max(ctx.world_size, n_samples - n_samples % ctx.world_size)
        note = f"batch size reduced from {batch_size} to {new}: only {n_samples} training samples (tiles)"
        batch_size = new
    if batch_size % ctx.world_size:
        raise RetsamInputError(f"batch size {batch_size} is not divisible by the {ctx.world_size} processes")
    local_b = batch_size // ctx.world_size
    per_rank = math.ceil(n_samples / ctx.world_size)
    micro_per_epoch = math.ceil(per_rank / local_b)
    steps_per_epoch = math.ceil(micro_per_epoch / config.accumulate)
    total_steps = steps_per_epoch * config.epochs
    if config.max_steps:
        total_steps = min(total_steps, config.max_steps)

    # ------------------------------------------------------------- optimizer, resume
    optimizer = torch.optim.AdamW(params, lr=config.lr, betas=config.betas, weight_decay=config.weight_decay)
    scaler = torch.amp.GradScaler("cuda", enabled=use_amp)
    head: torch.nn.Module = _DecodeHead(model)
    if ctx.is_distributed:
        from torch.nn.parallel import DistributedDataParallel

        # find_unused_parameters: the IoU head and the mask tokens beyond class L get no gradient
        head = DistributedDataParallel(head, device_ids=[device.index] if device.type == "cuda" else None,
                                       find_unused_parameters=True)
    pos = _Position()
    history: list[dict[str, Any]] = []
    best_score: float | None = None
    last_metrics: dict[str, Any] = {}
    signature = data_signature(train_items + val_items)
    if resume is not None:
        resume = Path(resume)
        _check_resume_fits(state, model, config, resume, total_steps=total_steps, micro_per_epoch=micro_per_epoch)
        _apply_weights(model, state)
        tr = state[TRAINING_KEY]
        optimizer.load_state_dict(tr["optimizer"])
        if use_amp and tr.get("scaler"):
            scaler.load_state_dict(tr["scaler"])
        pos = _Position(int(tr["epoch"]), int(tr["micro"]), int(tr["step"]))
        history = list(tr.get("history", []))
        best_score = tr.get("best_score")
        last_metrics = dict(tr.get("metrics") or {})
        torch.set_rng_state(tr["rng"]["torch"])
        if use_amp and tr["rng"].get("cuda") is not None:
            torch.cuda.set_rng_state(tr["rng"]["cuda"], device)
        if tr.get("data_signature") != signature:
            note = (note + "; " if note else "") + "resuming on different data than the checkpoint was trained on"

    def training_state(kind: str, position: _Position) -> dict[str, Any]:
        return {
            "kind": kind,
            "config": config.to_dict(),
            "data_signature": signature,
            "metrics": last_metrics,
            "best_score": best_score,
            "epoch": position.epoch,
            "micro": position.micro,
            "step": position.step,
            "total_steps": total_steps,
            "optimizer": optimizer.state_dict(),
            "scaler": scaler.state_dict() if use_amp else {},
            "rng": {"torch": torch.get_rng_state(),
                    "cuda": torch.cuda.get_rng_state(device) if use_amp else None},
            "history": history,
            "n_train": len(train_items),
            "n_val": len(val_items),
            "train_ids": [it.id for it in train_items],
            "val_ids": [it.id for it in val_items],
        }

    def save(kind: str, position: _Position, also_best: bool = False) -> None:
        if not ctx.is_main:
            return
        payload = _checkpoint(model, config, training_state(kind, position))
        atomic_save_torch(payload, out_dir / LAST)
        if also_best:
            payload[TRAINING_KEY]["kind"] = "best"
            payload["meta"]["kind"] = "best"
            atomic_save_torch(payload, out_dir / BEST)
        _write_log(out_dir, history)

    def emit(record: dict[str, Any]) -> None:
        history.append(record)
        if on_event is not None:
            on_event(record)

    if note:
        emit({"kind": "note", "step": pos.step, "message": note})
    tell(pos.step, total_steps, f"training: {n_samples} samples, {steps_per_epoch} steps per epoch")

    # ------------------------------------------------------------- epochs
    started = time.perf_counter()
    step_seconds = 0.0  # time inside optimizer steps (batching, forward, backward, update)
    t_group = started
    steps_this_run = 0
    status = "finished"
    message = ""
    stop_now = False
    epoch = pos.epoch
    while epoch < config.epochs and not stop_now:
        order = epoch_indices(n_samples, epoch, config.seed, ctx)
        micro_batches = [order[k:k + local_b] for k in range(0, len(order), local_b)]
        epoch_losses: list[float] = []
        micro_start = pos.micro if epoch == pos.epoch else 0
        views = {i: _view_of(train_set, config.seed, epoch, i) for i in range(len(train_items))}
        optimizer.zero_grad(set_to_none=True)
        pending = 0
        acc_loss = 0.0
        acc_selected = 0.0
        mb = micro_start
        while mb < len(micro_batches):
            if pending == 0:
                t_group = time.perf_counter()
            ids = micro_batches[mb]
            units = [train_set.unit(samples[s][0], views[samples[s][0]], samples[s][1]) for s in ids]
            keys, boxes, targets = _batch_inputs(units, ids, epoch, config)
            group_start = (mb // config.accumulate) * config.accumulate
            n_in_group = min(config.accumulate, len(micro_batches) - group_start)
            with torch.autocast(device_type=device.type, dtype=amp_dtype or torch.float32, enabled=amp_dtype is not None):
                embeddings = store.batch(keys, device)
                pixels = store.batch_pixels(keys, device)
                if channels_last:
                    embeddings = embeddings.contiguous(memory_format=torch.channels_last)
                    pixels = None if pixels is None else pixels.contiguous(memory_format=torch.channels_last)
                logits = head(embeddings, boxes.to(device), pixels)
            terms = bsd_terms(logits.float(), targets.to(device), selection=config.selection,
                              smooth=config.smooth, with_bce=config.bce_term_weight > 0)
            count = all_reduce_sum(terms.count, ctx)
            pixels = all_reduce_sum(terms.n_pixels, ctx)
            loss = combine_bsd_terms(terms, config.bce_term_weight, count, pixels) * ctx.world_size
            global_loss = float(all_reduce_sum(loss.detach(), ctx)) / ctx.world_size
            if all_reduce_flag(not math.isfinite(global_loss), ctx):
                message = (f"loss became {global_loss} at step {pos.step + 1} (epoch {epoch + 1}); "
                           f"stopped, the last good checkpoint is {out_dir / LAST}")
                emit({"kind": "diverged", "step": pos.step + 1, "epoch": epoch + 1, "message": message})
                raise TrainingDiverged(message)
            scaler.scale(loss / n_in_group).backward()
            pending += 1
            acc_loss += global_loss / n_in_group
            acc_selected += float(count)
            mb += 1
            if pending == n_in_group:
                scaler.unscale_(optimizer)
                grad_norm = torch.nn.utils.clip_grad_norm_(
                    params, max_norm=config.grad_clip if config.grad_clip > 0 else float("inf"))
                if not use_amp and not torch.isfinite(grad_norm):
                    message = (f"gradient became {float(grad_norm)} at step {pos.step + 1} (epoch {epoch + 1}); "
                               f"stopped, the last good checkpoint is {out_dir / LAST}")
                    emit({"kind": "diverged", "step": pos.step + 1, "epoch": epoch + 1, "message": message})
                    raise TrainingDiverged(message)
                lr = lr_at(pos.step, total_steps, config)
                for group in optimizer.param_groups:
                    group["lr"] = lr
                scaler.step(optimizer)
                scaler.update()
                optimizer.zero_grad(set_to_none=True)
                pos = _Position(epoch, mb, pos.step + 1)
                steps_this_run += 1
                step_seconds += time.perf_counter() - t_group
                epoch_losses.append(acc_loss)
                emit({"kind": "step", "epoch": epoch + 1, "step": pos.step, "loss": acc_loss, "lr": lr,
                      "selected": acc_selected})
                tell(pos.step, total_steps, f"epoch {epoch + 1}/{config.epochs}, step {pos.step}/{total_steps}, "
                     f"loss {acc_loss:.4f}")
                pending, acc_loss, acc_selected = 0, 0.0, 0.0
                if config.max_steps and pos.step >= config.max_steps:
                    status = "max_steps"
                    stop_now = True
                    break
            wants_stop = should_stop() if should_stop is not None else False
            if all_reduce_flag(wants_stop, ctx):
                optimizer.zero_grad(set_to_none=True)  # drop a half-accumulated step
                status = STOPPED
                message = f"stopped by the user after step {pos.step}"
                stop_now = True
                break
        if status == STOPPED:
            save("last", pos)
            break
        # epoch finished (or max_steps reached): validate, checkpoint
        epoch_loss = float(np.mean(epoch_losses)) if epoch_losses else float("nan")
        metrics: dict[str, Any] = {}
        if val_items:
            metrics = validate(model, val_items, store, config) if ctx.is_main else {}
            metrics = broadcast_object(metrics, ctx)
        complete = mb >= len(micro_batches)
        end_pos = _Position(epoch + 1, 0, pos.step) if complete else pos
        last_metrics = dict(metrics)
        record = {"kind": "val", "epoch": epoch + 1, "step": pos.step, "train_loss": epoch_loss, **metrics}
        emit(record)
        score = _score(metrics, epoch_loss)
        improved = best_score is None or score > best_score
        if improved:
            best_score = score
        save("last", end_pos, also_best=improved)
        barrier(ctx)
        pos = end_pos
        epoch = pos.epoch if complete else epoch + 1
        if complete and pos.epoch >= config.epochs:
            break
    elapsed = time.perf_counter() - started
    rate = steps_this_run / step_seconds if step_seconds > 0 else 0.0
    if not message:
        what = {"max_steps": "reached max-steps", "finished": "finished"}.get(status, status)
        message = f"{what} after {pos.step} steps"
    tell(pos.step, total_steps, message)
    result = TrainResult(status, pos.step, pos.epoch, out_dir, best_score, last_metrics, history, message, rate,
                         elapsed)
    if status == STOPPED:
        raise Cancelled(message, partial=result)
    return result

