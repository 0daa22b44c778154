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

__all__ = ["GanConfig", "MODES", "UNITS"]

#: ``"conditional"`` (the default): (vessel mask, FOV, noise) → image, so every pair
#: is right by construction. ``"paired"``: noise → (image, mask), the method's
#: unconditional mode, whose masks must be learnt and can disagree with the image.
MODES: tuple[str, ...] = ("conditional", "paired")

#: The training unit. ``"patch"``: ``size``-px crops of the images at their native
#: resolution (the scale of the segmentation tiles), so a CPU hour is enough.
#: ``"image"``: whole images, cropped to the FOV and resized to ``size``.
UNITS: tuple[str, ...] = ("patch", "image")


@dataclass(frozen=True)
class GanConfig:
    """Architecture and optimisation settings.

    The objective follows the method: LSGAN over K = 3 discriminator scales +
    feature matching with β = 10, Adam with learning rate 2e-4 and β1 = 0.5.
    The defaults are the measured CPU choice (see the README's GAN section):
    mask-conditioned synthesis on 256-px patches at native resolution (the
    segmentation tile), 16 generator / 32 discriminator channels at full
    resolution, bf16 autocast where the CPU has it, 6,000 iterations (about
    40 minutes on 2 CPU cores). The method's full-image setting is
    ``unit="image", size=512, iterations=14000, g_channels=32, d_channels=64``.

    Attributes
    ----------
    size: side of the square training/generated images in pixels (a power of
        two, ≥ 16).
    mode: ``"conditional"`` (vessel mask + FOV + noise → RGB image) or
        ``"paired"`` (noise → RGB image + vessel mask).
    unit: ``"patch"`` (random ``size``-px crops at native resolution) or
        ``"image"`` (whole images fitted into ``size`` px).
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
    amp: bf16 autocast of both networks on a CPU with native bf16 (or CUDA);
        ignored elsewhere. About 1.4–1.8× faster per iteration on such CPUs.
    """

    size: int = 256
    mode: str = "conditional"
    unit: str = "patch"
    z_dim: int = 128
    g_channels: int = 16
    g_max_channels: int = 256
    d_channels: int = 32
    d_max_channels: int = 256
    d_layers: int = 3
    scales: int = 3
    beta: float = 10.0
    lr: float = 2e-4
    beta1: float = 0.5
    beta2: float = 0.999
    iterations: int = 6_000
    batch_size: int = 1
    seed: int = 0
    sample_every: int = 500
    checkpoint_every: int = 500
    amp: bool = True

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        """Raise :class:`RetsamInputError` on a setting that cannot work."""
        if not isinstance(self.size, int) or self.size < 16 or 2 ** int(round(math.log2(self.size))) != self.size:
            raise RetsamInputError(f"GAN size must be a power of two >= 16 (e.g. 64, 256, 512), got {self.size!r}")
        if self.mode not in MODES:
            raise RetsamInputError(f"GAN mode must be one of {', '.join(MODES)}, got {self.mode!r}")
        if self.unit not in UNITS:
            raise RetsamInputError(f"GAN training unit must be one of {', '.join(UNITS)}, got {self.unit!r}")
        if self.unit == "patch" and self.mode != "conditional":
            raise RetsamInputError("patch training needs the conditional mode (a paired generator "
                                   "draws whole images with their FOV); use --unit image for --mode paired")
        if not isinstance(self.amp, bool):
            raise RetsamInputError(f"amp must be true or false, got {self.amp!r}")
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
        """Inverse of :meth:`to_dict`; unknown keys are ignored. A dict written
        before the training unit existed trained on whole images."""
        names = {f.name for f in fields(cls)}
        values = {k: v for k, v in data.items() if k in names}
        values.setdefault("unit", "image")
        return cls(**values)

    def replace(self, **changes: Any) -> GanConfig:
        """A copy with some settings changed (validated)."""
        data = self.to_dict()
        data.update(changes)
        return GanConfig(**data)

    @property
    def architecture(self) -> dict[str, Any]:
        """The settings that fix the weight shapes (must match to load or resume)."""
        keys = ("size", "mode", "unit", "z_dim", "g_channels", "g_max_channels", "d_channels",
                "d_max_channels", "d_layers", "scales")
        return {k: getattr(self, k) for k in keys}
