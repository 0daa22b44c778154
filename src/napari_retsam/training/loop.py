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
optimizer/scaler/RNG state, position, history); written, read and checked by
:mod:`napari_retsam.training.checkpoint`.

The run itself is a :class:`FinetuneTrainer` (one method per step of the loop);
:func:`train` builds one and runs it.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NoReturn

import numpy as np
import torch

from napari_retsam.errors import RetsamInputError
from napari_retsam.io_utils import atomic_save_torch, ensure_writable_dir
from napari_retsam.progress import STOPPED, Cancelled, ProgressFn, StopFn, report
from napari_retsam.sam.boxes import box_in_tile
from napari_retsam.training.checkpoint import (
    BEST,
    LAST,
    LOG,
    TRAINING_KEY,
    apply_weights,
    check_resume_fits,
    checkpoint_payload,
    read_resume,
    write_log,
)
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

__all__ = ["BEST", "LAST", "LOG", "TRAINING_KEY", "FinetuneTrainer", "TrainResult", "TrainingDiverged", "lr_at", "train"]

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


def _set_trainable(model: torch.nn.Module, full: bool, fusion: bool = True) -> list[torch.nn.Parameter]:
    """Freeze the encoders (eval mode) unless ``full``, and the fusion block unless ``fusion``;
    return the trained parameters."""
    model.train()
    for p in model.parameters():
        p.requires_grad_(full)
    if not full:
        model.sam.image_encoder.eval()
        model.sam.prompt_encoder.eval()
        for module in (model.fusion, model.sam.mask_decoder):
            for p in module.parameters():
                p.requires_grad_(True)
    if not fusion:  # plain decoder-only PEFT: the block stays exactly the identity
        for p in model.fusion.parameters():
            p.requires_grad_(False)
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
        _set_trainable(model, config.full_finetune, config.fusion)
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



