"""The Feature Fusion Block (FFB): CNN feature correction of SAM's image embedding.

SAM's ViT encoder sees the image in 16×16 patches, so its embedding is weak on
structures a few pixels wide such as retinal vessels. The FFB adds a local
convolutional branch on the embedding ``E`` (B×C×h×w) and fuses it with the
transformer features as a residual correction before the mask decoder::

    F(E) = E + conv3x3_2( GELU( LN( conv3x3_1(E) ) ) )

``conv3x3_1``: C -> H channels, ``LN``: channel LayerNorm (SAM's ``LayerNorm2d``),
``conv3x3_2``: H -> C channels. ``conv3x3_2`` starts with zero weight and bias, so
an untrained block is exactly the identity (``F(E) == E`` bit for bit) and a
model that has not been fine-tuned gives exactly plain SAM's output (at
inference, with autograd off, an identity block skips its convolutions). Fine-tuning
learns the correction; the block's weights travel in the project's checkpoints
(key ``"fusion"``, with ``"fusion_config"`` = ``{"channels": C, "hidden": H}``).
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

    def __init__(self, channels: int, hidden: int | None = None) -> None:
        super().__init__()
        if channels < 1:
            raise ValueError("channels must be positive")
        hidden = int(hidden) if hidden else max(8, channels // 4)
        self.channels = int(channels)
        self.hidden = hidden
        self.conv1 = nn.Conv2d(channels, hidden, kernel_size=3, padding=1)
        self.norm = LayerNorm2d(hidden)
        self.act = nn.GELU()
        self.conv2 = nn.Conv2d(hidden, channels, kernel_size=3, padding=1)
        self.reset_identity()

    def reset_identity(self) -> None:
        """Zero the last convolution so the block is exactly the identity again."""
        nn.init.zeros_(self.conv2.weight)
        nn.init.zeros_(self.conv2.bias)

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
        """True while the last convolution is all zeros (the block returns E unchanged)."""
        return not bool(torch.any(self.conv2.weight)) and not bool(torch.any(self.conv2.bias))

    def config(self) -> dict[str, Any]:
        """Plain-value description stored next to the weights in checkpoints."""
        return {"channels": self.channels, "hidden": self.hidden}
