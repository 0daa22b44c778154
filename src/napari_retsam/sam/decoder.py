"""Batched, differentiable box-prompt decoding over segment-anything's submodules.

segment-anything 1.0 has two obstacles for batched work: ``Sam.forward`` runs
under ``torch.no_grad`` (no training), and ``MaskDecoder.predict_masks`` repeats
*every* image embedding once per prompt (``repeat_interleave(image_embeddings,
n_prompts)``), which is only right for one image. This module re-states
``predict_masks``' arithmetic for N prompts that each name their own image:

1. prompt encoder on the N boxes -> sparse tokens (N×2×C) and the dense
   "no mask" embedding (N×C×h×w);
2. ``src_n = E[image_index[n]] + dense_n``; ``pos_n`` = the dense positional
   encoding; ``tokens_n = [iou_token, mask_tokens..., box_tokens_n]``;
3. ``hs, src = transformer(src, pos, tokens)``, computed by
   :func:`~napari_retsam.sam.two_way.two_way_transformer` (the image side of
   the first block once per window, not per prompt; see that module);
4. ``U = output_upscaling(src)`` (N×C/8×4h×4w), plus the fusion block's pixel
   skip of the prompt's image when there is one; mask logits of token t:
   ``M[n, t] = MLP_t(hs[n, 1 + t]) · U[n]`` (dot product over the C/8 channels),
   for the L tokens asked for only; computed on pixel rows by
   :func:`~napari_retsam.sam.two_way.upscaled_masks`, U never laid out as an image;
5. IoU predictions ``iou_prediction_head(hs[:, 0])``.

Nothing of segment-anything is patched; only its modules' weights are used, and
the tests hold the result to ``predict_masks`` at 1e-5. Autograd is left on, so
the same function serves inference (wrapped in ``torch.no_grad`` by the caller)
and decoder fine-tuning.

Output classes: class ``l`` (0-based) is SAM's mask token ``l``; class 0 is the
token ``Sam`` uses for a single box (``multimask_output=False``), so a one-class
model reproduces plain SAM (to float rounding). A model can have at most
``mask_decoder.num_mask_tokens`` (4) classes.
"""

from __future__ import annotations

import torch
from segment_anything.modeling import Sam

from napari_retsam.sam.two_way import (
    ImageSide,
    check_upscaling,
    image_side_terms,
    two_way_transformer,
    upscaled_masks,
)

__all__ = ["decode_prompts", "max_classes"]


def max_classes(sam: Sam) -> int:
    """Largest number of output classes ``sam``'s decoder can give (its mask tokens)."""
    return int(sam.mask_decoder.num_mask_tokens)


def _decode_chunk(
    sam: Sam,
    embeddings: torch.Tensor,
    boxes: torch.Tensor,
    image_index: torch.Tensor,
    num_classes: int,
    skip: torch.Tensor | None,
    terms: list[ImageSide],
) -> tuple[torch.Tensor, torch.Tensor]:
    decoder = sam.mask_decoder
    sparse, dense = sam.prompt_encoder(points=None, boxes=boxes, masks=None)
    n_prompts = boxes.shape[0]
    output_tokens = torch.cat([decoder.iou_token.weight, decoder.mask_tokens.weight], dim=0)
    output_tokens = output_tokens.unsqueeze(0).expand(n_prompts, -1, -1)
    tokens = torch.cat((output_tokens, sparse), dim=1)

    # the windows this chunk uses, each once; box prompts carry no mask, so the dense
    # embedding is the same "no mask" embedding for every prompt
    used, local = torch.unique(image_index, return_inverse=True)
    windows = embeddings.index_select(0, used) + dense[:1]
    c, h, w = windows.shape[1:]
    hs, src = two_way_transformer(decoder.transformer, windows, tokens, local, terms)
    iou_token_out = hs[:, 0, :]
    mask_tokens_out = hs[:, 1 : 1 + num_classes, :]

    hyper_in = torch.stack(
        [decoder.output_hypernetworks_mlps[t](mask_tokens_out[:, t, :]) for t in range(num_classes)], dim=1
    )  # N×L×C/8
    # the fusion block's full-resolution pixel features (see fusion.py) are added to the upscaled ones
    masks = upscaled_masks(decoder.output_upscaling, src.view(n_prompts, h, w, c), hyper_in, skip, image_index)
    iou_pred = decoder.iou_prediction_head(iou_token_out)
    return masks, iou_pred[:, :num_classes]


