"""Generator and multi-scale discriminators of the fundus/vessel GAN (torch).

Value conventions (all tensors are B×C×H×W, float32):

- RGB images are in [-1, 1]: ``x = uint8 / 127.5 - 1``.
- Vessel masks enter the discriminators in [-1, 1] (``2 m - 1``, m ∈ [0, 1]).
  The generator emits mask *logits*; ``sigmoid(logit)`` is the vessel
  probability and ``> 0.5`` the exported binary mask.

Generator (``mode="paired"``): z ∈ R^{z_dim} ~ N(0, I) → linear → 4×4 map →
log2(size/4) blocks [2× nearest upsampling, two 3×3 conv + pixel norm +
LeakyReLU(0.2)] → 1×1 conv to 4 channels: tanh(RGB) and the mask logit.

Generator (``mode="conditional"``): the same decoder, fed by a convolutional
encoder of the vessel mask and the field of view (two input channels in
[-1, 1]; U-Net skip connections at every resolution) and, at the 4×4
bottleneck, by the projected noise z. Output: tanh(RGB) only; the mask of the
pair is the input mask, so image and mask agree by construction. The FOV
channel tells a patch where the dark border of the fundus lies.

Discriminators: D_1..D_K, PatchGAN style; D_k sees the (image, mask) pair
average-pooled 2^(k-1)× (3×3 window, stride 2, per step). Each D_k returns the
outputs of its T = d_layers + 1 intermediate blocks followed by its patch score
map, so the feature-matching loss can use the intermediate ones.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from napari_retsam.gan.config import GanConfig

__all__ = [
    "Generator",
    "PatchDiscriminator",
    "MultiScaleDiscriminator",
    "build_generator",
    "build_discriminator",
    "downsample",
]


class PixelNorm(nn.Module):
    """Per-pixel feature normalisation: x / sqrt(mean_c(x²) + 1e-8).

    Independent of the batch, so training and sampling behave the same and a
    batch of one is fine.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * torch.rsqrt(x.pow(2).mean(dim=1, keepdim=True) + 1e-8)


def _conv_block(c_in: int, c_out: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(c_in, c_out, 3, padding=1),
        PixelNorm(),
        nn.LeakyReLU(0.2),
        nn.Conv2d(c_out, c_out, 3, padding=1),
        PixelNorm(),
        nn.LeakyReLU(0.2),
    )


