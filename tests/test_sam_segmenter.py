"""Segmenter: values against a hand-run pipeline, caching, tiling, boxes, classes."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from napari_retsam.errors import RetsamInputError
from napari_retsam.sam.embeddings import EmbeddingCache, embedding_signature, image_sha256, signature_key
from napari_retsam.sam.preprocess import boxes_to_input, postprocess_logits, prepare_image
from napari_retsam.sam.segmenter import Cancelled, Segmenter


@pytest.fixture
def image():
    rng = np.random.default_rng(5)
    return rng.integers(0, 256, size=(90, 120, 3), dtype=np.uint8)


class CountingEmbed:
    """Wrap ``model.embed`` to count encoder passes."""

    def __init__(self, model):
        self.calls = 0
        self._orig = model.embed
        model.embed = self

    def __call__(self, batch, **kwargs):
        self.calls += 1
        return self._orig(batch, **kwargs)


def _manual_whole_image(model, image, box):
    prepared = prepare_image(image, model.img_size)
    with torch.no_grad():
        emb = model.embed(prepared.tensor[None])
        box_in = boxes_to_input(np.array([box]), prepared.original_size, prepared.input_size)
        low = model.decode(emb, torch.tensor(box_in, dtype=torch.float32)[None])[0, 0]
        logits = postprocess_logits(low, model.img_size, prepared.input_size, prepared.original_size)
    return torch.sigmoid(logits.double()).float().numpy()[0]


def test_whole_image_result_equals_hand_run_pipeline(tiny_sam, image):
    box = [10.0, 5.0, 100.0, 80.0]
    result = Segmenter(tiny_sam).segment(image, [box], tile=0, clip_to_boxes=False)
    assert result.prob.shape == (90, 120) and result.prob.dtype == np.float32
    assert result.mask.dtype == bool and np.array_equal(result.mask, result.prob >= 0.5)
    assert 0.0 <= result.prob.min() and result.prob.max() <= 1.0
    np.testing.assert_allclose(result.prob, _manual_whole_image(tiny_sam, image, box), atol=1e-6)
    assert result.tiles == [(0, 0, 90, 120)] and result.n_embedded == 1
    assert set(np.unique(result.labels)) <= {0, 1}
    assert np.array_equal(result.labels == 1, result.mask)


def test_masks_are_kept_inside_their_boxes_by_default(tiny_sam, image):
    box = [10.2, 5.0, 99.6, 80.0]
    full = _manual_whole_image(tiny_sam, image, box)
    result = Segmenter(tiny_sam).segment(image, [box], tile=0)
    inside = np.zeros(full.shape, bool)
    inside[5:81, 10:101] = True  # floor(x0)..ceil(x1), floor(y0)..ceil(y1), inclusive
    np.testing.assert_allclose(result.prob[inside], full[inside], atol=1e-6)
    assert np.all(result.prob[~inside] == 0.0) and not result.mask[~inside].any()
    # two boxes: the union of the two clipped masks (maximum where they overlap)
    second = [60.0, 40.0, 119.0, 89.0]
    both = Segmenter(tiny_sam).segment(image, [box, second], tile=0)
    covered = inside.copy()
    covered[40:90, 60:120] = True
    assert np.all(both.prob[~covered] == 0.0)
    assert np.all(both.prob[inside] >= result.prob[inside] - 1e-6)


def test_second_call_reuses_embedding(tiny_sam, image):
    counter = CountingEmbed(tiny_sam)
    segmenter = Segmenter(tiny_sam)
    first = segmenter.segment(image, [[10, 10, 60, 60]], tile=64, overlap=16)
    calls = counter.calls
    assert calls == first.n_embedded == len(first.tiles) >= 2
    second = segmenter.segment(image, [[10, 10, 60, 60], [70, 20, 110, 85]], tile=64, overlap=16)
    new_tiles = set(second.tiles) - set(first.tiles)
    assert counter.calls - calls == second.n_embedded == len(new_tiles)
    third = segmenter.segment(image, [[10, 10, 60, 60]], tile=64, overlap=16)
    assert third.n_embedded == 0 and np.array_equal(third.prob, first.prob)
    # different pixels -> new embedding
    assert segmenter.segment(image[::-1].copy(), [[10, 10, 60, 60]], tile=0).n_embedded == 1


def test_tile_larger_than_image_equals_whole_image_mode(tiny_sam, image):
    seg = Segmenter(tiny_sam)
    whole = seg.segment(image, [[3, 4, 110, 80]], tile=None)
    big = seg.segment(image, [[3, 4, 110, 80]], tile=512, overlap=64)
    assert np.array_equal(whole.prob, big.prob)


def test_tiled_pixels_covered_by_one_window_equal_that_window_alone(tiny_sam, image):
    box = [5.0, 5.0, 115.0, 85.0]
    result = Segmenter(tiny_sam).segment(image, [box], tile=64, overlap=16, clip_to_boxes=False)
    first = (0, 0, 64, 64)
    assert first in result.tiles
    # window (0,0)-(64,64) alone, prompted with its part of the box (5,5)-(63,63)
    expected = _manual_whole_image(tiny_sam, image[:64, :64], [5.0, 5.0, 63.0, 63.0])
    # grid starts: y 0, 26; x 0, 48, 56 -> pixels y < 26, x < 48 lie in window (0, 0) only
    assert sorted({t[0] for t in result.tiles}) == [0, 26] and sorted({t[1] for t in result.tiles}) == [0, 48, 56]
    np.testing.assert_allclose(result.prob[:26, :48], expected[:26, :48], atol=1e-6)
    assert not np.allclose(result.prob[30:64, 50:64], expected[30:64, 50:64], atol=1e-6)  # blended there
    # outside every window of the box: probability 0
    assert np.all(result.prob >= 0) and np.all(np.isfinite(result.prob))


def test_boxes_union_and_validation(tiny_sam, image):
    seg = Segmenter(tiny_sam)
    a, b = [5, 5, 50, 60], [60, 30, 115, 88]
    both = seg.segment(image, [a, b], tile=0).prob
    union = np.maximum(seg.segment(image, [a], tile=0).prob, seg.segment(image, [b], tile=0).prob)
    np.testing.assert_allclose(both, union, atol=1e-6)  # batch of 2 vs 1: float rounding only
    flipped = seg.segment(image, [[50, 60, 5, 5]], tile=0)
    assert np.array_equal(flipped.prob, seg.segment(image, [a], tile=0).prob)
    clipped = seg.segment(image, [[-20, -10, 300, 40]], tile=0)
    assert np.array_equal(clipped.boxes, [[0, 0, 119, 40]])
    with pytest.raises(RetsamInputError, match="wholly outside"):
        seg.segment(image, [[200, 10, 300, 40]], tile=0)
    with pytest.raises(RetsamInputError, match="zero area"):
        seg.segment(image, [[10, 10, 10, 40]], tile=0)
    with pytest.raises(RetsamInputError, match="no boxes"):
        seg.segment(image, [], tile=0)
    whole = seg.segment(image, None, tile=0)
    assert np.array_equal(whole.boxes, [[0, 0, 119, 89]])


def test_any_image_type(tiny_sam, image):
    seg = Segmenter(tiny_sam)
    rgba = np.dstack([image, np.zeros(image.shape[:2], np.uint8)])
    assert np.array_equal(seg.segment(rgba, None, tile=0).prob, seg.segment(image, None, tile=0).prob)
    gray16 = (image[..., 0].astype(np.uint16) * 200)
    out = seg.segment(gray16, None, tile=0)
    assert out.prob.shape == (90, 120)


def test_multi_class_labels(tiny_sam, image):
    tiny_sam.num_classes = 2
    result = Segmenter(tiny_sam).segment(image, [[5, 5, 100, 80]], tile=0)
    assert result.probs.shape == (2, 90, 120)
    assert np.array_equal(result.prob, result.probs.max(axis=0))
    labels = result.labels
    assert set(np.unique(labels)) <= {0, 1, 2}
    best = result.probs.argmax(axis=0) + 1
    assert np.array_equal(labels[result.mask], best[result.mask]) and np.all(labels[~result.mask] == 0)


def test_progress_and_cancel(tiny_sam, image):
    seen = []
    Segmenter(tiny_sam).segment(image, None, tile=64, overlap=8, progress=lambda d, t, m: seen.append((d, t, m)))
    assert seen[-1][0] == seen[-1][1] and any("embedding" in m for _, _, m in seen)
    with pytest.raises(Cancelled):
        Segmenter(tiny_sam).segment(image, None, tile=64, overlap=8, should_stop=lambda: True)


def test_memory_cache_is_bounded_in_bytes():
    cache = EmbeddingCache(max_bytes=1000)
    for i in range(3):
        cache.put({"k": i}, torch.zeros(100))  # 400 bytes each
    assert len(cache) == 2 and cache.nbytes == 800
    assert cache.get({"k": 0}) is None and cache.get({"k": 2}) is not None
    cache.put({"k": "huge"}, torch.zeros(1000))  # larger than the whole budget: not kept
    assert cache.get({"k": "huge"}) is None


def test_disk_cache_reuse_mismatch_and_corruption(tiny_sam, image, tmp_path):
    disk = tmp_path / "emb"
    first = Segmenter(tiny_sam, cache=EmbeddingCache(disk_dir=disk)).segment(image, None, tile=0)
    assert first.n_embedded == 1 and len(list(disk.glob("*.pt"))) == 1
    fresh = EmbeddingCache(disk_dir=disk)
    again = Segmenter(tiny_sam, cache=fresh).segment(image, None, tile=0)
    assert again.n_embedded == 0 and fresh.disk_hits == 1 and np.array_equal(again.prob, first.prob)

    signature = embedding_signature(tiny_sam, image_sha256(image), (0, 0, 90, 120))
    path = disk / f"{signature_key(signature)}.pt"
    # an entry whose stored signature differs (e.g. another package version) is not used
    stale = dict(signature, package_version="0.0.0-other")
    torch.save({"signature": stale, "embedding": torch.full((32, 4, 4), 99.0)}, path)
    cache = EmbeddingCache(disk_dir=disk)
    counter = CountingEmbed(tiny_sam)
    out = Segmenter(tiny_sam, cache=cache).segment(image, None, tile=0)
    assert counter.calls == 1 and cache.rejected == 1 and np.array_equal(out.prob, first.prob)
    # the recomputed entry replaced the stale one
    assert torch.load(path, weights_only=True)["signature"] == signature
    # a corrupt file is recomputed, not used
    path.write_bytes(b"\x00garbage")
    cache = EmbeddingCache(disk_dir=disk)
    out = Segmenter(tiny_sam, cache=cache).segment(image, None, tile=0)
    assert counter.calls == 2 and cache.rejected == 1 and np.array_equal(out.prob, first.prob)


def test_signature_changes_with_model_and_tile(tiny_sam, tiny_finetuned_checkpoint):
    from napari_retsam.sam.checkpoints import load_sam

    sig = embedding_signature(tiny_sam, "abc", (0, 0, 10, 10))
    assert set(sig) == {"image_sha256", "encoder_sha256", "model_type", "img_size", "preprocess", "tile",
                        "precision", "package_version", "shape", "dtype"}
    assert sig["shape"] == [32, 4, 4] and sig["dtype"] == "float32"  # what the tiny encoder gives
    assert signature_key(sig) != signature_key(embedding_signature(tiny_sam, "abc", (0, 0, 10, 11)))
    other = tiny_sam.__class__(tiny_sam.sam, model_type="tiny", config=tiny_sam.config)  # unknown weights
    assert signature_key(sig) != signature_key(embedding_signature(other, "abc", (0, 0, 10, 10)))
    # a fine-tuned decoder over the same base shares the encoder's embeddings
    finetuned = load_sam(tiny_finetuned_checkpoint, device="cpu")
    assert signature_key(sig) == signature_key(embedding_signature(finetuned, "abc", (0, 0, 10, 10)))


def test_auto_mode_turns_generator_masks_into_probability(tiny_sam, image, monkeypatch):
    import segment_anything

    from napari_retsam.sam.auto import auto_segment

    small = np.zeros((90, 120), bool)
    small[10:20, 10:40] = True  # 300 px
    big = np.zeros((90, 120), bool)
    big[:, :100] = True  # 9000 px: the "whole fundus" kind of mask
    records = [
        {"segmentation": small, "area": 300, "predicted_iou": 0.9},
        {"segmentation": big, "area": 9000, "predicted_iou": 0.97},
        {"segmentation": np.roll(small, 5, axis=0), "area": 300, "predicted_iou": 1.2},
    ]

    class FakeGenerator:
        def __init__(self, sam, **kwargs):
            assert sam is tiny_sam.sam and kwargs["points_per_side"] == 8
            self.kwargs = kwargs

        def generate(self, rgb):
            assert rgb.shape == (90, 120, 3) and rgb.dtype == np.uint8
            return records

    monkeypatch.setattr(segment_anything, "SamAutomaticMaskGenerator", FakeGenerator)
    result = auto_segment(tiny_sam, image, points_per_side=8, max_area_fraction=0.05)
    expected = np.zeros((90, 120), np.float32)
    expected[10:20, 10:40] = 0.9
    expected[15:25, 10:40] = 1.0  # IoU clipped to 1, max over masks
    assert np.array_equal(result.prob, expected) and np.array_equal(result.mask, expected >= 0.5)


def test_auto_mode_runs_the_real_generator(tiny_sam, image):
    from napari_retsam.sam.auto import auto_segment

    result = auto_segment(tiny_sam, image, points_per_side=4, pred_iou_thresh=0.0, stability_score_thresh=0.0,
                          max_area_fraction=1.0)
    assert result.prob.shape == (90, 120) and result.prob.dtype == np.float32
    assert 0.0 <= result.prob.min() and result.prob.max() <= 1.0
    with pytest.raises(RetsamInputError):
        auto_segment(tiny_sam, image, points_per_side=0)


def test_trained_fusion_is_applied_and_its_memo_follows_weight_changes(tiny_finetuned_checkpoint, image):
    from napari_retsam.sam.checkpoints import load_sam

    model = load_sam(tiny_finetuned_checkpoint, device="cpu")
    assert not model.fusion.is_identity()
    seg = Segmenter(model)
    box = [10.0, 5.0, 100.0, 80.0]
    np.testing.assert_allclose(seg.segment(image, [box], tile=0, clip_to_boxes=False).prob,
                               _manual_whole_image(model, image, box), atol=1e-6)
    with torch.no_grad():
        model.fusion.conv2.weight.mul_(3.0)  # in-place change, as an optimiser step does
    changed = seg.segment(image, [box], tile=0, clip_to_boxes=False)
    assert changed.n_embedded == 0  # encoder output still cached ...
    np.testing.assert_allclose(changed.prob, _manual_whole_image(model, image, box), atol=1e-6)  # ... fusion redone


def test_cancel_takes_effect_inside_one_encoder_pass(lite_medsam):
    """Whole-image mode has one encoder pass: Cancel must not wait for it to end (block-level check)."""
    import time

    from napari_retsam.sam.embeddings import EmbeddingCache

    image = np.zeros((256, 256, 3), np.uint8)
    calls = {"n": 0, "messages": []}

    def should_stop() -> bool:
        calls["n"] += 1
        return calls["n"] > 3  # stop after the pass has started

    start = time.perf_counter()
    segmenter = Segmenter(lite_medsam, cache=EmbeddingCache())
    with pytest.raises(Cancelled):
        segmenter.segment(image, None, tile=None, should_stop=should_stop,
                          progress=lambda d, t, m: calls["messages"].append(m))
    assert calls["n"] == 4  # one check before the window, then one per encoder block until the stop
    assert len(segmenter.cache) == 0  # nothing half-computed was cached
    assert any("(block " in m for m in calls["messages"])


def test_progress_has_a_time_estimate_per_window(tiny_sam):
    image = np.zeros((100, 100, 3), np.uint8)
    messages = []
    Segmenter(tiny_sam).segment(image, None, tile=32, overlap=4, progress=lambda d, t, m: messages.append((d, m)))
    windows = [m for _, m in messages if m.startswith("embedding window")]
    assert windows[0].startswith("embedding window 1/") and "s left" not in windows[0]
    assert all("s left" in m for m in windows[1:])
    assert [d for d, _ in messages] == sorted(d for d, _ in messages)


def test_auto_mode_takes_the_whole_image_embedding_from_the_cache(tiny_sam, image):
    from napari_retsam.sam.auto import auto_segment
    from napari_retsam.sam.embeddings import EmbeddingCache

    kwargs = dict(points_per_side=4, pred_iou_thresh=0.0, stability_score_thresh=0.0, max_area_fraction=1.0)
    cache = EmbeddingCache()
    first = auto_segment(tiny_sam, image, cache=cache, **kwargs)
    assert first.n_embedded == 1 and cache.misses == 1
    again = auto_segment(tiny_sam, image, cache=cache, **kwargs)
    assert again.n_embedded == 0 and cache.misses == 1 and cache.hits == 1
    np.testing.assert_array_equal(again.prob, first.prob)
    # the entry is the Segmenter's whole-image window: box prompting after it runs the decoder only
    result = Segmenter(tiny_sam, cache=cache).segment(image, [[10, 5, 100, 80]], tile=0)
    assert result.n_embedded == 0
    # a cancelled run stops (inside the encoder pass or before a prompt batch)
    from napari_retsam.progress import Cancelled

    with pytest.raises(Cancelled):
        auto_segment(tiny_sam, image, should_stop=lambda: True, **kwargs)


def test_unchanged_prompts_are_not_decoded_again(tiny_finetuned_checkpoint, image):
    """Live editing: only the (window, box) prompts that changed run the decoder; the result is
    the same as a fresh segmenter's, and a weight change of the decoder or fusion block decodes again."""
    from napari_retsam.sam.checkpoints import load_sam

    model = load_sam(tiny_finetuned_checkpoint, device="cpu")
    seg = Segmenter(model)
    boxes = [[5.0, 5.0, 50.0, 40.0], [70.0, 30.0, 115.0, 85.0]]
    first = seg.segment(image, boxes, tile=64, overlap=16)
    assert first.n_decoded >= 2
    assert seg.segment(image, boxes, tile=64, overlap=16).n_decoded == 0  # a re-run: nothing to decode

    moved = [boxes[0], [72.0, 30.0, 115.0, 85.0]]  # the user drags the second box
    fresh = Segmenter(model).segment(image, moved, tile=64, overlap=16)
    again = seg.segment(image, moved, tile=64, overlap=16)
    assert 0 < again.n_decoded < fresh.n_decoded == first.n_decoded  # only the second box's windows
    np.testing.assert_allclose(again.probs, fresh.probs, atol=1e-6)

    for module in (model.sam.mask_decoder, model.fusion):  # a training step changes either
        with torch.no_grad():
            next(module.parameters()).mul_(1.5)
        changed = seg.segment(image, moved, tile=64, overlap=16)
        assert changed.n_embedded == 0 and changed.n_decoded == fresh.n_decoded
        np.testing.assert_allclose(changed.probs, Segmenter(model).segment(image, moved, tile=64, overlap=16).probs,
                                   atol=1e-6)
        assert not np.allclose(changed.probs, again.probs, atol=1e-4)
