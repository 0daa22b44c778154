"""The Feature Fusion Block (FFB): CNN feature correction of SAM's image embedding.

SAM's ViT encoder sees the image in 16×16 patches, so its embedding is weak on
structures a few pixels wide such as retinal vessels. The FFB adds a local
convolutional branch on the embedding ``E`` (B×C×h×w) and fuses it with the
transformer features as a residual correction before the mask decoder::

    F(E) = E + conv3x3_2( GELU( LN( conv3x3_1(E) ) ) )

``conv3x3_1``: C -> H channels, ``LN``: channel LayerNorm (SAM's ``LayerNorm2d``),
``conv3x3_2``: H -> C channels. ``conv3x3_2`` starts with zero weight and bias, so
an untrained block is exactly the identity (``F(E) == E`` bit for bit) and a
model that has not been fine-tuned gives plain SAM's output, to the decoder's float
rounding (see two_way.py); at inference, with autograd off, an identity block skips
its convolutions. Fine-tuning
learns the correction; the block's weights travel in the project's checkpoints
(key ``"fusion"``, with ``"fusion_config"`` = ``{"channels": C, "hidden": H,
"pixel_channels": P}``).

Pixel branch (``pixel_channels`` P > 0; the default of fine-tuning): the method's
"CNN features" read at full resolution. A frozen encoder that sees a tile in
4- or 16-pixel patches keeps only a coarse trace of one- to three-pixel
vessels, so the block gets a small convolutional encoder–decoder of its own
over the tile's *pixels* (the preprocessed S×S encoder input, average-pooled to
the decoder's upscaled frame 4h×4w when S is larger)::

    P1 = conv-GELU ×2 (3 -> P)            at 4h×4w
    P2 = stride-2 conv, conv (P -> 2P)    at 2h×2w
    P3 = stride-2 conv, conv (2P -> 4P)   at  h×w
    E' = E + correction(E) + Z_e(P3)                 (fused before the decoder)
    U_skip = Z_u( P1 + up(P2 + up(P3)) )             (added to the decoder's
                                                      upscaled features, C/8 channels)

``Z_e`` and ``Z_u`` are 1×1 convolutions that start at zero, so an untrained
block is still exactly the identity (``E' = E``, ``U_skip = 0``) and gives plain
SAM's output. The decoder adds ``U_skip`` to its upscaled image features before
the per-mask hypernetwork dot product (:mod:`.decoder`).
"""

from __future__ import annotations

from typing import Any

import torch
from segment_anything.modeling.common import LayerNorm2d
from torch import nn

__all__ = ["FeatureFusionBlock"]


