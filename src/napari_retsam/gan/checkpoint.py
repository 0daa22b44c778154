"""Generator checkpoints: what they hold, loading them and checking them (torch).

A generator checkpoint (``generator_last.pt``) is a plain dict::

    {"format": "napari-retsam-gan-generator", "format_version": 1,
     "config": GanConfig.to_dict(), "generator": state_dict,
     "has_masks": bool,            # False: trained image-only, mask output untrained
     "fov_template": S×S bool tensor,
     "iteration": int, "dataset": {"name": str, "split": str, "n_images": int}}

The full training state (``last.pt``, see :mod:`napari_retsam.gan.train`)
contains one of these under ``"generator_checkpoint"``; both files are accepted
wherever a generator checkpoint is asked for. Everything loads with
``torch.load(path, map_location="cpu", weights_only=True)``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from napari_retsam.errors import RetsamInputError
from napari_retsam.gan.config import GanConfig
from napari_retsam.io_utils import load_torch_checkpoint

__all__ = ["GENERATOR_FORMAT", "GENERATOR_FORMAT_VERSION", "TRAIN_FORMAT", "TRAIN_FORMAT_VERSION", "GeneratorCheckpoint",
           "load_checkpoint_dict", "load_generator", "validate_checkpoint_dict"]

GENERATOR_FORMAT = "napari-retsam-gan-generator"
TRAIN_FORMAT = "napari-retsam-gan-train"
#: Newest ``format_version`` of each format this version reads (newer files are refused).
GENERATOR_FORMAT_VERSION = 1
TRAIN_FORMAT_VERSION = 1


@dataclass
class GeneratorCheckpoint:
    """A loaded generator with what its checkpoint says about it."""

    generator: Any  # napari_retsam.gan.models.Generator (torch.nn.Module)
    config: GanConfig
    has_masks: bool
    fov_template: np.ndarray
    iteration: int
    dataset: dict[str, Any]
    path: Path | None

    @property
    def size(self) -> int:
        return self.config.size

    @property
    def mode(self) -> str:
        return self.config.mode


def load_checkpoint_dict(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Read a checkpoint file (``weights_only=True``); RetsamInputError if unusable.

    A generator or training-state dict is validated field by field
    (:func:`validate_checkpoint_dict`); a dict of another format is returned as is
    for the caller to refuse.
    """
    data = load_torch_checkpoint(
        path,
        missing="GAN checkpoint not found: {path}",
        unreadable="cannot read GAN checkpoint {path}: {error_type}: {error_text}",
        not_dict="{path} is not a napari-retsam GAN checkpoint",
    )
    validate_checkpoint_dict(data, path)
    return data


def _validate_generator(data: dict[str, Any], source: Any, prefix: str = "") -> None:
    from napari_retsam.checkpoint_fields import CheckpointFields

    f = CheckpointFields(data, source, "GAN checkpoint", prefix)
    f.format_version(supported=GENERATOR_FORMAT_VERSION)
    raw = f.mapping("config")
    try:
        config = GanConfig.from_dict(raw)
    except RetsamInputError as exc:
        f.fail("config", f"is invalid: {exc}")
    except (TypeError, ValueError, OverflowError) as exc:
        f.fail("config", f"is invalid: {type(exc).__name__}: {exc}")
    f.tensors("generator", allow_empty=False)
    f.flag("has_masks")
    f.tensor("fov_template", shape=(config.size, config.size))
    f.integer("iteration", lo=0, hi=config.iterations)
    dataset = f.mapping("dataset", optional=True)
    if dataset is not None:
        d = f.sub("dataset")
        d.text("name", optional=True, allow_none=True)
        d.text("split", optional=True, allow_none=True)
        d.integer("n_images", lo=0, optional=True, allow_none=True)


def validate_checkpoint_dict(data: dict[str, Any], source: Any = "the checkpoint") -> None:
    """Check every field of a generator (``generator_last.pt``) or training-state (``last.pt``) dict.

    One :class:`RetsamInputError` line names the file and the field (a missing field, a
    wrong type, a negative or out-of-range counter, NaN/inf weights, a ``format_version``
    newer than this version reads). Dicts of another ``format`` are left alone.
    """
    from napari_retsam.checkpoint_fields import CheckpointFields

    fmt = data.get("format")
    if fmt == GENERATOR_FORMAT:
        _validate_generator(data, source)
        return
    if fmt != TRAIN_FORMAT:
        return
    f = CheckpointFields(data, source, "GAN checkpoint")
    f.format_version(supported=TRAIN_FORMAT_VERSION)
    generator = f.mapping("generator_checkpoint")
    if generator.get("format") != GENERATOR_FORMAT:
        f.fail("generator_checkpoint.format", f"must be {GENERATOR_FORMAT}, got {generator.get('format')!r}")
    _validate_generator(generator, source, "generator_checkpoint.")
    f.tensors("discriminator", allow_empty=False)
    f.integer("discriminator_in_channels", lo=1, hi=64)
    f.optimizer("opt_g")
    f.optimizer("opt_d")
    iteration = f.integer("iteration", lo=0)
    if iteration != generator["iteration"]:
        f.fail("iteration", f"is {iteration}, but its generator_checkpoint is at iteration {generator['iteration']}")
    f.integer("cursor", lo=0)
    f.integer("world_size", lo=1, hi=65536)
    f.rng_state("torch_rng_state")


def _generator_dict(data: dict[str, Any], path: Path | str) -> dict[str, Any]:
    if data.get("format") == TRAIN_FORMAT:
        data = data.get("generator_checkpoint", {})
    if not isinstance(data, dict) or data.get("format") != GENERATOR_FORMAT:
        raise RetsamInputError(f"{path} is not a napari-retsam GAN generator checkpoint "
                               "(expected generator_last.pt or last.pt written by 'retsam gan train')")
    return data


def load_generator(source: str | os.PathLike[str] | dict[str, Any], *, expect_size: int | None = None,
                   expect_mode: str | None = None, device: str | None = None) -> GeneratorCheckpoint:
    """Load a generator from a checkpoint path (or an already loaded dict).

    ``expect_size`` / ``expect_mode`` refuse a checkpoint of another resolution
    or mode with a :class:`RetsamInputError` naming both.
    """
    import torch

    from napari_retsam.gan.models import Generator

    if isinstance(source, dict):
        validate_checkpoint_dict(source)
        path, data = None, _generator_dict(source, "checkpoint")
    else:
        path = Path(source)
        data = _generator_dict(load_checkpoint_dict(path), path)
    config = GanConfig.from_dict(data["config"])
    where = path if path is not None else "the checkpoint"
    if expect_size is not None and config.size != expect_size:
        raise RetsamInputError(f"{where} is a {config.size} px generator, but {expect_size} px was asked for")
    if expect_mode is not None and config.mode != expect_mode:
        raise RetsamInputError(f"{where} is a {config.mode} generator, not {expect_mode}")
    generator = Generator(config)
    try:
        generator.load_state_dict(data["generator"])
    except RuntimeError as exc:
        raise RetsamInputError(f"{where} does not match its own architecture settings: {exc}") from exc
    generator.eval()
    if device is not None:
        generator.to(device)
    fov = data["fov_template"]
    fov = fov.numpy().astype(bool) if isinstance(fov, torch.Tensor) else np.asarray(fov, dtype=bool)
    return GeneratorCheckpoint(generator, config, bool(data["has_masks"]), fov, int(data["iteration"]),
                               dict(data.get("dataset", {})), path)