class Generator(nn.Module):
    """Noise (and, conditionally, a vessel mask) → RGB image (+ mask logits).

    ``forward(z, mask=None, fov=None)`` returns ``(image, mask_logits)``: image
    B×3×S×S in [-1, 1]; mask_logits B×1×S×S. In conditional mode ``mask``
    (B×1×S×S in [0, 1]) is required, ``fov`` (B×1×S×S in [0, 1]) defaults to
    all ones, and the returned "logits" are ±20 copies of the mask
    (sigmoid(±20) rounds to exactly 0/1), so both modes share one interface.
    """

    def __init__(self, config: GanConfig) -> None:
        super().__init__()
        self.config = config
        self.conditional = config.mode == "conditional"
        self.n_up = int(math.log2(config.size // 4))
        ch = [min(config.g_channels * 2 ** (self.n_up - j), config.g_max_channels) for j in range(self.n_up + 1)]
        self.channels = ch
        self.project = nn.Linear(config.z_dim, ch[0] * 16)
        if self.conditional:
            # Encoder: full resolution → 4×4, keeping the feature map of every level as a skip.
            # PixelNorm here too: with N(0, 0.02) weights an unnormalised full-resolution skip is
            # ~50x weaker than the decoder features it joins, and thin vessels then never reach the image.
            self.enc_in = nn.Sequential(nn.Conv2d(2, ch[self.n_up], 3, padding=1), PixelNorm(), nn.LeakyReLU(0.2))
            self.enc_down = nn.ModuleList(
                nn.Sequential(nn.Conv2d(ch[j], ch[j - 1], 4, stride=2, padding=1), PixelNorm(), nn.LeakyReLU(0.2))
                for j in range(self.n_up, 0, -1)
            )
            self.bottleneck = _conv_block(2 * ch[0], ch[0])
            self.up = nn.ModuleList(_conv_block(ch[j - 1] + ch[j], ch[j]) for j in range(1, self.n_up + 1))
            out_channels = 3
        else:
            self.bottleneck = _conv_block(ch[0], ch[0])
            self.up = nn.ModuleList(_conv_block(ch[j - 1], ch[j]) for j in range(1, self.n_up + 1))
            out_channels = 4
        self.to_output = nn.Conv2d(ch[self.n_up], out_channels, 1)

    def forward(self, z: torch.Tensor, mask: torch.Tensor | None = None,
                fov: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        b = z.shape[0]
        h = F.leaky_relu(self.project(z).view(b, self.channels[0], 4, 4), 0.2)
        skips: list[torch.Tensor] = []
        if self.conditional:
            if mask is None:
                raise ValueError("conditional generator needs a vessel mask")
            if fov is None:
                fov = torch.ones_like(mask)
            e = self.enc_in(torch.cat([mask, fov.to(mask.dtype)], dim=1) * 2.0 - 1.0)
            skips.append(e)
            for down in self.enc_down:
                e = down(e)
                skips.append(e)
            # skips[-1] is the 4×4 encoding; skips[-1 - j] has resolution 4·2^j.
            h = self.bottleneck(torch.cat([h, skips[-1]], dim=1))
        else:
            h = self.bottleneck(h)
        for j, block in enumerate(self.up, start=1):
            h = F.interpolate(h, scale_factor=2.0, mode="nearest")
            if self.conditional:
                h = torch.cat([h, skips[-1 - j]], dim=1)
            h = block(h)
        out = self.to_output(h)
        image = torch.tanh(out[:, :3].float())
        if self.conditional:
            assert mask is not None
            logits = (mask > 0.5).to(image.dtype) * 40.0 - 20.0
        else:
            logits = out[:, 3:4].float()
        return image, logits


class PatchDiscriminator(nn.Module):
    """One PatchGAN discriminator.

    Blocks: conv4×4/2 + LeakyReLU(0.2); (d_layers − 1) × [conv4×4/2 + instance
    norm + LeakyReLU]; conv4×4/1 + instance norm + LeakyReLU; final conv4×4/1
    → one score per patch. ``forward`` returns the d_layers + 1 intermediate
    block outputs followed by the score map.
    """

    def __init__(self, in_channels: int, channels: int, max_channels: int, layers: int) -> None:
        super().__init__()
        first = nn.Sequential(nn.Conv2d(in_channels, channels, 4, stride=2, padding=2), nn.LeakyReLU(0.2))
        blocks: list[nn.Module] = [first]
        c = channels
        for _ in range(1, layers):
            c_next = min(2 * c, max_channels)
            blocks.append(nn.Sequential(nn.Conv2d(c, c_next, 4, stride=2, padding=2),
                                        nn.InstanceNorm2d(c_next), nn.LeakyReLU(0.2)))
            c = c_next
        c_next = min(2 * c, max_channels)
        blocks.append(nn.Sequential(nn.Conv2d(c, c_next, 4, stride=1, padding=2),
                                    nn.InstanceNorm2d(c_next), nn.LeakyReLU(0.2)))
        blocks.append(nn.Conv2d(c_next, 1, 4, stride=1, padding=2))
        self.blocks = nn.ModuleList(blocks)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        features = []
        for block in self.blocks:
            x = block(x)
            features.append(x)
        return features


def downsample(x: torch.Tensor) -> torch.Tensor:
    """2× average pooling (3×3 window, stride 2, padding 1, padding not counted)."""
    return F.avg_pool2d(x, 3, stride=2, padding=1, count_include_pad=False)


class MultiScaleDiscriminator(nn.Module):
    """D_1..D_K; D_k judges the input downsampled 2^(k-1) times.

    ``forward(x)`` returns a list (length K) of feature lists (see
    :class:`PatchDiscriminator`).
    """

    def __init__(self, in_channels: int, config: GanConfig) -> None:
        super().__init__()
        self.in_channels = in_channels
        self.discriminators = nn.ModuleList(
            PatchDiscriminator(in_channels, config.d_channels, config.d_max_channels, config.d_layers)
            for _ in range(config.scales)
        )

    def forward(self, x: torch.Tensor) -> list[list[torch.Tensor]]:
        outputs = []
        for k, d in enumerate(self.discriminators):
            if k > 0:
                x = downsample(x)
            outputs.append(d(x))
        return outputs


def _init_weights(module: nn.Module) -> None:
    """N(0, 0.02) convolution/linear weights, zero biases (DCGAN initialisation)."""
    for m in module.modules():
        if isinstance(m, (nn.Conv2d, nn.Linear)):
            nn.init.normal_(m.weight, 0.0, 0.02)
            if m.bias is not None:
                nn.init.zeros_(m.bias)


def build_generator(config: GanConfig, seed: int | None = None) -> Generator:
    """A freshly initialised generator; ``seed`` makes the weights reproducible
    without touching torch's global random state."""
    with torch.random.fork_rng(devices=[]):
        if seed is not None:
            torch.manual_seed(seed)
        g = Generator(config)
        _init_weights(g)
    return g


def build_discriminator(config: GanConfig, with_mask: bool, seed: int | None = None) -> MultiScaleDiscriminator:
    """Multi-scale discriminators on RGB (+ mask when ``with_mask``)."""
    with torch.random.fork_rng(devices=[]):
        if seed is not None:
            torch.manual_seed(seed)
        d = MultiScaleDiscriminator(4 if with_mask else 3, config)
        _init_weights(d)
    return d
