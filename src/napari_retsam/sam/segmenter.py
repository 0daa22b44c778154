"""Box-prompted vessel segmentation of one 2-D image: :class:`Segmenter`.

Steps of :meth:`Segmenter.segment`:

1. normalise the image (:func:`~napari_retsam.sam.preprocess.to_uint8_rgb`) and
   validate the boxes (:func:`~napari_retsam.sam.boxes.validate_boxes`: original
   pixel-index coordinates ``x0, y0, x1, y1``, corners sorted, clipped to
   ``[0, W−1] × [0, H−1]``; a box wholly outside or of zero width/height after
   clipping is refused);
2. lay the fixed tile grid (:func:`~napari_retsam.sam.tiling.tile_grid`;
   ``tile=None``/0 = the whole image as one window);
3. embed every window that some box touches, through the
   :class:`~napari_retsam.sam.embeddings.EmbeddingCache` (so a second call on the
   same image runs the decoder only);
4. prompt each window with its part of each box (mapped to encoder-input
   pixels) and decode all prompts in batched passes;
5. per box, bring each window's logits back to the window's pixels (SAM's
   postprocessing) and blend the windows (raised-cosine weights); boxes are
   combined by the maximum logit (union of their masks); pixels no window of any
   box covers get logit −∞;
6. ``prob = sigmoid(logit)``, ``mask = prob ≥ 0.5`` (SAM's threshold 0 on logits).
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from napari_retsam.errors import RetsamInputError
from napari_retsam.sam.boxes import box_in_tile, validate_boxes
from napari_retsam.sam.embeddings import EmbeddingCache, embedding_signature, image_sha256, signature_key
from napari_retsam.sam.preprocess import boxes_to_input, postprocess_logits, to_uint8_rgb
from napari_retsam.progress import Cancelled, ProgressFn, StopFn, check_stop, report
from napari_retsam.sam.tiling import Stitcher, Tile, tile_grid

__all__ = ["Cancelled", "SegmentResult", "Segmenter"]


@dataclass
class SegmentResult:
    """Output of :meth:`Segmenter.segment` (all arrays at the original H×W)."""

    probs: np.ndarray  # L×H×W float32 in [0, 1]
    boxes: np.ndarray  # K×4 float64 boxes actually used (clipped)
    tiles: list[Tile]  # windows that were embedded/prompted
    n_embedded: int  # encoder passes run by this call (0 when all were cached)
    timings: dict[str, float] = field(default_factory=dict)
    n_decoded: int = -1  # (window, box) prompts the decoder ran for (the others were memoised); -1: unknown

    @property
    def prob(self) -> np.ndarray:
        """H×W float32 vessel probability (max over classes)."""
        return self.probs[0] if self.probs.shape[0] == 1 else self.probs.max(axis=0)

    @property
    def mask(self) -> np.ndarray:
        """H×W bool, ``prob >= 0.5``."""
        return self.prob >= 0.5

    @property
    def labels(self) -> np.ndarray:
        """H×W uint8: 0 background, ``l + 1`` where class l is the most probable and ≥ 0.5."""
        best = self.probs.argmax(axis=0)
        return np.where(self.probs.max(axis=0) >= 0.5, best + 1, 0).astype(np.uint8)


def _keep_inside_box(logits: np.ndarray, box: np.ndarray) -> np.ndarray:
    """``logits`` (L×H×W) with every pixel outside ``box`` (x0, y0, x1, y1; inclusive
    pixel-index corners) set to −inf."""
    height, width = logits.shape[-2:]
    x0, y0 = max(int(np.floor(box[0])), 0), max(int(np.floor(box[1])), 0)
    x1, y1 = min(int(np.ceil(box[2])), width - 1), min(int(np.ceil(box[3])), height - 1)
    out = np.full_like(logits, -np.inf)
    out[..., y0:y1 + 1, x0:x1 + 1] = logits[..., y0:y1 + 1, x0:x1 + 1]
    return out


class Segmenter:
    """Segment images with a :class:`~napari_retsam.sam.models.RetsamSam` from box prompts.

    ``cache``: the embedding cache (a private in-memory one by default);
    ``chunk_size``: prompts per decoder pass (4: on 2 CPU cores, 9 windows × 1 box decode at
    28 ms per prompt in passes of 4, 28 in passes of 8, 29 one by one; 16 boxes on one window
    at 24, 24 and 27 ms (``benchmarks/results/decoder.json``); passes of 8 raised the peak
    memory of a DRIVE image's segmentation by 90–220 MB; on a GPU a larger value batches more).
    """

    #: fused embeddings kept for the last windows (fusion runs once per window, not per call)
    FUSED_MEMO_SIZE = 16
    #: decoder outputs kept for the last (window, box) prompts: a prompt that did not change
    #: since the last call (the other boxes of a live edit, a re-run) is not decoded again.
    #: One entry is L×256×256 float32 (256 KiB for one class), so at most 64 MiB.
    DECODED_MEMO_SIZE = 256

    def __init__(self, model: Any, *, cache: EmbeddingCache | None = None, chunk_size: int = 4) -> None:
        self.model = model
        self.cache = cache if cache is not None else EmbeddingCache()
        self.chunk_size = int(chunk_size)
        self._fused: OrderedDict[tuple[Any, ...], torch.Tensor] = OrderedDict()
        self._decoded: OrderedDict[tuple[Any, ...], torch.Tensor] = OrderedDict()

    def _fused_embedding(
        self, window_key: str, embedding: torch.Tensor, tile_rgb: np.ndarray
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """``model.fusion.fuse(embedding, pixels)``: (1×C×h×w, 1×C/8×4h×4w skip or None), memoised on the
        window's signature key and the fusion weights (the tile's pixels are prepared only for a pixel branch)."""
        key = (window_key, self.model.fusion_state_id())
        fused = self._fused.get(key)
        if fused is None:
            pixels = self.model.prepare(tile_rgb).tensor[None] if self.model.uses_pixels else None
            with torch.no_grad():
                fused = self.model.fusion.fuse(embedding[None].to(self.model.device),
                                               None if pixels is None else pixels.to(self.model.device))
            self._fused[key] = fused
            while len(self._fused) > self.FUSED_MEMO_SIZE:
                self._fused.popitem(last=False)
        else:
            self._fused.move_to_end(key)
        return fused

    def _embed_tile(self, rgb: np.ndarray, tile: Tile, on_block: Any = None) -> torch.Tensor:
        y0, x0, y1, x1 = tile
        prepared = self.model.prepare(rgb[y0:y1, x0:x1])
        with torch.no_grad():
            return self.model.embed(prepared.tensor.unsqueeze(0).to(self.model.device), on_block=on_block)[0]

    def segment(
        self,
        image: np.ndarray,
        boxes: Sequence[Sequence[float]] | np.ndarray | None = None,
        tile: int | None = 512,
        overlap: int = 64,
        *,
        clip_to_boxes: bool = True,
        progress: ProgressFn | None = None,
        should_stop: StopFn | None = None,
    ) -> SegmentResult:
        """Segment ``image`` (H×W gray or H×W×3/4, any dtype) inside ``boxes``.

        ``boxes``: K×4 ``(x0, y0, x1, y1)`` in pixel-index coordinates of the
        image (None = whole image). ``tile``/``overlap`` in pixels; ``tile`` None
        or 0 = whole-image mode. ``clip_to_boxes`` (default): a box is the region
        of interest, so each box's mask is kept only inside that box (pixels
        ``floor(x0)..ceil(x1)``, ``floor(y0)..ceil(y1)``); pixels outside every
        box get probability 0. SAM itself may extend a box's mask beyond the box.
        Raises :class:`Cancelled` when ``should_stop()`` turns True.
        """
        start = time.perf_counter()
        rgb = to_uint8_rgb(image)
        height, width = rgb.shape[:2]
        boxes_arr = validate_boxes(boxes, height, width)
        grid = tile_grid(height, width, tile, overlap)
        blend_overlap = int(overlap) if tile else 0

        prompts: list[tuple[int, int, np.ndarray]] = []  # (tile index, box index, tile-local box)
        for k, box in enumerate(boxes_arr):
            for t, window in enumerate(grid):
                local = box_in_tile(box, window)
                if local is not None:
                    prompts.append((t, k, local))
        used = sorted({t for t, _, _ in prompts})
        image_hash = image_sha256(rgb)

        total = len(used) + 1
        misses_before = self.cache.misses
        embeddings, skips, window_keys = [], [], []
        for i, t in enumerate(used):
            check_stop(should_stop)
            signature = embedding_signature(self.model, image_hash, grid[t])
            label = f"embedding window {i + 1}/{len(used)}{_eta(time.perf_counter() - start, i, len(used))}"
            report(progress, i, total, label)

            def on_block(k: int, n: int, i: int = i, label: str = label) -> None:
                check_stop(should_stop)  # Cancel within one encoder block, not one pass
                if k:
                    report(progress, i, total, f"{label} (block {k}/{n})")

            embedding = self.cache.get_or_compute(signature, lambda t=t, cb=on_block: self._embed_tile(rgb, grid[t], cb))
            y0, x0, y1, x1 = grid[t]
            window_keys.append(signature_key(signature))
            fused, skip = self._fused_embedding(window_keys[-1], embedding, rgb[y0:y1, x0:x1])
            embeddings.append(fused[0])
            if skip is not None:
                skips.append(skip[0])
        n_embedded = self.cache.misses - misses_before
        t_embed = time.perf_counter()
        check_stop(should_stop)
        report(progress, len(used), total, "decoding")

        position = {t: i for i, t in enumerate(used)}
        size = self.model.img_size
        geometry = {}
        input_boxes = np.zeros((len(prompts), 4))
        for n, (t, _, local) in enumerate(prompts):
            y0, x0, y1, x1 = grid[t]
            original = (y1 - y0, x1 - x0)
            if t not in geometry:
                geometry[t] = (original, prepare_geometry(original, size))
            input_boxes[n] = boxes_to_input(local, original, geometry[t][1])[0]
        low_res, n_decoded = self._decode_memoised(prompts, position, embeddings, skips, window_keys, input_boxes)
        t_decode = time.perf_counter()

        n_classes = int(low_res[0].shape[0])
        combined = np.full((n_classes, height, width), -np.inf, dtype=np.float32)
        for k in range(len(boxes_arr)):
            check_stop(should_stop)
            stitcher = Stitcher((n_classes, height, width), blend_overlap)
            for n, (t, box_k, _) in enumerate(prompts):
                if box_k != k:
                    continue
                original, input_size = geometry[t]
                with torch.no_grad():
                    logits = postprocess_logits(low_res[n], size, input_size, original)
                stitcher.add(grid[t], logits.float().cpu().numpy())
            logits_k = stitcher.result(fill=-np.inf)
            if clip_to_boxes:
                logits_k = _keep_inside_box(logits_k, boxes_arr[k])
            np.maximum(combined, logits_k, out=combined)
        probs = (1.0 / (1.0 + np.exp(-combined.astype(np.float64)))).astype(np.float32)
        bad = int(np.count_nonzero(~np.isfinite(probs)))
        if bad:
            source = getattr(self.model, "source", None) or {}
            weights = source.get("finetuned") or source.get("checkpoint") or "the model's weights"
            raise RetsamInputError(
                f"the model produced a probability map with {bad} NaN/inf pixel(s); its weights ({weights}) or its "
                "input are broken, so no result is returned"
            )
        report(progress, total, total, "done")
        end = time.perf_counter()
        return SegmentResult(
            probs=probs,
            boxes=boxes_arr,
            tiles=[grid[t] for t in used],
            n_embedded=n_embedded,
            timings={"embed_s": t_embed - start, "decode_s": t_decode - t_embed, "stitch_s": end - t_decode,
                     "total_s": end - start},
            n_decoded=n_decoded,
        )

    def _decode_memoised(
        self,
        prompts: list[tuple[int, int, np.ndarray]],
        position: dict[int, int],
        embeddings: list[torch.Tensor],
        skips: list[torch.Tensor],
        window_keys: list[str],
        input_boxes: np.ndarray,
    ) -> tuple[list[torch.Tensor], int]:
        """Low-resolution logits (L×h×w) of every prompt, and how many were decoded now.

        The decoder's output is a function of the window's fused embedding (the
        window's signature and the fusion weights), the prompt-encoder and
        decoder weights and the box in the encoder frame; prompts whose key is in
        the memo reuse it, the others are decoded together in chunks.
        """
        state = (self.model.fusion_state_id(), self.model.decoder_state_id(), self.model.num_classes)
        keys = [(window_keys[position[t]], state, tuple(np.round(input_boxes[n], 4).tolist()))
                for n, (t, _, _) in enumerate(prompts)]
        out: list[torch.Tensor | None] = [self._decoded.get(key) for key in keys]
        missing = [n for n, found in enumerate(out) if found is None]
        if missing:
            device = self.model.device
            # only the windows the missing prompts use are stacked (a dragged box: one or two)
            windows = sorted({position[prompts[n][0]] for n in missing})
            row = {w: r for r, w in enumerate(windows)}
            with_skips = len(skips) == len(embeddings) and bool(skips)
            with torch.no_grad():
                stacked = torch.stack([embeddings[w] for w in windows]).to(device)
                index = torch.tensor([row[position[prompts[n][0]]] for n in missing], dtype=torch.long, device=device)
                decoded = self.model.decode(
                    stacked, torch.as_tensor(input_boxes[missing], dtype=torch.float32, device=device),
                    image_index=index, chunk_size=self.chunk_size, prefused=True,
                    skip=torch.stack([skips[w] for w in windows]).to(device) if with_skips else None,
                )
            for j, n in enumerate(missing):
                out[n] = decoded[j]
                self._decoded[keys[n]] = decoded[j].clone()  # own storage: eviction frees it
        for key in keys:
            self._decoded.move_to_end(key)
        while len(self._decoded) > self.DECODED_MEMO_SIZE:
            self._decoded.popitem(last=False)
        return out, len(missing)  # type: ignore[return-value]


def _eta(elapsed: float, done: int, total: int) -> str:
    """", about N s left" after the first window (linear estimate), else ""."""
    if done <= 0 or done >= total:
        return ""
    return f", about {elapsed / done * (total - done):.0f} s left"


def prepare_geometry(original: tuple[int, int], size: int) -> tuple[int, int]:
    """(h', w') of a window of ``original`` size inside the encoder input."""
    from napari_retsam.sam.preprocess import resized_shape

    return resized_shape(original[0], original[1], size)
