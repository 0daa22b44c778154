"""Image-embedding cache: in memory (LRU bounded in bytes) and optionally on disk.

An embedding is identified by its *signature*, a dict of plain values::

    {"image_sha256": SHA-256 of the image's uint8 RGB pixels and shape,
     "encoder_sha256": RetsamSam.encoder_sha256 (the base checkpoint's hash),
     "model_type": ..., "img_size": S,
     "preprocess": the preprocessing rule with the model's normalisation,
     "tile": [y0, x0, y1, x1] (the image window that was embedded),
     "precision": "fp32" or the reduced precision of the encoder pass (e.g. "bfloat16"),
     "package_version": napari_retsam.__version__}

The signature also holds ``"shape": [C, h, w]`` and ``"dtype": "float32"``, what the
encoder gives for this model.

The key is the SHA-256 of the signature's canonical JSON. On disk an entry is
``<dir>/<key>.pt`` holding ``{"signature": ..., "embedding": tensor, "sha256": ...}``
(written atomically, read with ``weights_only=True``), where ``sha256`` is the
content checksum of the tensor (:func:`tensor_sha256`: its shape, dtype and bytes).
An entry that cannot be read, whose stored signature differs from the requested
one, whose tensor is not of the signature's shape and dtype, holds NaN/inf, or
whose checksum does not match its tensor (a perturbed or bit-flipped file) is
dropped with one warning (:class:`EmbeddingCacheWarning`), recomputed and
overwritten: never used, so the cache does not stay poisoned.
"""

from __future__ import annotations

import hashlib
import json
import os
import warnings
from collections import OrderedDict
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from napari_retsam import __version__
from napari_retsam.io_utils import atomic_save_torch
from napari_retsam.sam.preprocess import preprocess_version

__all__ = ["EmbeddingCache", "EmbeddingCacheWarning", "embedding_signature", "image_sha256", "signature_key",
           "tensor_sha256"]


class EmbeddingCacheWarning(RuntimeWarning):
    """A disk cache entry was bad (unreadable, mismatched, corrupt) and was recomputed."""


def image_sha256(image_uint8: np.ndarray) -> str:
    """SHA-256 over the shape, dtype and bytes of an image array."""
    arr = np.ascontiguousarray(image_uint8)
    digest = hashlib.sha256()
    digest.update(repr((arr.shape, str(arr.dtype))).encode())
    digest.update(arr.tobytes())
    return digest.hexdigest()


def tensor_sha256(tensor: torch.Tensor) -> str:
    """SHA-256 over the shape, dtype and bytes of a (CPU) tensor: the content checksum of a cache entry."""
    value = tensor.detach().cpu().contiguous()
    digest = hashlib.sha256()
    digest.update(repr((tuple(value.shape), str(value.dtype))).encode())
    digest.update(value.view(torch.uint8).numpy().tobytes() if value.numel() else b"")
    return digest.hexdigest()


def _embedding_shape(model: Any) -> list[int]:
    config = getattr(model, "config", None)
    if config is None:
        return []
    side = int(config.embedding_size)
    return [int(config.prompt_embed_dim), side, side]


def embedding_signature(model: Any, image_hash: str, tile: tuple[int, int, int, int]) -> dict[str, Any]:
    """The signature of the embedding of window ``tile`` (y0, x0, y1, x1) of an image."""
    return {
        "shape": _embedding_shape(model),
        "dtype": "float32",
        "image_sha256": image_hash,
        "encoder_sha256": str(model.encoder_sha256),
        "model_type": str(model.model_type),
        "img_size": int(model.img_size),
        "preprocess": preprocess_version(getattr(getattr(model, "config", None), "normalize", "imagenet")),
        "tile": [int(v) for v in tile],
        "precision": str(getattr(model, "encoder_dtype", lambda: None)() or "fp32").replace("torch.", ""),
        "package_version": __version__,
    }


def signature_key(signature: dict[str, Any]) -> str:
    """SHA-256 hex of the canonical JSON of a signature."""
    return hashlib.sha256(json.dumps(signature, sort_keys=True).encode()).hexdigest()


