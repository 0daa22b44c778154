"""sam/two_way.py: the re-stated decoder equals segment-anything's modules, values and gradients."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from napari_retsam.sam.decoder import decode_prompts
from napari_retsam.sam.two_way import check_upscaling, reference_masks


def _case(sam, windows=3, prompts=5, seed=0, one_per_window=False):
    g = torch.Generator().manual_seed(seed)
    c = sam.prompt_encoder.embed_dim
    h, w = sam.prompt_encoder.image_embedding_size
    size = sam.prompt_encoder.input_image_size[0]
    emb = torch.randn(windows, c, h, w, generator=g)
    corner = torch.rand(prompts, 2, generator=g) * size / 2
    boxes = torch.cat([corner, corner + 8 + torch.rand(prompts, 2, generator=g) * size / 2], dim=1)
    index = torch.tensor([2, 0, 2, 1, 0][:prompts]) % windows  # several prompts per window, any order
    if one_per_window:  # prompt n on window n: the transformer gathers nothing
        index = torch.arange(windows)
        boxes = boxes[:windows]
    skip = torch.randn(windows, c // 8, 4 * h, 4 * w, generator=g)
    return emb, boxes, index, skip


@pytest.mark.parametrize("with_skip", [False, True])
@pytest.mark.parametrize("one_per_window", [False, True])
def test_real_lite_medsam_decoder_equals_segment_anything_modules(lite_medsam, with_skip, one_per_window):
    sam = lite_medsam.sam
    emb, boxes, index, skip = _case(sam, one_per_window=one_per_window)
    skip = skip if with_skip else None
    with torch.no_grad():
        ref, ref_iou = reference_masks(sam, emb, boxes, index, 1, skip)
        for chunk in (None, 2):  # chunks split a window's prompts over passes
            out, iou = decode_prompts(sam, emb, boxes, index, chunk_size=chunk, return_iou=True, skip=skip)
            scale = float(ref.abs().max())
            assert scale > 1.0  # a real decoder's logits, not a flat map
            torch.testing.assert_close(out, ref, rtol=0, atol=1e-5 * scale)
            torch.testing.assert_close(iou, ref_iou, rtol=0, atol=1e-5)


def test_every_class_count_equals_the_reference(tiny_sam):
    sam = tiny_sam.sam
    emb, boxes, index, skip = _case(sam, seed=1)
    with torch.no_grad():
        for num_classes in range(1, 5):
            ref, _ = reference_masks(sam, emb, boxes, index, num_classes, skip)
            out = decode_prompts(sam, emb, boxes, index, num_classes=num_classes, skip=skip)
            assert out.shape == ref.shape
            torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("one_per_window", [False, True])
def test_gradients_equal_the_reference(lite_medsam, one_per_window):
    """Decoder fine-tuning trains through the re-stated path: same loss, same gradients."""
    sam = copy.deepcopy(lite_medsam.sam)  # the session fixture's weights stay untouched
    emb, boxes, index, skip = _case(sam, seed=2, one_per_window=one_per_window)
    emb.requires_grad_(True)
    skip.requires_grad_(True)
    target = torch.rand(boxes.shape[0], 1, 256, 256, generator=torch.Generator().manual_seed(3))
    params = [p for p in sam.mask_decoder.parameters()]

    def grads(fn):
        for p in params:
            p.grad = None
        emb.grad = skip.grad = None
        logits = fn()
        loss = nn.functional.binary_cross_entropy_with_logits(logits, target)
        loss.backward()
        return loss.detach(), [p.grad.clone() if p.grad is not None else torch.zeros_like(p) for p in params], \
            emb.grad.clone(), skip.grad.clone()

    ref = grads(lambda: reference_masks(sam, emb, boxes, index, 1, skip)[0])
    ours = grads(lambda: decode_prompts(sam, emb, boxes, index, chunk_size=2, skip=skip))
    torch.testing.assert_close(ours[0], ref[0], rtol=1e-5, atol=1e-6)
    overall = max(float(b.abs().max()) for b in ref[1])
    touched = 0
    for a, b in zip(ours[1], ref[1]):
        scale = float(b.abs().max())
        touched += scale > 1e-3 * overall
        # each tensor to 1e-4 of its own scale, tiny gradients to 1e-6 of the largest
        torch.testing.assert_close(a, b, rtol=0, atol=max(1e-4 * scale, 1e-6 * overall))
    assert touched > len(params) // 2  # most decoder weights get a real gradient
    for a, b in ((ours[2], ref[2]), (ours[3], ref[3])):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-4 * float(b.abs().max()))


def test_an_unknown_upscaling_layout_is_refused(tiny_sam):
    check_upscaling(tiny_sam.sam.mask_decoder.output_upscaling)  # SAM's own: accepted
    odd = nn.Sequential(nn.ConvTranspose2d(32, 8, 3, stride=2), nn.GELU())
    with pytest.raises(ValueError, match="not SAM's layout"):
        check_upscaling(odd)
    sam = copy.deepcopy(tiny_sam.sam)
    sam.mask_decoder.output_upscaling[3] = nn.ConvTranspose2d(8, 4, 2, stride=2, padding=0, bias=False)
    emb, boxes, index, _ = _case(sam)
    with pytest.raises(ValueError, match="not SAM's layout"):
        decode_prompts(sam, emb, boxes, index)
