"""The fine-tuning configuration: one JSON-serialisable dataclass.

Every knob of a run lives here, so a checkpoint can store the exact config that
produced it (``FinetuneConfig.to_dict()``) and a resumed run can check it.
Units: learning rates in 1/step, ``box_jitter`` as a fraction of the box side,
``tile``/``overlap`` in image pixels (``tile=0``: whole image, no tiling),
colour jitter amplitudes as fractions (0.1 = ±10 %).
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field, fields
from typing import Any

from napari_retsam.errors import RetsamInputError
from napari_retsam.options import DEFAULT_MODEL_TYPE, DEFAULT_OVERLAP, DEFAULT_TILE, PRECISIONS, check_tile

__all__ = ["FinetuneConfig", "LOSSES"]

#: Loss names accepted by ``--loss``: BSD only, or BSD plus ``bce_weight``·BCE.
LOSSES: tuple[str, ...] = ("bsd", "bsd+bce")


@dataclass
class FinetuneConfig:
    """Hyper-parameters and options of one fine-tuning run.

    The defaults are the measured recipe for LiteMedSAM on fundus images (README,
    "Fine-tuning recipe"): 256-px tiles at native resolution with 32 px overlap,
    2 views per image, the fusion block's 16-channel pixel branch trained with the
    decoder, BSD + BCE, AdamW 5e-4 with 20 warm-up steps and a cosine decay,
    batch 8, 25 epochs, 10 % of the images held out for validation.

    ``epochs`` passes over the training items (one augmented view per item and
    epoch); ``max_steps`` (optimizer steps, 0 = unlimited) stops earlier.
    ``batch_size`` is the *global* batch (split over ranks in a distributed run);
    ``accumulate`` micro-batches are summed into one optimizer step.
    ``cache_embeddings=False`` runs the frozen encoder at every step instead of
    once per tile (slow; for machines short of memory and for the benchmark).
    Learning rate: linear warm-up over ``warmup_steps`` from 0 to ``lr``, then a
    cosine decay to ``lr * min_lr_ratio`` at the last step.
    ``pixel_branch``: channels of the fusion block's full-resolution CNN branch
    (:mod:`napari_retsam.sam.fusion`; 0 = the embedding-only block), trained with
    the decoder.
    ``fusion``: train the Feature Fusion Block with the decoder (default); False
    trains SAM's mask decoder alone and leaves the block the identity (plain
    decoder-only PEFT, the ablation row "fine-tuned (BSD)"; needs ``pixel_branch=0``).
    ``embedding_precision``: encoder arithmetic of the cached training embeddings
    ("fp32" by default, unlike segmentation's "auto": bf16 training embeddings
    cut the AUC a short synthetic fine-tuning reaches from 0.78 to 0.66, while
    bf16 at inference over fp32-trained decoders costs nothing; README, "Speed").
    """

    model_type: str = DEFAULT_MODEL_TYPE
    checkpoint: str | None = None
    full_finetune: bool = False
    epochs: int = 25
    max_steps: int = 0
    batch_size: int = 8
    accumulate: int = 1
    lr: float = 5e-4
    weight_decay: float = 1e-2
    betas: tuple[float, float] = (0.9, 0.999)
    warmup_steps: int = 20
    min_lr_ratio: float = 0.01
    grad_clip: float = 0.0
    loss: str = "bsd+bce"
    selection: str = "nonempty"
    smooth: float = 1.0
    bce_weight: float = 1.0
    tile: int = DEFAULT_TILE
    overlap: int = DEFAULT_OVERLAP
    n_views: int = 2
    flips: bool = True
    rotations: bool = True
    brightness: float = 0.1
    contrast: float = 0.1
    saturation: float = 0.1
    box_jitter: float = 0.05
    box_from: str = "fov"
    val_fraction: float = 0.1
    threshold: float = 0.5
    seed: int = 0
    amp: bool = True
    device: str = "cpu"
    cache_dir: str | None = None
    cache_embeddings: bool = True
    pixel_branch: int = 16
    fusion: bool = True
    embedding_precision: str = "fp32"
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.betas = tuple(float(b) for b in self.betas)  # type: ignore[assignment]
        self.validate()

    def validate(self) -> None:
        """Raise :class:`RetsamInputError` on an impossible value."""
        def need(ok: bool, msg: str) -> None:
            if not ok:
                raise RetsamInputError(msg)

        need(self.epochs >= 1, f"epochs must be >= 1, got {self.epochs}")
        need(self.max_steps >= 0, f"max-steps must be >= 0, got {self.max_steps}")
        need(self.batch_size >= 1, f"batch-size must be >= 1, got {self.batch_size}")
        need(self.accumulate >= 1, f"accumulate must be >= 1, got {self.accumulate}")
        need(math.isfinite(self.lr) and self.lr > 0, f"lr must be a positive number, got {self.lr}")
        need(self.weight_decay >= 0, f"weight decay must be >= 0, got {self.weight_decay}")
        need(self.warmup_steps >= 0, f"warm-up steps must be >= 0, got {self.warmup_steps}")
        need(0 <= self.min_lr_ratio <= 1, f"min-lr-ratio must be in [0, 1], got {self.min_lr_ratio}")
        need(self.grad_clip >= 0, f"grad clip must be >= 0 (0 = off), got {self.grad_clip}")
        need(self.loss in LOSSES, f"loss must be one of {', '.join(LOSSES)}, got {self.loss!r}")
        need(self.selection in ("nonempty", "all"), f"selection must be nonempty or all, got {self.selection!r}")
        need(self.smooth > 0, f"smooth must be > 0, got {self.smooth}")
        need(self.bce_weight >= 0, f"bce weight must be >= 0, got {self.bce_weight}")
        check_tile(self.tile, self.overlap)
        need(self.n_views >= 1, f"n-views must be >= 1, got {self.n_views}")
        need(0 <= self.pixel_branch <= 256, f"pixel-branch channels must be in 0..256, got {self.pixel_branch}")
        need(self.fusion or self.pixel_branch == 0,
             f"the pixel branch is part of the fusion block: without fusion it must be 0, got {self.pixel_branch}")
        need(self.embedding_precision in PRECISIONS,
             f"embedding precision must be one of {', '.join(PRECISIONS)}, got {self.embedding_precision!r}")
        need(0 <= self.box_jitter < 0.5, f"box jitter must be in [0, 0.5), got {self.box_jitter}")
        need(self.box_from in ("fov", "vessels"), f"box-from must be fov or vessels, got {self.box_from!r}")
        need(0 <= self.val_fraction < 1, f"val fraction must be in [0, 1), got {self.val_fraction}")
        need(0 < self.threshold < 1, f"threshold must be in (0, 1), got {self.threshold}")
        for name in ("brightness", "contrast", "saturation"):
            value = getattr(self, name)
            need(0 <= value < 1, f"{name} jitter must be in [0, 1), got {value}")

    @property
    def bce_term_weight(self) -> float:
        """The BCE weight actually used: ``bce_weight`` for ``loss="bsd+bce"``, else 0."""
        return self.bce_weight if self.loss == "bsd+bce" else 0.0

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-safe dict (tuples become lists)."""
        out = asdict(self)
        out["betas"] = list(self.betas)
        return out

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> FinetuneConfig:
        """Build from :meth:`to_dict` output; unknown keys raise a clear error."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise RetsamInputError(f"unknown fine-tuning config keys: {', '.join(unknown)}")
        return cls(**data)

    @classmethod
    def from_json(cls, text: str) -> FinetuneConfig:
        return cls.from_dict(json.loads(text))
