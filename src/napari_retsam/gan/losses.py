"""Losses of the fundus/vessel GAN (torch).

The objective (pix2pixHD-style multi-scale GAN with feature matching)::

    min_G ( max_{D_1..D_K} Σ_k L_GAN(G, D_k) + β Σ_k L_FM(G, D_k) )

L_GAN is the least-squares GAN loss (LSGAN, Mao et al. 2017), averaged over
the patch scores s = D_k(·) of each scale:

    discriminator:  L_D = Σ_k [ mean((s_k(real) − 1)²) + mean(s_k(fake)²) ]
    generator:      L_G,GAN = Σ_k mean((s_k(fake) − 1)²)

The feature-matching loss of scale k over its T intermediate layers:

    L_FM(G, D_k) = E Σ_{i=1..T} (1/N_i) ‖D_k^(i)(real) − D_k^(i)(fake)‖₁

with N_i the number of elements of layer i of one sample and E the mean over
the batch, i.e. ``mean(|f_real − f_fake|)`` per layer. D acts only as a feature
extractor in this term: the real features are detached and the loss is used for
the generator update only.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

__all__ = ["lsgan_d_loss", "lsgan_g_loss", "feature_matching_loss"]


def lsgan_d_loss(real_outputs: Sequence[Sequence[torch.Tensor]],
                 fake_outputs: Sequence[Sequence[torch.Tensor]]) -> torch.Tensor:
    """Σ_k [mean((D_k(real) − 1)²) + mean(D_k(fake)²)]; the score is each list's last entry."""
    total = real_outputs[0][-1].new_zeros(())
    for real, fake in zip(real_outputs, fake_outputs, strict=True):
        total = total + ((real[-1] - 1.0) ** 2).mean() + (fake[-1] ** 2).mean()
    return total


def lsgan_g_loss(fake_outputs: Sequence[Sequence[torch.Tensor]]) -> torch.Tensor:
    """Σ_k mean((D_k(G(z)) − 1)²)."""
    total = fake_outputs[0][-1].new_zeros(())
    for fake in fake_outputs:
        total = total + ((fake[-1] - 1.0) ** 2).mean()
    return total


def feature_matching_loss(real_outputs: Sequence[Sequence[torch.Tensor]],
                          fake_outputs: Sequence[Sequence[torch.Tensor]]) -> torch.Tensor:
    """Σ_k L_FM(G, D_k) = Σ_k Σ_{i=1..T} mean(|D_k^(i)(real) − D_k^(i)(fake)|).

    Each ``*_outputs[k]`` is the feature list of D_k whose last entry is the
    patch score map; the T = len − 1 entries before it are the intermediate
    layers. Real features are detached, so gradients reach the generator (via
    the fake features) and never push D.
    """
    total = real_outputs[0][-1].new_zeros(())
    for real, fake in zip(real_outputs, fake_outputs, strict=True):
        if len(real) != len(fake):
            raise ValueError("real and fake feature lists differ in length")
        for f_real, f_fake in zip(real[:-1], fake[:-1], strict=True):
            total = total + (f_real.detach() - f_fake).abs().mean()
    return total
