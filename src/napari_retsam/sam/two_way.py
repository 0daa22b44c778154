"""SAM's mask-decoder arithmetic re-stated for many prompts over a few image windows.

segment-anything's ``TwoWayTransformer`` and ``output_upscaling`` are correct but
spend most of their time moving memory, not multiplying: every prompt carries
its own copy of the positional encoding, the image side of the first block is
projected once per *prompt* although it depends on the *window* only, each
projection reads ``keys + pe`` from a fresh sum, the 4096 × 7 image-to-token
softmax runs on a last axis of seven, and the upscaling convolutions and the
channel LayerNorm run channels-first. This module computes the same function
(the same modules' weights, the same order of operations up to float rounding;
tests hold it to segment-anything's modules at 1e-5) with:

1. **first block, image side, per window**: ``keys`` of block 1 are the window's
   embedding plus the constant "no mask" embedding, so its token-to-image keys
   and values and its image-to-token queries are computed for the B windows and
   gathered for the N prompts (``image_index``; no gather at all when prompt n
   uses window n, the Segmenter's whole-image case);
2. **one GEMM per block for the image side**: ``k = W_k (x + pe) + b_k``,
   ``v = W_v x + b_v`` and ``q' = W_q' (x + pe) + b_q'`` as one ``x @ [W_k; W_v; W_q']ᵀ``
   with the per-position bias ``[W_k pe + b_k, b_v, W_q' pe + b_q']`` (``baddbmm``);
   the positional encoding is never repeated per prompt, and the folded weights
   and biases (:func:`image_side_terms`) are computed once per decode call;
3. **image-to-token attention as two GEMMs** against block-diagonal token keys
   and values (heads stay merged, no transposes), softmax written out over the
   seven tokens;
4. **upscaling on pixel rows**: each stride-2 2×2 transposed convolution is one
   GEMM with its bias, the channel LayerNorm is ``F.layer_norm`` over the last
   axis, the hypernetwork dot product reduces the features to L values per pixel
   *before* any pixel is put in place (only the L-channel masks are rearranged),
   and the fusion block's skip enters as ``hyper · skip`` (see
   :func:`upscaled_masks`).

Autograd is left on (decoder fine-tuning trains through the same code). Only the
layouts segment-anything and LiteMedSAM share are accepted; anything else is
refused with a clear error rather than computed differently.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["check_upscaling", "image_side_terms", "reference_masks", "two_way_transformer", "upscaled_masks"]


def _heads(x: torch.Tensor, n: int) -> torch.Tensor:
    """B×T×C -> B×n×T×C/n (a view)."""
    b, t, c = x.shape
    return x.view(b, t, n, c // n).transpose(1, 2)


def _attend(module: nn.Module, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """Scaled dot-product attention of projected, head-split q/k/v, then ``module.out_proj``."""
    out = F.scaled_dot_product_attention(q, k, v)
    b, n, t, d = out.shape
    return module.out_proj(out.transpose(1, 2).reshape(b, t, n * d))


def _softmax_last(scores: torch.Tensor) -> torch.Tensor:
    """Softmax over a short last axis (PyTorch's kernel is slow when it has ~7 entries).

    In float32 whatever the scores' dtype, as autocast runs ``torch.softmax``."""
    dtype = scores.dtype
    scores = scores.float()
    shifted = scores - scores.amax(dim=-1, keepdim=True)
    if torch.is_grad_enabled():
        e = shifted.exp()
        return (e / e.sum(dim=-1, keepdim=True)).to(dtype)
    e = shifted.exp_()
    return e.div_(e.sum(dim=-1, keepdim=True)).to(dtype)


def _block_diagonal(x: torch.Tensor, n: int, *, keys: bool) -> torch.Tensor:
    """Token keys/values N×T×C (C = n·d) as block-diagonal matrices over the n heads.

    keys: N×C×(n·T), column ``h·T + t`` holds head h's key of token t (zero outside head h's d rows);
    values: N×(n·T)×C, row ``h·T + t`` holds head h's value of token t.
    """
    b, t, c = x.shape
    d = c // n
    eye = torch.eye(n, dtype=x.dtype, device=x.device)
    per_head = x.view(b, t, n, d).permute(0, 2, 1, 3)  # N×n×T×d
    blocks = per_head[:, :, :, None, :] * eye.view(1, n, 1, n, 1)  # N×n(row head)×T×n(col head)×d
    values = blocks.reshape(b, n * t, n * d)
    return values.transpose(1, 2) if keys else values


def _image_to_token(module: nn.Module, q_image: torch.Tensor, tokens_k: torch.Tensor,
                    tokens_v: torch.Tensor) -> torch.Tensor:
    """Attention of N×HW×Ci image queries to N×T×C token keys/values, heads merged: N×HW×Ci."""
    n = module.num_heads
    k = module.k_proj(tokens_k)
    v = module.v_proj(tokens_v)
    n_prompts, t, c = k.shape
    scale = (c // n) ** -0.5
    scores = torch.bmm(q_image, _block_diagonal(k, n, keys=True) * scale)  # N×HW×(n·T)
    weights = _softmax_last(scores.view(n_prompts, -1, n, t)).view(n_prompts, -1, n * t)
    return torch.bmm(weights, _block_diagonal(v, n, keys=False))


ImageSide = tuple[torch.Tensor, torch.Tensor, list[int]]  # (Cin×ΣCi weight, 1×hw×ΣCi bias, [Ci, ...])


def _fold(parts: list[tuple[nn.Linear, bool]], pe: torch.Tensor) -> ImageSide:
    """``[lin(x + pe) if with_pe else lin(x) for lin, with_pe in parts]`` as one weight and one
    per-position bias: ``x @ W + B`` with ``W = [W_1; W_2; ...]ᵀ`` and ``B_i = W_i pe + b_i`` (or ``b_i``)."""
    weight = torch.cat([lin.weight for lin, _ in parts], dim=0).t()
    bias = torch.cat(
        [F.linear(pe, lin.weight, lin.bias) if with_pe else lin.bias.expand(1, pe.shape[1], -1) for lin, with_pe in parts],
        dim=-1,
    )
    return weight, bias, [lin.out_features for lin, _ in parts]


def image_side_terms(transformer: nn.Module, image_pe: torch.Tensor) -> list[ImageSide]:
    """The folded image-side projections of every block and of the final attention (see the module doc).

    They depend on the weights and the positional encoding only: :func:`~napari_retsam.sam.decoder.decode_prompts`
    computes them once per call and hands them to every chunk of prompts."""
    pe = image_pe.flatten(2).transpose(1, 2)
    terms = [_fold([(layer.cross_attn_token_to_image.k_proj, True), (layer.cross_attn_token_to_image.v_proj, False),
                    (layer.cross_attn_image_to_token.q_proj, True)], pe) for layer in transformer.layers]
    final = transformer.final_attn_token_to_image
    return terms + [_fold([(final.k_proj, True), (final.v_proj, False)], pe)]


def _image_side(keys: torch.Tensor, term: ImageSide) -> list[torch.Tensor]:
    """The image side's projections of ``keys`` (B×hw×C) as one GEMM with the folded bias."""
    weight, bias, sizes = term
    return list(torch.baddbmm(bias, keys, weight.expand(keys.shape[0], -1, -1)).split(sizes, dim=-1))


def _block(layer: nn.Module, queries: torch.Tensor, keys: torch.Tensor, query_pe: torch.Tensor,
           term: ImageSide, image_index: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
    """One ``TwoWayAttentionBlock``; ``image_index`` given: ``keys`` are per window (B), queries per prompt (N)."""
    n = layer.self_attn.num_heads
    sa = layer.self_attn
    if layer.skip_first_layer_pe:
        queries = _attend(sa, _heads(sa.q_proj(queries), n), _heads(sa.k_proj(queries), n), _heads(sa.v_proj(queries), n))
    else:
        q = queries + query_pe
        queries = queries + _attend(sa, _heads(sa.q_proj(q), n), _heads(sa.k_proj(q), n), _heads(sa.v_proj(queries), n))
    queries = layer.norm1(queries)

    t2i, i2t = layer.cross_attn_token_to_image, layer.cross_attn_image_to_token
    k_img, v_img, q_img = _image_side(keys, term)
    if image_index is not None:
        k_img, v_img, q_img, keys = (x.index_select(0, image_index) for x in (k_img, v_img, q_img, keys))
    m = t2i.num_heads
    queries = layer.norm2(queries + _attend(t2i, _heads(t2i.q_proj(queries + query_pe), m), _heads(k_img, m),
                                            _heads(v_img, m)))
    queries = layer.norm3(queries + layer.mlp(queries))

    attended = _image_to_token(i2t, q_img, queries + query_pe, queries)
    out = i2t.out_proj
    keys = torch.baddbmm(keys + out.bias, attended, out.weight.t().expand(attended.shape[0], -1, -1))
    return queries, layer.norm4(keys)


def two_way_transformer(transformer: nn.Module, windows: torch.Tensor, tokens: torch.Tensor,
                        image_index: torch.Tensor, terms: list[ImageSide]) -> tuple[torch.Tensor, torch.Tensor]:
    """``TwoWayTransformer.forward`` for N prompts over B windows.

    ``windows``: B×C×h×w image embeddings with the dense prompt embedding already
    added (the same for every prompt: box prompts carry no mask); ``tokens``:
    N×T×C; ``image_index``: N window indices; ``terms``: :func:`image_side_terms`
    of ``(transformer, image_pe)``. Returns ``(queries N×T×C, keys N×hw×C)`` as
    segment-anything's transformer would for ``(windows[image_index], image_pe
    repeated N times, tokens)``.
    """
    keys = windows.flatten(2).transpose(1, 2)
    if image_index.shape[0] == windows.shape[0] and bool(
        (image_index == torch.arange(windows.shape[0], device=image_index.device)).all()
    ):
        image_index = None  # prompt n uses window n (one box per window): nothing to gather
    queries = tokens
    for i, layer in enumerate(transformer.layers):
        queries, keys = _block(layer, queries, keys, tokens, terms[i], image_index if i == 0 else None)
    final = transformer.final_attn_token_to_image
    k_img, v_img = _image_side(keys, terms[-1])
    m = final.num_heads
    queries = queries + _attend(final, _heads(final.q_proj(queries + tokens), m), _heads(k_img, m), _heads(v_img, m))
    return transformer.norm_final_attn(queries), keys


def check_upscaling(upscaling: nn.Module) -> None:
    """Refuse an ``output_upscaling`` that is not SAM's (2×2/2 transposed conv, LayerNorm2d, act, 2×2/2 conv, act)."""
    from segment_anything.modeling.common import LayerNorm2d

    kinds = [nn.ConvTranspose2d, LayerNorm2d, nn.Module, nn.ConvTranspose2d, nn.Module]
    layers = list(upscaling) if isinstance(upscaling, nn.Sequential) else []
    ok = len(layers) == len(kinds) and all(isinstance(m, k) for m, k in zip(layers, kinds))
    for conv in (layers[0], layers[3]) if ok else ():
        ok = ok and conv.kernel_size == (2, 2) and conv.stride == (2, 2) and conv.padding == (0, 0) \
            and conv.output_padding == (0, 0) and conv.groups == 1 and conv.dilation == (1, 1) and conv.bias is not None
    if not ok:
        raise ValueError("this mask decoder's output_upscaling is not SAM's layout; napari-retsam cannot decode with it")


def _pixelwise_2x2(x: torch.Tensor, conv: nn.ConvTranspose2d) -> torch.Tensor:
    """A stride-2 2×2 ``ConvTranspose2d`` as one GEMM on M×Cin pixel rows: (4·M)×Cout rows.

    Such a convolution maps each input pixel to its own 2×2 block of output pixels, so
    it is a per-pixel matrix product; output row ``4·m + 2·dy + dx`` is output pixel
    ``(2y + dy, 2x + dx)`` of input pixel m = (y, x). The rows are left in this order (no
    rearrangement); :func:`upscaled_masks` puts the pixels in place at the end.
    """
    weight = conv.weight  # Cin×Cout×2×2
    cin, cout = weight.shape[:2]
    columns = weight.permute(0, 2, 3, 1).reshape(cin, 4 * cout)  # columns ordered (dy, dx, cout)
    return torch.addmm(conv.bias.repeat(4), x, columns).view(-1, cout)


def upscaled_masks(upscaling: nn.Module, src: torch.Tensor, hyper: torch.Tensor,
                   skip: torch.Tensor | None = None, image_index: torch.Tensor | None = None) -> torch.Tensor:
    """Mask logits ``hyper · (output_upscaling(src) + skip)``: N×L×4h×4w.

    ``src``: N×h×w×C channels-last transformer output; ``hyper``: N×L×C/8 (the mask
    tokens' hypernetwork outputs); ``skip``: B×C/8×4h×4w features added to the upscaled
    features of prompt n's window ``image_index[n]``. The upscaled features are never
    laid out as an image: both transposed convolutions, the channel LayerNorm and the
    activations work on pixel rows, the dot product with ``hyper`` reduces them to L
    values per pixel, and only those are put in place. The skip enters by linearity,
    ``hyper · skip``, read once channels-first.
    """
    conv1, norm, act1, conv2, act2 = list(upscaling)
    n, h, w, c = src.shape
    x = _pixelwise_2x2(src.reshape(n * h * w, c), conv1)  # rows (n, y, x, dy1, dx1)
    x = act1(F.layer_norm(x, (x.shape[-1],), norm.weight, norm.bias, norm.eps))
    x = act2(_pixelwise_2x2(x, conv2))  # rows (n, y, x, dy1, dx1, dy2, dx2)
    classes = hyper.shape[1]
    values = torch.bmm(x.view(n, -1, x.shape[-1]), hyper.transpose(1, 2))  # N×(16hw)×L
    masks = values.view(n, h, w, 2, 2, 2, 2, classes).permute(0, 7, 1, 3, 5, 2, 4, 6).reshape(n, classes, 4 * h, 4 * w)
    if skip is None:
        return masks
    index = range(n) if image_index is None else image_index.tolist()
    flat = skip.flatten(2)  # B×C/8×16hw
    return masks + torch.stack([hyper[i] @ flat[b] for i, b in enumerate(index)]).view_as(masks)


def reference_masks(sam: nn.Module, embeddings: torch.Tensor, boxes: torch.Tensor, image_index: torch.Tensor,
                    num_classes: int = 1, skip: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """The same logits and IoU from segment-anything's modules called as they are (the oracle).

    Every prompt carries its own copy of its window and of the positional encoding,
    ``TwoWayTransformer`` and ``output_upscaling`` run channels-first: what
    ``MaskDecoder.predict_masks`` does, for N prompts over B windows. The tests hold
    :func:`~napari_retsam.sam.decoder.decode_prompts` to it and ``benchmarks/bench_decoder.py``
    times both.
    """
    decoder = sam.mask_decoder
    sparse, dense = sam.prompt_encoder(points=None, boxes=boxes, masks=None)
    n = boxes.shape[0]
    tokens = torch.cat([decoder.iou_token.weight, decoder.mask_tokens.weight], dim=0).unsqueeze(0).expand(n, -1, -1)
    tokens = torch.cat((tokens, sparse), dim=1)
    src = embeddings.index_select(0, image_index) + dense
    pos = torch.repeat_interleave(sam.prompt_encoder.get_dense_pe(), n, dim=0)
    b, c, h, w = src.shape
    hs, src = decoder.transformer(src, pos, tokens)
    up = decoder.output_upscaling(src.transpose(1, 2).view(b, c, h, w))
    if skip is not None:
        up = up + skip.index_select(0, image_index)
    hyper = torch.stack([decoder.output_hypernetworks_mlps[t](hs[:, 1 + t]) for t in range(num_classes)], dim=1)
    _, uc, uh, uw = up.shape
    masks = (hyper @ up.view(n, uc, uh * uw)).view(n, num_classes, uh, uw)
    return masks, decoder.iou_prediction_head(hs[:, 0])[:, :num_classes]
