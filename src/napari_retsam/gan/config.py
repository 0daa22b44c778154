"""Settings of the fundus/vessel GAN (plain Python, no torch).

A :class:`GanConfig` is stored in every checkpoint as a plain dict
(:meth:`GanConfig.to_dict`), so a checkpoint says which resolution, mode and
architecture it was trained with and sampling can refuse a mismatch.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields
from typing import Any

from napari_retsam.errors import RetsamInputError

__all__ = ["GanConfig", "MODES"]

#: ``"paired"``: noise → (image, mask). ``"conditional"``: (mask, noise) → image.
MODES: tuple[str, ...] = ("paired", "conditional")


@dataclass(frozen=True)
class GanConfig:
    """Architecture and optimisation settings.

    Defaults follow the method: Adam with learning rate 2e-4 and β1 = 0.5,
    14,000 iterations, three colour channels, K = 3 discriminator scales,
    feature-matching weight β = 10, resolution 512 px.

    Attributes
    ----------
    size: side of the square training/generated images in pixels (a power of
        two, ≥ 16).
    mode: ``"paired"`` (noise → RGB image + vessel mask) or ``"conditional"``
        (vessel mask + noise → RGB image).
    z_dim: length of the noise vector z ~ N(0, I).
    g_channels: generator feature channels at full resolution; they double at
        each 2× lower resolution up to ``g_max_channels``.
    d_channels: channels of the first discriminator layer (doubling per layer up
        to ``d_max_channels``).
    d_layers: stride-2 convolutions per discriminator (PatchGAN depth).
    scales: number K of discriminators, D_k sees the input downsampled 2^(k-1)×.
    beta: weight β of the feature-matching loss.
    lr, beta1, beta2: Adam settings for both networks.
    iterations: generator updates in a full run.
    batch_size: pairs per iteration (per process under torchrun).
    seed: seeds weights, data order, augmentation and noise.
    sample_every: write a sample grid every N iterations (0: never).
    checkpoint_every: write ``last.pt`` / ``generator_last.pt`` every N iterations.
    """

    size: int = 512
    mode: str = "paired"
    z_dim: int = 128
    g_channels: int = 32
    g_max_channels: int = 256
    d_channels: int = 64
    d_max_channels: int = 256
    d_layers: int = 3
    scales: int = 3
    beta: float = 10.0
    lr: float = 2e-4
    beta1: float = 0.5
    beta2: float = 0.999
    iterations: int = 14_000
    batch_size: int = 1
    seed: int = 0
    sample_every: int = 500
    checkpoint_every: int = 500

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        """Raise :class:`RetsamInputError` on a setting that cannot work."""
        if not isinstance(self.size, int) or self.size < 16 or 2 ** int(round(math.log2(self.size))) != self.size:
            raise RetsamInputError(f"GAN size must be a power of two >= 16 (e.g. 64, 256, 512), got {self.size!r}")
        if self.mode not in MODES:
            raise RetsamInputError(f"GAN mode must be one of {', '.join(MODES)}, got {self.mode!r}")
        positive = ("z_dim", "g_channels", "g_max_channels", "d_channels", "d_max_channels", "d_layers",
                    "scales", "iterations", "batch_size", "checkpoint_every")
        for name in positive:
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
                raise RetsamInputError(f"GAN setting {name} must be a positive integer, got {value!r}")
        if not isinstance(self.sample_every, int) or self.sample_every < 0:
            raise RetsamInputError(f"sample_every must be an integer >= 0, got {self.sample_every!r}")
        if not isinstance(self.seed, int) or isinstance(self.seed, bool):
            raise RetsamInputError(f"seed must be an integer, got {self.seed!r}")
        if self.size >> (self.scales - 1) < 8:
            raise RetsamInputError(
                f"{self.scales} discriminator scales need size >= {8 << (self.scales - 1)} px, got {self.size}")
        for name in ("beta", "lr", "beta1", "beta2"):
            value = getattr(self, name)
            if not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
                raise RetsamInputError(f"GAN setting {name} must be a finite number >= 0, got {value!r}")
        if self.lr <= 0 or self.beta1 >= 1 or self.beta2 >= 1:
            raise RetsamInputError("Adam needs lr > 0 and 0 <= beta1, beta2 < 1")

    def to_dict(self) -> dict[str, Any]:
        """Plain dict (ints, floats, strings) for checkpoints and manifests."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> GanConfig:
        """Inverse of :meth:`to_dict`; unknown keys are ignored."""
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in names})

    def replace(self, **changes: Any) -> GanConfig:
        """A copy with some settings changed (validated)."""
        data = self.to_dict()
        data.update(changes)
        return GanConfig(**data)

    @property
    def architecture(self) -> dict[str, Any]:
        """The settings that fix the weight shapes (must match to load or resume)."""
        keys = ("size", "mode", "z_dim", "g_channels", "g_max_channels", "d_channels",
                "d_max_channels", "d_layers", "scales")
        return {k: getattr(self, k) for k in keys}