class FinetuneTrainer:
    """One fine-tuning run, step by step (:func:`train` builds one and calls :meth:`run`).

    The constructor checks the arguments, sets the model up for training (seed,
    pixel branch, frozen encoders, device, memory format) and reads the resume
    file, so bad input fails before any embedding is computed. :meth:`run` then
    goes through the named steps: :meth:`prepare_data` (embeddings once, the
    batch plan), :meth:`build_optimizer` (AdamW, AMP scaler, DDP head),
    :meth:`restore` (when resuming), per epoch :meth:`train_epoch` (micro-batches:
    :meth:`micro_step`, :meth:`optimizer_step`; a stop request is polled after
    each, :meth:`stop_requested`) and :meth:`end_epoch` (:meth:`validation_metrics`,
    :meth:`save`), and finally :meth:`result`, or :meth:`stop` on a stop request.
    The run's position, log and best score live on the trainer; ``last.pt``
    (:meth:`training_state`) holds them for an exact resume.
    """

    def __init__(
        self,
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
    ) -> None:
        config.validate()
        self.config = config
        self.ctx = ctx or DistContext()
        self.out_dir = Path(out_dir)
        if self.ctx.is_main:
            ensure_writable_dir(self.out_dir)
        self.train_items = list(train_items)
        self.val_items = list(val_items)
        if not self.train_items:
            raise RetsamInputError("no training images")
        self.model = model
        self.progress = progress
        self.on_event = on_event
        self.should_stop = should_stop
        self.device = torch.device(config.device)
        self._prepare_model()
        # a resume file is read and checked before any embedding is computed (minutes on a CPU)
        self.resume_path = Path(resume) if resume is not None else None
        self.resume_state = read_resume(self.resume_path) if self.resume_path is not None else None
        # the run's position and log (restored from the resume file by restore())
        self.pos = _Position()
        self.history: list[dict[str, Any]] = []
        self.best_score: float | None = None
        self.last_metrics: dict[str, Any] = {}
        self.signature = data_signature(self.train_items + self.val_items)
        self.note = ""  # said once, as a "note" record, when training starts
        # timing of this call: optimizer steps and the seconds inside them (batching, forward, backward, update)
        self.started = time.perf_counter()
        self.steps_this_run = 0
        self.step_seconds = 0.0

    # ------------------------------------------------------------- set-up
    def _prepare_model(self) -> None:
        """Seed, pixel branch, identity fusion from the seed, device, channels-last, trainable parameters."""
        from napari_retsam.sam.device import autocast_dtype

        config, model = self.config, self.model
        # fp16 on CUDA (with a scaler), bf16 on a CPU that has it
        self.amp_dtype = autocast_dtype(self.device, config.amp)
        self.use_amp = self.amp_dtype is torch.float16
        torch.manual_seed(config.seed)
        if config.pixel_branch and not model.uses_pixels:
            model.add_pixel_branch(config.pixel_branch, seed=config.seed)
        if config.fusion:
            _seed_identity_fusion(model, config.seed)
        model.to(self.device)
        # channels-last convolutions are several times faster on CPUs (oneDNN); values are the same
        self.channels_last = self.device.type == "cpu"
        if self.channels_last:
            for module in (model.fusion, model.sam.mask_decoder):
                module.to(memory_format=torch.channels_last)
        self.params = _set_trainable(model, config.full_finetune, config.fusion)
        if not self.params:
            raise RetsamInputError("the model has no trainable parameters")

    def prepare_data(self) -> None:
        """Embed every training tile once (the encoder is frozen), then plan the batches."""
        config, ctx = self.config, self.ctx
        cache_dir = config.cache_dir
        if ctx.is_distributed and cache_dir is None and not config.full_finetune:
            cache_dir = str(self.out_dir / "embedding_cache")
        self.store = EmbeddingStore(self.model, full_finetune=config.full_finetune, cache=config.cache_embeddings,
                                    cache_dir=cache_dir if config.cache_embeddings else None,
                                    world_size=ctx.world_size, rank=ctx.rank,
                                    precision=config.embedding_precision)
        self._n_tiles = 0
        self.train_set = build_units(self.train_items, config, config.n_views, self.model.img_size,
                                     self._register_tile, lowres=4 * self.model.config.embedding_size)
        barrier(ctx)
        self.store.fill_from_disk()
        self.samples = self.train_set.flat_index()
        self._plan_batches()

    def _register_tile(self, image: np.ndarray, image_hash: str, window: tuple[int, int, int, int]) -> str:
        """``build_units``' callback: one tile to embed; a stop request here ends the run (nothing trained)."""
        key = self.store.register(image, image_hash, window)
        self._n_tiles += 1
        report(self.progress, 0, 0, f"embedding tile {self._n_tiles}")
        if self.should_stop is not None and self.should_stop():
            message = "stopped while computing embeddings"
            raise Cancelled(message, partial=TrainResult(STOPPED, 0, 0, self.out_dir, None, {}, [], message))
        return key

    def _plan_batches(self) -> None:
        """Global and per-rank batch size, micro-batches and optimizer steps per epoch, total steps."""
        config, ctx = self.config, self.ctx
        n_samples = len(self.samples)
        batch_size = config.batch_size
        if n_samples < batch_size:
            if ctx.is_distributed and n_samples < ctx.world_size:
                raise RetsamInputError(
                    f"{n_samples} training samples cannot be shared by {ctx.world_size} processes; add images"
                )
            new = max(ctx.world_size, n_samples - n_samples % ctx.world_size)
            self.note = f"batch size reduced from {batch_size} to {new}: only {n_samples} training samples (tiles)"
            batch_size = new
        if batch_size % ctx.world_size:
            raise RetsamInputError(f"batch size {batch_size} is not divisible by the {ctx.world_size} processes")
        self.local_batch = batch_size // ctx.world_size
        per_rank = math.ceil(n_samples / ctx.world_size)
        self.micro_per_epoch = math.ceil(per_rank / self.local_batch)
        self.steps_per_epoch = math.ceil(self.micro_per_epoch / config.accumulate)
        self.total_steps = self.steps_per_epoch * config.epochs
        if config.max_steps:
            self.total_steps = min(self.total_steps, config.max_steps)

    def build_optimizer(self) -> None:
        """AdamW over the trained parameters (learning rate set per step, :func:`lr_at`), the AMP
        scaler (CUDA float16 only) and the decoding head (wrapped in DDP in a distributed run)."""
        config = self.config
        self.optimizer = torch.optim.AdamW(self.params, lr=config.lr, betas=config.betas,
                                           weight_decay=config.weight_decay)
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.use_amp)
        self.head: torch.nn.Module = _DecodeHead(self.model)
        if self.ctx.is_distributed:
            from torch.nn.parallel import DistributedDataParallel

            # find_unused_parameters: the IoU head and the mask tokens beyond class L get no gradient
            device = self.device
            self.head = DistributedDataParallel(self.head,
                                                device_ids=[device.index] if device.type == "cuda" else None,
                                                find_unused_parameters=True)

    def restore(self) -> None:
        """Continue from the resume file: weights, optimizer, scaler, position, log, best score, RNG."""
        state, path = self.resume_state, self.resume_path
        assert state is not None and path is not None
        check_resume_fits(state, self.model, self.config, path, total_steps=self.total_steps,
                           micro_per_epoch=self.micro_per_epoch)
        apply_weights(self.model, state)
        tr = state[TRAINING_KEY]
        self.optimizer.load_state_dict(tr["optimizer"])
        if self.use_amp and tr.get("scaler"):
            self.scaler.load_state_dict(tr["scaler"])
        self.pos = _Position(int(tr["epoch"]), int(tr["micro"]), int(tr["step"]))
        self.history = list(tr.get("history", []))
        self.best_score = tr.get("best_score")
        self.last_metrics = dict(tr.get("metrics") or {})
        torch.set_rng_state(tr["rng"]["torch"])
        if self.use_amp and tr["rng"].get("cuda") is not None:
            torch.cuda.set_rng_state(tr["rng"]["cuda"], self.device)
        if tr.get("data_signature") != self.signature:
            self.note = ((self.note + "; ") if self.note else "") + \
                "resuming on different data than the checkpoint was trained on"

    # ------------------------------------------------------------- records and checkpoints
    def emit(self, record: dict[str, Any]) -> None:
        """Append a log record (``metrics.jsonl``) and hand it to ``on_event``."""
        self.history.append(record)
        if self.on_event is not None:
            self.on_event(record)

    def training_state(self, kind: str, position: _Position) -> dict[str, Any]:
        """The checkpoint's ``"training"`` entry: everything an exact resume needs."""
        use_amp = self.use_amp
        return {
            "kind": kind,
            "config": self.config.to_dict(),
            "data_signature": self.signature,
            "metrics": self.last_metrics,
            "best_score": self.best_score,
            "epoch": position.epoch,
            "micro": position.micro,
            "step": position.step,
            "total_steps": self.total_steps,
            "optimizer": self.optimizer.state_dict(),
            "scaler": self.scaler.state_dict() if use_amp else {},
            "rng": {"torch": torch.get_rng_state(),
                    "cuda": torch.cuda.get_rng_state(self.device) if use_amp else None},
            "history": self.history,
            "n_train": len(self.train_items),
            "n_val": len(self.val_items),
            "train_ids": [it.id for it in self.train_items],
            "val_ids": [it.id for it in self.val_items],
        }

    def save(self, kind: str, position: _Position, also_best: bool = False) -> None:
        """Write ``last.pt`` (and ``best.pt``) and ``metrics.jsonl`` atomically (rank 0 only)."""
        if not self.ctx.is_main:
            return
        payload = checkpoint_payload(self.model, self.config, self.training_state(kind, position))
        atomic_save_torch(payload, self.out_dir / LAST)
        if also_best:
            payload[TRAINING_KEY]["kind"] = "best"
            payload["meta"]["kind"] = "best"
            atomic_save_torch(payload, self.out_dir / BEST)
        write_log(self.out_dir, self.history)

    # ------------------------------------------------------------- the loop
    def run(self) -> TrainResult:
        """Prepare, train epoch by epoch, validate and checkpoint after each; the result.

        Raises :class:`~napari_retsam.progress.Cancelled` (``partial``: the result so
        far, ``last.pt`` written) when ``should_stop()`` turns True.
        """
        self.prepare_data()
        self.build_optimizer()
        if self.resume_state is not None:
            self.restore()
        if self.note:
            self.emit({"kind": "note", "step": self.pos.step, "message": self.note})
        report(self.progress, self.pos.step, self.total_steps,
               f"training: {len(self.samples)} samples, {self.steps_per_epoch} steps per epoch")
        self.started = time.perf_counter()
        status = "finished"
        epoch = self.pos.epoch
        while epoch < self.config.epochs:
            status, complete, losses = self.train_epoch(epoch)
            if status == STOPPED:
                self.stop()
            self.end_epoch(epoch, losses, complete)
            if status == "max_steps":
                break
            epoch = self.pos.epoch
        return self.result(status)

    def train_epoch(self, epoch: int) -> tuple[str, bool, list[float]]:
        """The micro-batches of ``epoch`` from the current position, an optimizer step every
        ``accumulate`` of them. Returns the status (``"finished"``, ``"max_steps"`` or
        :data:`STOPPED`), whether the epoch is complete, and the loss of each step."""
        config = self.config
        order = epoch_indices(len(self.samples), epoch, config.seed, self.ctx)
        micro_batches = [order[k:k + self.local_batch] for k in range(0, len(order), self.local_batch)]
        views = {i: _view_of(self.train_set, config.seed, epoch, i) for i in range(len(self.train_items))}
        step_losses: list[float] = []
        self.optimizer.zero_grad(set_to_none=True)
        pending, acc_loss, acc_selected = 0, 0.0, 0.0
        t_group = time.perf_counter()
        status = "finished"
        mb = self.pos.micro if epoch == self.pos.epoch else 0
        while mb < len(micro_batches):
            if pending == 0:
                t_group = time.perf_counter()
            group_start = (mb // config.accumulate) * config.accumulate
            n_in_group = min(config.accumulate, len(micro_batches) - group_start)
            loss, selected = self.micro_step(epoch, micro_batches[mb], views, n_in_group)
            pending += 1
            acc_loss += loss / n_in_group
            acc_selected += selected
            mb += 1
            if pending == n_in_group:
                self.optimizer_step(epoch, mb, acc_loss, acc_selected, t_group)
                step_losses.append(acc_loss)
                pending, acc_loss, acc_selected = 0, 0.0, 0.0
                if config.max_steps and self.pos.step >= config.max_steps:
                    status = "max_steps"
                    break
            if self.stop_requested():
                self.optimizer.zero_grad(set_to_none=True)  # drop a half-accumulated step
                status = STOPPED
                break
        return status, mb >= len(micro_batches), step_losses

    def micro_step(self, epoch: int, ids: list[int], views: dict[int, int], n_in_group: int) -> tuple[float, float]:
        """Forward and backward of one micro-batch (``ids``: sample indices); returns its global
        loss and the number of selected slices. A non-finite loss raises :class:`TrainingDiverged`."""
        config, ctx, device = self.config, self.ctx, self.device
        samples = self.samples
        units = [self.train_set.unit(samples[s][0], views[samples[s][0]], samples[s][1]) for s in ids]
        keys, boxes, targets = _batch_inputs(units, ids, epoch, config)
        amp_dtype = self.amp_dtype
        with torch.autocast(device_type=device.type, dtype=amp_dtype or torch.float32, enabled=amp_dtype is not None):
            embeddings = self.store.batch(keys, device)
            pixels = self.store.batch_pixels(keys, device)
            if self.channels_last:
                embeddings = embeddings.contiguous(memory_format=torch.channels_last)
                pixels = None if pixels is None else pixels.contiguous(memory_format=torch.channels_last)
            logits = self.head(embeddings, boxes.to(device), pixels)
        terms = bsd_terms(logits.float(), targets.to(device), selection=config.selection,
                          smooth=config.smooth, with_bce=config.bce_term_weight > 0)
        count = all_reduce_sum(terms.count, ctx)
        n_pixels = all_reduce_sum(terms.n_pixels, ctx)
        loss = combine_bsd_terms(terms, config.bce_term_weight, count, n_pixels) * ctx.world_size
        global_loss = float(all_reduce_sum(loss.detach(), ctx)) / ctx.world_size
        if all_reduce_flag(not math.isfinite(global_loss), ctx):
            self._diverged("loss", global_loss, epoch)
        self.scaler.scale(loss / n_in_group).backward()
        return global_loss, float(count)

    def optimizer_step(self, epoch: int, micro: int, loss: float, selected: float, t_group: float) -> None:
        """Clip, set the learning rate, step; advance the position to (``epoch``, ``micro``) and log
        the step. A non-finite gradient (without AMP) raises :class:`TrainingDiverged`."""
        config, optimizer = self.config, self.optimizer
        self.scaler.unscale_(optimizer)
        grad_norm = torch.nn.utils.clip_grad_norm_(
            self.params, max_norm=config.grad_clip if config.grad_clip > 0 else float("inf"))
        if not self.use_amp and not torch.isfinite(grad_norm):
            self._diverged("gradient", float(grad_norm), epoch)
        lr = lr_at(self.pos.step, self.total_steps, config)
        for group in optimizer.param_groups:
            group["lr"] = lr
        self.scaler.step(optimizer)
        self.scaler.update()
        optimizer.zero_grad(set_to_none=True)
        self.pos = _Position(epoch, micro, self.pos.step + 1)
        self.steps_this_run += 1
        self.step_seconds += time.perf_counter() - t_group
        step = self.pos.step
        self.emit({"kind": "step", "epoch": epoch + 1, "step": step, "loss": loss, "lr": lr, "selected": selected})
        report(self.progress, step, self.total_steps,
               f"epoch {epoch + 1}/{config.epochs}, step {step}/{self.total_steps}, loss {loss:.4f}")

    def _diverged(self, what: str, value: float, epoch: int) -> None:
        """Log and raise :class:`TrainingDiverged` (nothing written: ``last.pt`` stays the last good state)."""
        step = self.pos.step + 1
        message = (f"{what} became {value} at step {step} (epoch {epoch + 1}); "
                   f"stopped, the last good checkpoint is {self.out_dir / LAST}")
        self.emit({"kind": "diverged", "step": step, "epoch": epoch + 1, "message": message})
        raise TrainingDiverged(message)

    def stop_requested(self) -> bool:
        """``should_stop()``, agreed by every rank (one rank asking stops them all)."""
        wants_stop = self.should_stop() if self.should_stop is not None else False
        return all_reduce_flag(wants_stop, self.ctx)

    def validation_metrics(self) -> dict[str, Any]:
        """Metrics on the validation items (rank 0 computes, every rank receives); {} without them."""
        if not self.val_items:
            return {}
        metrics = validate(self.model, self.val_items, self.store, self.config) if self.ctx.is_main else {}
        return broadcast_object(metrics, self.ctx)

    def end_epoch(self, epoch: int, step_losses: list[float], complete: bool) -> None:
        """Validate, log, write ``last.pt`` (and ``best.pt`` when the score improved), move the position
        to the next epoch when this one is complete."""
        epoch_loss = float(np.mean(step_losses)) if step_losses else float("nan")
        metrics = self.validation_metrics()
        end_pos = _Position(epoch + 1, 0, self.pos.step) if complete else self.pos
        self.last_metrics = dict(metrics)
        self.emit({"kind": "val", "epoch": epoch + 1, "step": self.pos.step, "train_loss": epoch_loss, **metrics})
        score = _score(metrics, epoch_loss)
        improved = self.best_score is None or score > self.best_score
        if improved:
            self.best_score = score
        self.save("last", end_pos, also_best=improved)
        barrier(self.ctx)
        self.pos = end_pos

    def result(self, status: str, message: str = "") -> TrainResult:
        """The run's :class:`TrainResult` (the final progress report too)."""
        elapsed = time.perf_counter() - self.started
        rate = self.steps_this_run / self.step_seconds if self.step_seconds > 0 else 0.0
        if not message:
            what = {"max_steps": "reached max-steps", "finished": "finished"}.get(status, status)
            message = f"{what} after {self.pos.step} steps"
        report(self.progress, self.pos.step, self.total_steps, message)
        return TrainResult(status, self.pos.step, self.pos.epoch, self.out_dir, self.best_score, self.last_metrics,
                           self.history, message, rate, elapsed)

    def stop(self) -> NoReturn:
        """A stop request: write ``last.pt`` at the last completed step, then raise
        :class:`~napari_retsam.progress.Cancelled` with the result so far (status :data:`STOPPED`)."""
        self.save("last", self.pos)
        message = f"stopped by the user after step {self.pos.step}"
        raise Cancelled(message, partial=self.result(STOPPED, message))


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
    ``metrics.jsonl`` (rank 0 only in a distributed run). The steps are :class:`FinetuneTrainer`'s.
    """
    trainer = FinetuneTrainer(model, train_items, val_items, config, out_dir, resume=resume, progress=progress,
                              on_event=on_event, should_stop=should_stop, ctx=ctx)
    return trainer.run()