class FeatureFusionBlock(nn.Module):
    """Residual 3×3-conv correction of an image embedding (identity at initialisation).

    Parameters
    ----------
    channels:
        Channels ``C`` of the image embedding (256 for every official SAM).
    hidden:
        Channels ``H`` of the CNN branch; default ``max(8, C // 4)``.
    """

    def __init__(self, channels: int, hidden: int | None = None, pixel_channels: int = 0) -> None:
        super().__init__()
        if channels < 1:
            raise ValueError("channels must be positive")
        if pixel_channels < 0:
            raise ValueError("pixel_channels must be >= 0")
        hidden = int(hidden) if hidden else max(8, channels // 4)
        self.channels = int(channels)
        self.hidden = hidden
        self.pixel_channels = int(pixel_channels)
        self.conv1 = nn.Conv2d(channels, hidden, kernel_size=3, padding=1)
        self.norm = LayerNorm2d(hidden)
        self.act = nn.GELU()
        self.conv2 = nn.Conv2d(hidden, channels, kernel_size=3, padding=1)
        if self.pixel_channels:
            p = self.pixel_channels
            self.pix1 = nn.Sequential(nn.Conv2d(3, p, 3, padding=1), nn.GELU(), nn.Conv2d(p, p, 3, padding=1), nn.GELU())
            self.pix2 = nn.Sequential(nn.Conv2d(p, 2 * p, 3, stride=2, padding=1), nn.GELU(),
                                      nn.Conv2d(2 * p, 2 * p, 3, padding=1), nn.GELU())
            self.pix3 = nn.Sequential(nn.Conv2d(2 * p, 4 * p, 3, stride=2, padding=1), nn.GELU(),
                                      nn.Conv2d(4 * p, 4 * p, 3, padding=1), nn.GELU())
            self.up3 = nn.Conv2d(4 * p, 2 * p, 1)
            self.up2 = nn.Sequential(nn.Conv2d(2 * p, p, 1))
            self.mix = nn.Sequential(nn.Conv2d(p, p, 3, padding=1), nn.GELU())
            self.to_embedding = nn.Conv2d(4 * p, channels, 1)
            self.to_upscaled = nn.Conv2d(p, max(1, channels // 8), 1)
        self.reset_identity()

    def reset_identity(self) -> None:
        """Zero the last convolutions so the block is exactly the identity again."""
        last = [self.conv2] + ([self.to_embedding, self.to_upscaled] if self.pixel_channels else [])
        for conv in last:
            nn.init.zeros_(conv.weight)
            nn.init.zeros_(conv.bias)

    def pixel_features(self, pixels: torch.Tensor, size: tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor]:
        """(embedding term B×C×h×w, upscaled skip B×C/8×4h×4w) from B×3×S×S encoder inputs."""
        import torch.nn.functional as F

        h, w = size
        if pixels.shape[-2:] != (4 * h, 4 * w):
            pixels = F.adaptive_avg_pool2d(pixels, (4 * h, 4 * w))
        p1 = self.pix1(pixels)
        p2 = self.pix2(p1)
        p3 = self.pix3(p2)
        m2 = p2 + F.interpolate(self.up3(p3), size=p2.shape[-2:], mode="bilinear", align_corners=False)
        m1 = p1 + F.interpolate(self.up2(m2), size=p1.shape[-2:], mode="bilinear", align_corners=False)
        return self.to_embedding(p3), self.to_upscaled(self.mix(m1))

    def fuse(
        self, embedding: torch.Tensor, pixels: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """``(E', U_skip)``: the fused embedding and the decoder's upscaled skip (None without pixel branch).

        ``pixels`` (B×3×S×S encoder inputs) are needed when the block has a pixel branch.
        """
        fused = self(embedding)
        if not self.pixel_channels:
            return fused, None
        if pixels is None:
            raise ValueError("this fusion block has a pixel branch: pass the tiles' encoder inputs (pixels=)")
        if not torch.is_grad_enabled() and self.is_identity():
            return fused, None
        term, skip = self.pixel_features(pixels.to(embedding.dtype), tuple(embedding.shape[-2:]))
        return fused + term, skip

    def correction(self, embedding: torch.Tensor) -> torch.Tensor:
        """The CNN branch alone: ``conv2(GELU(LN(conv1(E))))``, B×C×h×w."""
        return self.conv2(self.act(self.norm(self.conv1(embedding))))

    def forward(self, embedding: torch.Tensor) -> torch.Tensor:
        """Fused embedding ``E + correction(E)`` (same shape as ``E``)."""
        if embedding.ndim != 4 or embedding.shape[1] != self.channels:
            raise ValueError(
                f"expected a B×{self.channels}×h×w embedding, got shape {tuple(embedding.shape)}"
            )
        if not torch.is_grad_enabled() and self.is_identity():
            return embedding  # E + 0 == E exactly; skip two convolutions at inference
        return embedding + self.correction(embedding)

    def is_identity(self) -> bool:
        """True while the last convolutions are all zeros (the block returns E unchanged, no skip)."""
        last = [self.conv2] + ([self.to_embedding, self.to_upscaled] if self.pixel_channels else [])
        return not any(bool(torch.any(c.weight)) or bool(torch.any(c.bias)) for c in last)

    def config(self) -> dict[str, Any]:
        """Plain-value description stored next to the weights in checkpoints."""
        return {"channels": self.channels, "hidden": self.hidden, "pixel_channels": self.pixel_channels}
