"""BSD loss: hand-computed values, dynamic selection, empty batches, BCE term, gradients."""

from __future__ import annotations

import math

import pytest
import torch

from napari_retsam.errors import RetsamInputError
from napari_retsam.training import bsd_loss
from napari_retsam.training.losses import bsd_terms, combine_bsd_terms

LN3 = math.log(3.0)


def _slice_a() -> tuple[torch.Tensor, torch.Tensor]:
    # p = [[.5, .75], [.25, .5]], t = [[0, 1], [0, 1]]
    logits = torch.tensor([[0.0, LN3], [-LN3, 0.0]], dtype=torch.float64)
    target = torch.tensor([[0.0, 1.0], [0.0, 1.0]], dtype=torch.float64)
    return logits, target


def test_single_slice_hand_value() -> None:
    z, t = _slice_a()
    # sum p t = .75 + .5 = 1.25 ; sum p = 2 ; sum t = 2 ; Dice = (2.5 + 1) / (4 + 1) = 0.7
    loss = bsd_loss(z[None, None], t[None, None])
    assert loss.item() == pytest.approx(0.3, abs=1e-12)
    # smoothing 0.5: (2.5 + .5) / (4 + .5)
    assert bsd_loss(z[None, None], t[None, None], smooth=0.5).item() == pytest.approx(1 - 3.0 / 4.5, abs=1e-12)


def test_empty_slice_is_not_selected_but_counts_with_all() -> None:
    z, t = _slice_a()
    z_empty = torch.full((2, 2), -10.0, dtype=torch.float64)
    logits = torch.stack([z, z_empty])[:, None]
    target = torch.stack([t, torch.zeros(2, 2, dtype=torch.float64)])[:, None]
    assert bsd_loss(logits, target).item() == pytest.approx(0.3, abs=1e-12)
    p_empty = 1.0 / (1.0 + math.exp(10.0))
    dice_empty = 1.0 / (4 * p_empty + 1.0)
    expected_all = 1.0 - (0.7 + dice_empty) / 2.0
    assert bsd_loss(logits, target, selection="all").item() == pytest.approx(expected_all, abs=1e-12)


def test_false_positive_on_empty_slice_is_selected() -> None:
    z, t = _slice_a()
    z_fp = torch.tensor([[2.0, -10.0], [-10.0, -10.0]], dtype=torch.float64)  # one pixel predicted
    logits = torch.stack([z, z_fp])[:, None]
    target = torch.stack([t, torch.zeros(2, 2, dtype=torch.float64)])[:, None]
    p = torch.sigmoid(z_fp)
    dice_fp = 1.0 / (p.sum().item() + 1.0)
    assert bsd_loss(logits, target).item() == pytest.approx(1.0 - (0.7 + dice_fp) / 2.0, abs=1e-12)


def test_multilabel_absent_label_does_not_distort_the_mean() -> None:
    z, t = _slice_a()
    logits = torch.stack([z, torch.full((2, 2), -8.0, dtype=torch.float64)])[None]  # 1×2×2×2
    target = torch.stack([t, torch.zeros(2, 2, dtype=torch.float64)])[None]
    assert bsd_loss(logits, target).item() == pytest.approx(0.3, abs=1e-12)
    terms = bsd_terms(logits, target)
    assert terms.count.item() == 1.0


def test_all_empty_batch_is_zero_finite_and_has_zero_gradient() -> None:
    logits = torch.full((3, 1, 4, 4), -5.0, dtype=torch.float64, requires_grad=True)
    target = torch.zeros(3, 1, 4, 4, dtype=torch.float64)
    loss = bsd_loss(logits, target)
    assert loss.item() == 0.0 and math.isfinite(loss.item())
    loss.backward()
    assert torch.count_nonzero(logits.grad) == 0
    # with the BCE term the result is exactly the mean BCE: -log(1 - sigmoid(-5)) per pixel
    logits.grad = None
    with_bce = bsd_loss(logits, target, bce_weight=2.0)
    assert with_bce.item() == pytest.approx(2.0 * math.log1p(math.exp(-5.0)), abs=1e-12)


def test_bce_term_hand_value() -> None:
    z, t = _slice_a()
    bce = (2 * math.log(2.0) + 2 * math.log(4.0 / 3.0)) / 4.0
    loss = bsd_loss(z[None, None], t[None, None], bce_weight=0.5)
    assert loss.item() == pytest.approx(0.3 + 0.5 * bce, abs=1e-12)


def test_gradcheck_float64() -> None:
    gen = torch.Generator().manual_seed(0)
    logits = (torch.randn(2, 2, 3, 3, generator=gen, dtype=torch.float64) * 2).requires_grad_(True)
    assert logits.abs().min() > 1e-3  # far from the threshold, so the selection is locally constant
    target = (torch.rand(2, 2, 3, 3, generator=gen) > 0.6).to(torch.float64)
    target[1, 1] = 0.0  # an empty ground-truth slice
    for selection in ("nonempty", "all"):
        assert torch.autograd.gradcheck(
            lambda x: bsd_loss(x, target, selection=selection, bce_weight=0.3), (logits,), eps=1e-6, atol=1e-6
        )


def test_gradient_of_unselected_slice_is_zero() -> None:
    z, t = _slice_a()
    logits = torch.stack([z, torch.full((2, 2), -6.0, dtype=torch.float64)])[:, None].requires_grad_(True)
    target = torch.stack([t, torch.zeros(2, 2, dtype=torch.float64)])[:, None]
    bsd_loss(logits, target).backward()
    assert torch.count_nonzero(logits.grad[1]) == 0
    assert torch.count_nonzero(logits.grad[0]) > 0


def test_global_normalisation_equals_whole_batch() -> None:
    """Splitting a batch over two 'ranks' with global totals gives the whole-batch loss."""
    gen = torch.Generator().manual_seed(1)
    logits = torch.randn(4, 1, 5, 5, generator=gen, dtype=torch.float64)
    target = (torch.rand(4, 1, 5, 5, generator=gen) > 0.7).to(torch.float64)
    target[2] = 0.0
    logits[2] = -4.0  # an empty slice with an empty prediction
    whole = bsd_loss(logits, target, bce_weight=0.7)
    parts = [bsd_terms(logits[k::2], target[k::2], with_bce=True) for k in range(2)]
    count = sum(p.count for p in parts)
    pixels = sum(p.n_pixels for p in parts)
    mean_of_ranks = sum(combine_bsd_terms(p, 0.7, count, pixels) * 2 for p in parts) / 2
    assert mean_of_ranks.item() == pytest.approx(whole.item(), abs=1e-12)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"logits": torch.zeros(2, 2), "target": torch.zeros(2, 2)}, "N×L×H×W"),
        ({"logits": torch.zeros(1, 1, 2, 2), "target": torch.zeros(1, 1, 2, 3)}, "does not match"),
        ({"logits": torch.zeros(1, 1, 2, 2), "target": torch.zeros(1, 1, 2, 2), "selection": "some"}, "selection"),
        ({"logits": torch.zeros(1, 1, 2, 2), "target": torch.zeros(1, 1, 2, 2), "smooth": 0.0}, "smooth"),
        ({"logits": torch.zeros(1, 1, 2, 2), "target": torch.zeros(1, 1, 2, 2), "bce_weight": -1.0}, "bce_weight"),
    ],
)
def test_bad_input(kwargs: dict, match: str) -> None:
    with pytest.raises(RetsamInputError, match=match):
        bsd_loss(**kwargs)
