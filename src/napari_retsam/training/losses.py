"""The batch-size-based dynamic Dice loss (BSD loss) and its optional BCE term.

For a batch of ``N`` samples with ``L`` label channels, logits ``z`` and binary
targets ``t`` shaped ``N×L×H×W``, with probabilities ``p = sigmoid(z)``:

    Dice(t_n^l, p_n^l) = (2 Σ_hw p·t + s) / (Σ_hw p + Σ_hw t + s)          (soft Dice)

    L_BSD = 1 − (1/|S|) Σ_{(n,l) ∈ S} Dice(t_n^l, p_n^l)

where ``s`` is the smoothing term (``smooth``, default 1 pixel) and ``S`` the set
of selected ``(n, l)`` slices:

* ``selection="nonempty"`` (the default, the *dynamic* selection): the slices
  whose ground truth is non-empty (``Σ t > 0``) **or** whose thresholded
  prediction is non-empty (``Σ [z > 0] > 0``, i.e. ``p > 0.5``). Empty tiles and
  absent labels that the model correctly predicts as empty do not enter the mean,
  so single-label and multi-label samples and empty tiles mix in one batch
  without distorting it; a false-positive prediction on an empty slice is
  selected and pushed back to empty (its Dice is ``s / (Σ p + s)``).
* ``selection="all"``: every slice, ``|S| = N·L``.

All-empty batch (``S`` is empty: no ground truth and no thresholded prediction
anywhere): the Dice part is defined as **0** with a zero gradient (every slice
is already correct at threshold 0.5, there is nothing for Dice to correct); the
result stays finite and connected to the graph so ``backward()`` works.

Optional BCE term: ``L = L_BSD + bce_weight · mean_{n,l,h,w} BCE(z, t)`` over all
pixels of all slices (numerically stable ``binary_cross_entropy_with_logits``).

:func:`bsd_terms` returns the un-normalised parts so a distributed run can divide
by the *global* ``|S|`` and pixel count (the loss of the whole global batch,
identical to a single-process run; see :mod:`napari_retsam.training.distributed`).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from napari_retsam.errors import RetsamInputError

__all__ = ["SELECTIONS", "BsdTerms", "bsd_terms", "bsd_loss", "combine_bsd_terms"]

#: Valid values of the ``selection`` argument.
SELECTIONS: tuple[str, ...] = ("nonempty", "all")


@dataclass
class BsdTerms:
    """Un-normalised parts of the BSD loss of one (micro-)batch.

    ``dice_sum`` = Σ_{(n,l)∈S} Dice (differentiable), ``count`` = |S| (float
    tensor, no gradient), ``bce_sum`` = Σ over all pixels of BCE (differentiable,
    zero when not requested), ``n_pixels`` = N·L·H·W.
    """

    dice_sum: torch.Tensor
    count: torch.Tensor
    bce_sum: torch.Tensor
    n_pixels: torch.Tensor


def _check(logits: torch.Tensor, target: torch.Tensor, selection: str, smooth: float) -> None:
    if logits.ndim != 4:
        raise RetsamInputError(f"bsd_loss: logits must be N×L×H×W, got shape {tuple(logits.shape)}")
    if tuple(target.shape) != tuple(logits.shape):
        raise RetsamInputError(
            f"bsd_loss: target shape {tuple(target.shape)} does not match logits {tuple(logits.shape)}"
        )
    if selection not in SELECTIONS:
        raise RetsamInputError(f"bsd_loss: selection must be one of {SELECTIONS}, got {selection!r}")
    if not smooth > 0:
        raise RetsamInputError(f"bsd_loss: smooth must be > 0, got {smooth}")


def bsd_terms(
    logits: torch.Tensor,
    target: torch.Tensor,
    selection: str = "nonempty",
    smooth: float = 1.0,
    with_bce: bool = False,
) -> BsdTerms:
    """The sums behind :func:`bsd_loss` (see the module docstring for the formula)."""
    _check(logits, target, selection, smooth)
    target = target.to(dtype=logits.dtype)
    prob = torch.sigmoid(logits)
    inter = (prob * target).sum(dim=(2, 3))
    denom = prob.sum(dim=(2, 3)) + target.sum(dim=(2, 3))
    dice = (2.0 * inter + smooth) / (denom + smooth)  # N×L
    if selection == "all":
        selected = torch.ones_like(dice, dtype=torch.bool)
    else:
        with torch.no_grad():
            gt_nonempty = target.sum(dim=(2, 3)) > 0
            pred_nonempty = (logits.detach() > 0).sum(dim=(2, 3)) > 0
            selected = gt_nonempty | pred_nonempty
    dice_sum = (dice * selected.to(dice.dtype)).sum()
    count = selected.sum().to(dtype=logits.dtype).detach()
    if with_bce:
        bce_sum = F.binary_cross_entropy_with_logits(logits, target, reduction="sum")
    else:
        bce_sum = logits.sum() * 0.0
    n_pixels = torch.tensor(float(logits.numel()), dtype=logits.dtype, device=logits.device)
    return BsdTerms(dice_sum=dice_sum, count=count, bce_sum=bce_sum, n_pixels=n_pixels)


def combine_bsd_terms(
    terms: BsdTerms,
    bce_weight: float = 0.0,
    count_total: torch.Tensor | None = None,
    pixels_total: torch.Tensor | None = None,
) -> torch.Tensor:
    """Normalise :class:`BsdTerms` into the loss value.

    ``count_total`` / ``pixels_total`` default to this batch's own ``|S|`` and
    pixel count; a distributed run passes the global totals (summed over ranks).
    With ``count_total == 0`` (all-empty batch) the Dice part is ``0·dice_sum``:
    value 0, zero gradient.
    """
    count = terms.count if count_total is None else count_total
    pixels = terms.n_pixels if pixels_total is None else pixels_total
    if float(count) > 0:
        loss = terms.count / count - terms.dice_sum / count
    else:
        loss = terms.dice_sum * 0.0
    if bce_weight:
        loss = loss + bce_weight * terms.bce_sum / pixels
    return loss


def bsd_loss(
    logits: torch.Tensor,
    target: torch.Tensor,
    selection: str = "nonempty",
    smooth: float = 1.0,
    bce_weight: float = 0.0,
) -> torch.Tensor:
    """Batch-size-based dynamic Dice loss of ``N×L×H×W`` logits against binary targets.

    ``L = 1 − (1/|S|) Σ_{(n,l)∈S} (2Σpt + s)/(Σp + Σt + s) + bce_weight · mean BCE``
    with ``p = sigmoid(logits)``, ``s = smooth`` and ``S`` the non-empty slices
    (ground truth or ``p > 0.5``) for ``selection="nonempty"``, every slice for
    ``selection="all"``. An all-empty batch gives a Dice part of 0 with zero
    gradient. Returns a scalar tensor (differentiable w.r.t. ``logits``).
    """
    if bce_weight < 0:
        raise RetsamInputError(f"bsd_loss: bce_weight must be >= 0, got {bce_weight}")
    terms = bsd_terms(logits, target, selection=selection, smooth=smooth, with_bce=bce_weight > 0)
    return combine_bsd_terms(terms, bce_weight=bce_weight)
