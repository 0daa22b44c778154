"""Fine-tuning checkpoints: what ``last.pt``/``best.pt`` hold and how a run resumes from one.

A checkpoint is the SAM engine's project checkpoint dict
(:func:`napari_retsam.sam.checkpoints.project_checkpoint_dict`, so ``load_sam``
loads it) plus a ``"training"`` entry (:data:`TRAINING_KEY`: config, data
signature, metrics, optimizer/scaler/RNG state, position, history) written by
:class:`napari_retsam.training.loop.FinetuneTrainer`. :func:`read_resume` reads
one and checks every field, :func:`check_resume_fits` checks it against the
run about to continue it, :func:`apply_weights` loads its weights.
``metrics.jsonl`` (:data:`LOG`, :func:`write_log`) is rewritten with each
checkpoint, so the log and ``last.pt`` always agree.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

from napari_retsam.errors import RetsamInputError
from napari_retsam.io_utils import atomic_write_bytes
from napari_retsam.training.config import FinetuneConfig

__all__ = ["BEST", "LAST", "LOG", "TRAINING_KEY", "apply_weights", "check_resume_fits", "checkpoint_payload",
           "read_resume", "trainable_sam_state", "write_log"]

LAST = "last.pt"
BEST = "best.pt"
LOG = "metrics.jsonl"
TRAINING_KEY = "training"



def trainable_sam_state(model: torch.nn.Module, full: bool) -> dict[str, torch.Tensor]:
    """CPU copies of the SAM tensors a run trains: all of them (``full``) or the mask decoder's."""
    if full:
        return {k: v.detach().cpu().clone() for k, v in model.sam.state_dict().items()}
    return {f"mask_decoder.{k}": v.detach().cpu().clone() for k, v in model.sam.mask_decoder.state_dict().items()}


def checkpoint_payload(model: torch.nn.Module, config: FinetuneConfig, training: dict[str, Any]) -> dict[str, Any]:
    """The checkpoint dict of ``model``: the project format (self-contained with full fine-tuning or a
    random base, else decoder-only) with ``training`` as its :data:`TRAINING_KEY` entry."""
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
        if config.full_finetune or random_base else trainable_sam_state(model, False)
    )
    payload[TRAINING_KEY] = training
    return payload


def read_resume(path: str | Path) -> dict[str, Any]:
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


def check_resume_fits(state: dict[str, Any], model: torch.nn.Module, config: FinetuneConfig, path: Path,
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


def apply_weights(model: torch.nn.Module, state: dict[str, Any]) -> None:
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


def write_log(out_dir: Path, history: list[dict[str, Any]]) -> None:
    """Rewrite ``out_dir/metrics.jsonl`` (one JSON object per record) atomically."""
    text = "".join(json.dumps(rec, sort_keys=True) + "\n" for rec in history)
    atomic_write_bytes(out_dir / LOG, text.encode())
