"""Registry, Feature Fusion Block and the batched decoding path vs plain segment-anything."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from napari_retsam.errors import RetsamInputError
from napari_retsam.sam.decoder import decode_prompts
from napari_retsam.sam.fusion import FeatureFusionBlock
from napari_retsam.sam.models import MODEL_CONFIGS, build_sam
from napari_retsam.sam.preprocess import prepare_image


def _plain_predict(sam, embedding_1chw, boxes_k4):
    """segment-anything's own path for one image and K boxes: all mask tokens."""
    sparse, dense = sam.prompt_encoder(points=None, boxes=boxes_k4, masks=None)
    masks, iou = sam.mask_decoder.predict_masks(
        image_embeddings=embedding_1chw,
        image_pe=sam.prompt_encoder.get_dense_pe(),
        sparse_prompt_embeddings=sparse,
        dense_prompt_embeddings=dense,
    )
    return masks, iou


@pytest.mark.parametrize("name", ["vit_b", "vit_l", "vit_h"])
def test_registry_matches_segment_anything_architecture(name):
    from segment_anything import sam_model_registry

    from napari_retsam.sam.models import _build_plain_sam

    with torch.device("meta"):
        ours = _build_plain_sam(MODEL_CONFIGS[name]).state_dict()
        theirs = sam_model_registry[name]().state_dict()
    assert {k: tuple(v.shape) for k, v in ours.items()} == {k: tuple(v.shape) for k, v in theirs.items()}


def test_tiny_config_sizes_and_unknown_type():
    model = build_sam("tiny", seed=0)
    assert model.img_size == 64 and model.config.embedding_size == 4
    emb = model.embed(torch.zeros(1, 3, 64, 64))
    assert emb.shape == (1, 32, 4, 4)
    assert model.decode(emb, torch.tensor([[[2.0, 3.0, 40.0, 50.0]]])).shape == (1, 1, 1, 16, 16)
    with pytest.raises(RetsamInputError, match="unknown model type"):
        build_sam("vit_x")
    assert type(model.config).from_dict(model.config.to_dict()) == model.config


def test_fusion_block_is_exact_identity_until_trained():
    block = FeatureFusionBlock(32, 8)
    emb = torch.randn(2, 32, 5, 6)
    assert torch.equal(block(emb), emb)  # computed path (autograd on)
    assert torch.equal(block.correction(emb), torch.zeros_like(emb))
    with torch.no_grad():
        assert block.is_identity() and torch.equal(block(emb), emb)  # inference shortcut
    with torch.no_grad():
        block.conv2.weight.normal_()
    assert not torch.allclose(block(emb), emb)
    block.reset_identity()
    assert torch.equal(block(emb), emb)
    with pytest.raises(ValueError):
        block(torch.randn(1, 16, 4, 4))


def test_untrained_model_equals_plain_sam_forward_end_to_end(tiny_sam, monkeypatch):
    """embed + decode (fusion included) == segment-anything's Sam.forward low-res logits to 1e-5
    (on the exact fp32 path; the default "auto" precision is bf16 on CPUs that have it)."""
    monkeypatch.setattr(tiny_sam, "encoder_precision", "fp32")
    rng = np.random.default_rng(3)
    image = rng.integers(0, 256, size=(48, 60, 3), dtype=np.uint8)
    prepared = prepare_image(image, tiny_sam.img_size)
    boxes = torch.tensor([[4.0, 5.0, 50.0, 40.0], [10.0, 2.0, 30.0, 35.0]])
    # Sam.forward normalises and pads itself: give it the resized 0..255 image.
    mean = tiny_sam.sam.pixel_mean
    std = tiny_sam.sam.pixel_std
    h, w = prepared.input_size
    resized = prepared.tensor[:, :h, :w] * std + mean
    plain = tiny_sam.sam([{"image": resized, "original_size": (48, 60), "boxes": boxes}], multimask_output=False)
    with torch.no_grad():
        ours = tiny_sam.decode(tiny_sam.embed(prepared.tensor), boxes[None])
    torch.testing.assert_close(ours[0], plain[0]["low_res_logits"], rtol=1e-5, atol=1e-5)
    # And with exactly the same embedding, the decoder path equals predict_masks to float rounding
    # (sam/two_way.py re-orders the arithmetic: per-window image side, one GEMM per block, pixel rows).
    with torch.no_grad():
        emb = tiny_sam.embed(prepared.tensor)
        ref, _ = _plain_predict(tiny_sam.sam, emb, boxes)
        torch.testing.assert_close(tiny_sam.decode(emb, boxes[None])[0], ref[:, :1], rtol=1e-5, atol=1e-5)