def decode_prompts(
    sam: Sam,
    embeddings: torch.Tensor,
    boxes: torch.Tensor,
    image_index: torch.Tensor | None = None,
    *,
    num_classes: int = 1,
    chunk_size: int | None = None,
    return_iou: bool = False,
    skip: torch.Tensor | None = None,
) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
    """Low-resolution mask logits for N box prompts over B image embeddings.

    Parameters
    ----------
    sam:
        A segment-anything ``Sam`` (only its prompt encoder and mask decoder run).
    embeddings:
        B×C×h×w image embeddings (already passed through the fusion block, if any).
    boxes:
        N×4 float boxes ``(x0, y0, x1, y1)`` in encoder-input pixels (the resized,
        padded S×S frame).
    image_index:
        N integer indices into ``embeddings`` (prompt n uses image
        ``image_index[n]``); default ``arange(N)`` (one box per image, N == B).
    num_classes:
        L, the number of mask tokens returned (1..4).
    chunk_size:
        Decode at most this many prompts per transformer pass (bounds memory:
        each prompt holds a C×h×w copy of its image embedding); None = all.
    return_iou:
        Also return the N×L IoU predictions.
    skip:
        Optional B×C/8×4h×4w features added to the decoder's upscaled image
        features of each prompt's image (the fusion block's pixel branch).

    Returns
    -------
    N×L×4h×4w logits (and N×L IoU predictions when ``return_iou``).
    """
    if embeddings.ndim != 4:
        raise ValueError(f"embeddings must be B×C×h×w, got shape {tuple(embeddings.shape)}")
    boxes = torch.as_tensor(boxes, dtype=torch.float32, device=embeddings.device).reshape(-1, 4)
    n_prompts = boxes.shape[0]
    if image_index is None:
        if n_prompts != embeddings.shape[0]:
            raise ValueError("without image_index there must be exactly one box per embedding")
        image_index = torch.arange(n_prompts, device=embeddings.device)
    image_index = torch.as_tensor(image_index, dtype=torch.long, device=embeddings.device).reshape(-1)
    if image_index.shape[0] != n_prompts:
        raise ValueError("image_index must have one entry per box")
    if n_prompts and (int(image_index.min()) < 0 or int(image_index.max()) >= embeddings.shape[0]):
        raise ValueError("image_index out of range of the embeddings")
    if not 1 <= num_classes <= max_classes(sam):
        raise ValueError(f"num_classes must be in 1..{max_classes(sam)}, got {num_classes}")
    h, w = embeddings.shape[-2:]
    if n_prompts == 0:
        empty = embeddings.new_zeros((0, num_classes, 4 * h, 4 * w))
        return (empty, embeddings.new_zeros((0, num_classes))) if return_iou else empty
    step = n_prompts if not chunk_size or chunk_size <= 0 else int(chunk_size)
    check_upscaling(sam.mask_decoder.output_upscaling)
    # the image side's weights folded with the positional encoding: once per call, shared by the chunks
    terms = image_side_terms(sam.mask_decoder.transformer, sam.prompt_encoder.get_dense_pe())
    masks_parts, iou_parts = [], []
    for start in range(0, n_prompts, step):
        stop = min(start + step, n_prompts)
        masks, iou = _decode_chunk(sam, embeddings, boxes[start:stop], image_index[start:stop], num_classes, skip,
                                   terms)
        masks_parts.append(masks)
        iou_parts.append(iou)
    masks = masks_parts[0] if len(masks_parts) == 1 else torch.cat(masks_parts, dim=0)
    if return_iou:
        iou = iou_parts[0] if len(iou_parts) == 1 else torch.cat(iou_parts, dim=0)
        return masks, iou
    return masks
