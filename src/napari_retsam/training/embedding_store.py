"""Frozen-encoder embeddings (or encoder inputs) of the training tiles.

Decoder-only fine-tuning never changes the image encoder, so each tile's
embedding ``E = encoder(prepare(tile))`` is computed once, through the SAM
engine's :class:`~napari_retsam.sam.embeddings.EmbeddingCache`: in memory for
the run and, with ``cache_dir``, on disk as signed entries (the signature names
the image bytes' SHA-256, the encoder's identity, the preprocessing version and
the tile window; a mismatched or unreadable file is recomputed, never used).
The signatures are the ones :class:`~napari_retsam.sam.segmenter.Segmenter` uses,
so training, validation and later segmentation of the same image share entries.

In full fine-tuning the encoder changes at every step: the store keeps the
3×S×S encoder inputs instead and :meth:`EmbeddingStore.batch` runs the encoder
(with gradients) on each batch. ``cache=False`` keeps the inputs too and runs
the frozen encoder (no gradients) at every step: the uncached baseline of the
benchmark, and an option for machines short of memory.

Distributed runs share the disk cache: :meth:`register` computes only the tiles
this rank owns (registration index ``% world == rank``); each entry is written
atomically (temporary file + rename); after a barrier :meth:`fill_from_disk`
reads the entries the other ranks wrote.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch

__all__ = ["EmbeddingStore"]


class EmbeddingStore:
    """Keys -> embeddings (frozen encoder) or encoder inputs (full fine-tuning)."""

    def __init__(
        self,
        model: torch.nn.Module,
        *,
        full_finetune: bool = False,
        cache: bool = True,
        cache_dir: str | Path | None = None,
        world_size: int = 1,
        rank: int = 0,
        max_bytes: int = 8 << 30,
        precision: str | None = None,
    ) -> None:
        from napari_retsam.sam.embeddings import EmbeddingCache

        self.model = model
        self.full = bool(full_finetune)
        self.keep_inputs = self.full or not cache
        self.cache = EmbeddingCache(max_bytes=max_bytes, disk_dir=cache_dir)
        self.world_size = world_size
        self.rank = rank
        self.tensors: dict[str, torch.Tensor] = {}
        #: encoder inputs kept for a fusion block with a pixel branch (it reads the tile's pixels every step)
        self.pixels: dict[str, torch.Tensor] = {}
        self.keep_pixels = bool(getattr(model, "uses_pixels", False))
        self.signatures: dict[str, dict[str, Any]] = {}
        self.encoder_calls = 0
        #: encoder precision of the stored embeddings (None: the model's own setting)
        self.precision = precision

    @contextlib.contextmanager
    def _encoder_precision(self) -> Iterator[None]:
        """The model's encoder at this store's precision (signatures and passes alike), restored after."""
        saved = getattr(self.model, "encoder_precision", None)
        if self.precision is None or saved is None:
            yield
            return
        self.model.encoder_precision = self.precision
        try:
            yield
        finally:
            self.model.encoder_precision = saved

    @torch.no_grad()
    def _encode(self, tile_rgb: np.ndarray) -> torch.Tensor:
        self.encoder_calls += 1
        tensor = self.model.preprocess(tile_rgb)
        return self.model.embed(tensor.unsqueeze(0))[0].detach().to("cpu", torch.float32).contiguous()

    def register(self, image_rgb: np.ndarray, image_hash: str, window: tuple[int, int, int, int]) -> str:
        """Make the tile ``window`` (y0, x0, y1, x1) of ``image_rgb`` available; return its key."""
        from napari_retsam.sam.embeddings import embedding_signature, signature_key

        with self._encoder_precision():
            signature = embedding_signature(self.model, image_hash, window)
        key = signature_key(signature)
        if key in self.signatures:
            return key
        index = len(self.signatures)
        self.signatures[key] = signature
        y0, x0, y1, x1 = window
        tile = np.ascontiguousarray(image_rgb[y0:y1, x0:x1])
        if self.keep_pixels:
            self.pixels[key] = self.model.preprocess(tile).detach().cpu()
        if self.keep_inputs:
            self.tensors[key] = self.model.preprocess(tile).detach().cpu()
            return key
        cached = self.cache.get(signature)
        if cached is not None:
            self.tensors[key] = cached
        elif index % self.world_size == self.rank:
            with self._encoder_precision():
                embedding = self._encode(tile)
            self.cache.put(signature, embedding)
            self.tensors[key] = embedding
        return key

    def fill_from_disk(self) -> None:
        """After a barrier: read the embeddings the other ranks computed (distributed runs)."""
        if self.keep_inputs:
            return
        for key, signature in self.signatures.items():
            if key not in self.tensors:
                embedding = self.cache.get(signature)
                if embedding is None:
                    raise RuntimeError(f"embedding {key[:12]}… is missing from the shared cache {self.cache.disk_dir}")
                self.tensors[key] = embedding

    def batch_pixels(self, keys: list[str], device: torch.device) -> torch.Tensor | None:
        """B×3×S×S encoder inputs for ``keys`` (None when the model's fusion reads no pixels)."""
        if not self.keep_pixels:
            return None
        source = self.tensors if self.keep_inputs else self.pixels
        return torch.stack([source[k] for k in keys]).to(device)

    def batch(self, keys: list[str], device: torch.device) -> torch.Tensor:
        """B×C×h×w embeddings for ``keys`` on ``device``.

        Cached mode: the stored embeddings. Full fine-tuning: the encoder runs on
        the stored inputs with gradients. ``cache=False``: the frozen encoder runs
        on the stored inputs under ``no_grad`` (every step).
        """
        stacked = torch.stack([self.tensors[k] for k in keys]).to(device)
        if not self.keep_inputs:
            return stacked
        self.encoder_calls += len(keys)
        if self.full:
            return self.model.embed(stacked)
        with torch.no_grad(), self._encoder_precision():
            return self.model.embed(stacked)