def test_one_image_one_box_and_k_boxes_equal_predict_masks(tiny_sam):
    torch.manual_seed(0)
    emb = torch.randn(1, 32, 4, 4)
    one = torch.tensor([[3.0, 4.0, 40.0, 33.0]])
    many = torch.tensor([[3.0, 4.0, 40.0, 33.0], [0.0, 0.0, 63.0, 63.0], [20.0, 10.0, 30.0, 60.0]])
    with torch.no_grad():
        for boxes in (one, many):
            ref, ref_iou = _plain_predict(tiny_sam.sam, emb, boxes)
            out, iou = decode_prompts(tiny_sam.sam, emb, boxes, torch.zeros(len(boxes)), return_iou=True)
            assert out.shape == (len(boxes), 1, 16, 16)
            torch.testing.assert_close(out, ref[:, :1], rtol=1e-5, atol=1e-5)  # same function, re-ordered arithmetic
            torch.testing.assert_close(iou, ref_iou[:, :1], rtol=1e-5, atol=1e-5)


def test_b_images_with_one_box_each_use_their_own_embedding(tiny_sam):
    torch.manual_seed(1)
    emb = torch.randn(3, 32, 4, 4)
    boxes = torch.tensor([[[1.0, 2.0, 30.0, 40.0]], [[5.0, 5.0, 60.0, 60.0]], [[10.0, 0.0, 20.0, 63.0]]])
    with torch.no_grad():
        out = tiny_sam.decode(emb, boxes)
        assert out.shape == (3, 1, 1, 16, 16)
        for b in range(3):
            ref, _ = _plain_predict(tiny_sam.sam, emb[b : b + 1], boxes[b])
            torch.testing.assert_close(out[b], ref[:, :1], rtol=0, atol=1e-6)
        # segment-anything's predict_masks itself gets this case wrong (repeats every image per prompt):
        sparse, dense = tiny_sam.sam.prompt_encoder(points=None, boxes=boxes[:, 0], masks=None)
        with pytest.raises(RuntimeError):
            tiny_sam.sam.mask_decoder.predict_masks(emb, tiny_sam.sam.prompt_encoder.get_dense_pe(), sparse, dense)
        # the image_index form: prompts in any order, several per image
        index = torch.tensor([2, 0, 2, 1])
        flat = torch.tensor([[1.0, 1.0, 9.0, 9.0], [2.0, 2.0, 50.0, 50.0], [3.0, 3.0, 40.0, 20.0], [0.0, 0.0, 63.0, 63.0]])
        mixed = tiny_sam.decode(emb, flat, image_index=index, chunk_size=3)
        for n in range(4):
            ref, _ = _plain_predict(tiny_sam.sam, emb[index[n] : index[n] + 1], flat[n : n + 1])
            torch.testing.assert_close(mixed[n], ref[0, :1], rtol=0, atol=1e-6)


def test_multi_class_model_returns_one_mask_per_class(tiny_sam_checkpoint):
    from napari_retsam.sam.checkpoints import load_sam

    model = load_sam(tiny_sam_checkpoint, device="cpu")
    model.num_classes = 3
    torch.manual_seed(2)
    emb = torch.randn(2, 32, 4, 4)
    boxes = torch.tensor([[[1.0, 2.0, 30.0, 40.0], [4.0, 4.0, 20.0, 20.0]], [[5.0, 5.0, 60.0, 60.0], [0.0, 0.0, 8.0, 8.0]]])
    with torch.no_grad():
        out = model.decode(emb, boxes)
        assert out.shape == (2, 2, 3, 16, 16)
        ref, _ = _plain_predict(model.sam, emb[1:2], boxes[1])
        torch.testing.assert_close(out[1], ref[:, :3], rtol=0, atol=1e-6)
    with pytest.raises(RetsamInputError):
        build_sam("tiny", num_classes=5)