class EmbeddingCache:
    """Least-recently-used in-memory cache bounded in bytes, plus an optional disk cache.

    Counters ``hits`` (memory), ``disk_hits``, ``misses`` (computed) and
    ``rejected`` (disk entries ignored as mismatched or corrupt) help tests and
    benchmarks.
    """

    def __init__(self, max_bytes: int = 1 << 30, disk_dir: str | os.PathLike[str] | None = None) -> None:
        self.max_bytes = int(max_bytes)
        self.disk_dir = Path(disk_dir) if disk_dir is not None else None
        self._items: OrderedDict[str, torch.Tensor] = OrderedDict()
        self._bytes = 0
        self.hits = 0
        self.disk_hits = 0
        self.misses = 0
        self.rejected = 0

    @property
    def nbytes(self) -> int:
        """Bytes held in memory now."""
        return self._bytes

    def __len__(self) -> int:
        return len(self._items)

    def clear(self) -> None:
        """Forget every in-memory entry (disk entries stay)."""
        self._items.clear()
        self._bytes = 0

    def _remember(self, key: str, value: torch.Tensor) -> None:
        size = value.element_size() * value.nelement()
        if size > self.max_bytes:
            return
        if key in self._items:
            old = self._items.pop(key)
            self._bytes -= old.element_size() * old.nelement()
        self._items[key] = value
        self._bytes += size
        while self._bytes > self.max_bytes and self._items:
            _, dropped = self._items.popitem(last=False)
            self._bytes -= dropped.element_size() * dropped.nelement()

    def _disk_path(self, key: str) -> Path | None:
        return None if self.disk_dir is None else self.disk_dir / f"{key}.pt"

    def _reject(self, path: Path, reason: str) -> None:
        """Drop a bad disk entry (it is recomputed and overwritten) with one warning."""
        self.rejected += 1
        try:
            path.unlink()
        except OSError:
            pass  # a read-only folder: the entry is still never used
        warnings.warn(f"embedding cache entry {path} was {reason}; it was dropped and is recomputed",
                      EmbeddingCacheWarning, stacklevel=4)

    def _read_disk(self, key: str, signature: dict[str, Any]) -> torch.Tensor | None:
        path = self._disk_path(key)
        if path is None or not path.is_file():
            return None
        try:
            entry = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as exc:  # any unreadable file is a cache miss
            self._reject(path, f"unreadable ({type(exc).__name__})")
            return None
        if not isinstance(entry, dict) or not isinstance(entry.get("embedding"), torch.Tensor):
            self._reject(path, "not an embedding cache entry")
            return None
        if entry.get("signature") != signature:
            self._reject(path, "made for another image, model or version (its signature differs)")
            return None
        value = entry["embedding"]
        want_shape = tuple(signature.get("shape") or ())
        want_dtype = getattr(torch, str(signature.get("dtype", "float32")), torch.float32)
        if value.ndim != 3 or (want_shape and tuple(value.shape) != want_shape):
            self._reject(path, f"of shape {tuple(value.shape)}, expected {want_shape or 'C×h×w'}")
            return None
        if value.dtype != want_dtype:
            self._reject(path, f"of dtype {str(value.dtype).replace('torch.', '')}, expected "
                               f"{str(want_dtype).replace('torch.', '')}")
            return None
        if entry.get("sha256") != tensor_sha256(value):
            self._reject(path, "corrupt (its content checksum does not match)")
            return None
        if not bool(torch.isfinite(value).all()):
            self._reject(path, "holding NaN/inf values")
            return None
        return value

    def _write_disk(self, key: str, signature: dict[str, Any], value: torch.Tensor) -> None:
        path = self._disk_path(key)
        if path is None:
            return
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            value = value.detach().cpu().contiguous()
            atomic_save_torch({"signature": signature, "embedding": value, "sha256": tensor_sha256(value)}, path)
        except Exception:  # a full or read-only disk must not break segmentation
            pass

    def get(self, signature: dict[str, Any]) -> torch.Tensor | None:
        """The cached C×h×w embedding (CPU tensor), or None."""
        key = signature_key(signature)
        value = self._items.get(key)
        if value is not None:
            self._items.move_to_end(key)
            self.hits += 1
            return value
        value = self._read_disk(key, signature)
        if value is not None:
            self.disk_hits += 1
            self._remember(key, value)
        return value

    def put(self, signature: dict[str, Any], value: torch.Tensor) -> None:
        """Store a C×h×w embedding in memory (and on disk when enabled)."""
        key = signature_key(signature)
        value = value.detach().cpu()
        self._remember(key, value)
        self._write_disk(key, signature, value)

    def get_or_compute(self, signature: dict[str, Any], compute: Callable[[], torch.Tensor]) -> torch.Tensor:
        """Cached embedding, or ``compute()`` (C×h×w) stored and returned."""
        value = self.get(signature)
        if value is None:
            self.misses += 1
            value = compute().detach().cpu()
            self.put(signature, value)
        return value