def test_decode_is_differentiable_for_decoder_and_fusion(tiny_sam):
    emb = torch.randn(2, 32, 4, 4)
    boxes = torch.tensor([[[1.0, 2.0, 30.0, 40.0]], [[5.0, 5.0, 60.0, 60.0]]])
    logits = tiny_sam.decode(emb, boxes)
    assert logits.requires_grad
    logits.sigmoid().mean().backward()
    assert tiny_sam.fusion.conv2.weight.grad is not None and tiny_sam.fusion.conv2.weight.grad.abs().sum() > 0
    grads = [p.grad for p in tiny_sam.sam.mask_decoder.parameters() if p.grad is not None]
    assert grads and any(g.abs().sum() > 0 for g in grads)


def test_vit_b_shaped_decode_shapes(vit_b_sam):
    emb = torch.randn(2, 256, 64, 64)
    boxes = torch.tensor([[[10.0, 20.0, 500.0, 600.0]], [[0.0, 0.0, 1023.0, 1023.0]]])
    with torch.no_grad():
        out = vit_b_sam.decode(emb, boxes)
    assert vit_b_sam.img_size == 1024
    assert out.shape == (2, 1, 1, 256, 256)
    assert torch.isfinite(out).all()


def test_package_import_is_light_and_names_resolve_lazily():
    import subprocess
    import sys

    code = (
        "import sys, napari_retsam.sam as s; assert 'torch' not in sys.modules; "
        "assert callable(s.load_sam) and s.Segmenter.__name__ == 'Segmenter' and 'torch' in sys.modules"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_window_attention_bias_is_materialised_right_and_follows_weight_changes():
    """The 4-D bias handed to SDPA (its fused kernel) equals the broadcast relative-offset bias,
    and the inference copy kept between calls is rebuilt when the weights change."""
    from napari_retsam.sam.tiny_vit import WindowAttention

    torch.manual_seed(0)
    attn = WindowAttention(dim=8, num_heads=2, window=3)
    with torch.no_grad():
        attn.attention_biases.normal_()
    x = torch.randn(4, 9, 8)

    def reference(x):
        b, n, c = x.shape
        qkv = attn.qkv(attn.norm(x)).view(b, n, 2, 12).permute(0, 2, 1, 3)
        q, k, v = qkv.split(4, dim=-1)
        bias = attn.attention_biases[:, attn.attention_bias_idxs]  # heads × N × N, broadcast over windows
        scores = (q @ k.transpose(-2, -1)) * 4 ** -0.5 + bias
        return attn.proj((scores.softmax(-1) @ v).transpose(1, 2).reshape(b, n, c))

    with torch.no_grad():
        assert torch.allclose(attn(x), reference(x), atol=1e-6)
        assert attn._bias_cache is not None and attn._bias_cache[1].shape == (4, 2, 9, 9)
        attn.attention_biases.add_(torch.randn_like(attn.attention_biases))  # weights change in place
        assert torch.allclose(attn(x), reference(x), atol=1e-6)
        assert torch.allclose(attn(x[:2]), reference(x[:2]), atol=1e-6)  # another window count
    out = attn(x)  # with autograd: the bias takes part in the graph
    out.sum().backward()
    assert attn.attention_biases.grad is not None and attn.attention_biases.grad.abs().sum() > 0


@pytest.mark.parametrize("window", [1, 3, 7, 14])
def test_offset_index_matches_the_pairwise_definition(window):
    """The vectorised offset numbering equals the row-by-row scan that defines the weights' layout."""
    import itertools

    from napari_retsam.sam.tiny_vit import offset_index

    cells = list(itertools.product(range(window), range(window)))
    offsets: dict[tuple[int, int], int] = {}
    expected = [offsets.setdefault((abs(p[0] - q[0]), abs(p[1] - q[1])), len(offsets)) for p in cells for q in cells]
    index, n_offsets = offset_index(window)
    assert n_offsets == len(offsets) == window * window
    assert index.dtype == torch.long and index.view(-1).tolist() == expected
