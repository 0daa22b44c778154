"""GAN networks and losses: shapes, value ranges, and losses against hand computations."""

from __future__ import annotations

import pytest
import torch
from fixtures_gan import tiny_config

from napari_retsam.errors import RetsamInputError
from napari_retsam.gan.config import GanConfig
from napari_retsam.gan.losses import feature_matching_loss, lsgan_d_loss, lsgan_g_loss
from napari_retsam.gan.models import build_discriminator, build_generator, downsample


def test_feature_matching_matches_hand_computation() -> None:
    # Scale 1: two intermediate layers + score; scale 2: one intermediate layer + score.
    real1a = torch.tensor([[[[1.0, 2.0], [3.0, 4.0]]]])            # 1×1×2×2, fake 0: mean |.| = 10/4 = 2.5
    real1b = torch.tensor([[[[1.0]], [[-1.0]]]])                    # 1×2×1×1, fake 0: mean = 1
    real2a = torch.tensor([[[[1.0, 1.0]]], [[[3.0, 3.0]]]])        # 2×1×1×2, fake 0: E over batch of (1 + 3) = 2
    score = torch.zeros(1, 1, 1, 1)
    fake1a = torch.zeros_like(real1a, requires_grad=True)
    fake1b = torch.zeros_like(real1b, requires_grad=True)
    fake2a = torch.zeros_like(real2a, requires_grad=True)
    real1a.requires_grad_(True)
    real = [[real1a, real1b, score], [real2a, torch.zeros(2, 1, 1, 1)]]
    fake = [[fake1a, fake1b, score + 7.0], [fake2a, torch.ones(2, 1, 1, 1)]]  # scores do not count
    loss = feature_matching_loss(real, fake)
    assert loss.item() == pytest.approx(2.5 + 1.0 + 2.0)
    loss.backward()
    # d/d fake of mean|real − fake| = −sign(real − fake) / N: real features are detached.
    assert real1a.grad is None
    assert torch.allclose(fake1a.grad, torch.full_like(fake1a, -0.25))
    assert torch.allclose(fake2a.grad, torch.full_like(fake2a, -0.25))


def test_feature_matching_is_zero_for_identical_features_and_beta_independent() -> None:
    feats = [[torch.randn(2, 3, 4, 4), torch.randn(2, 1, 3, 3)]]
    assert feature_matching_loss(feats, feats).item() == 0.0


def test_lsgan_losses_match_hand_computation() -> None:
    real = [[torch.zeros(1, 2, 2, 2), torch.full((1, 1, 2, 2), 0.5)], [torch.full((1, 1, 1, 1), 1.0)]]
    fake = [[torch.zeros(1, 2, 2, 2), torch.full((1, 1, 2, 2), 0.25)], [torch.full((1, 1, 1, 1), -1.0)]]
    # D: (0.5 − 1)² + 0.25² + (1 − 1)² + (−1)² = 0.25 + 0.0625 + 0 + 1
    assert lsgan_d_loss(real, fake).item() == pytest.approx(1.3125)
    # G: (0.25 − 1)² + (−1 − 1)² = 0.5625 + 4
    assert lsgan_g_loss(fake).item() == pytest.approx(4.5625)


def test_paired_generator_shapes_and_ranges() -> None:
    cfg = tiny_config()
    g = build_generator(cfg, seed=0)
    image, logits = g(torch.randn(3, cfg.z_dim))
    assert image.shape == (3, 3, 32, 32) and logits.shape == (3, 1, 32, 32)
    assert image.min() >= -1 and image.max() <= 1
    assert image.std() > 0  # not constant


def test_conditional_generator_returns_its_input_mask() -> None:
    cfg = tiny_config(mode="conditional")
    g = build_generator(cfg, seed=0)
    mask = (torch.rand(2, 1, 32, 32) > 0.7).float()
    image, logits = g(torch.randn(2, cfg.z_dim), mask)
    assert image.shape == (2, 3, 32, 32)
    assert torch.equal(torch.sigmoid(logits) > 0.5, mask > 0.5)
    # the image depends on the mask
    image2, _ = g(torch.randn(2, cfg.z_dim), 1.0 - mask)
    assert not torch.allclose(image, image2)
    with pytest.raises(ValueError):
        g(torch.randn(1, cfg.z_dim))


def test_generator_weights_are_seeded_without_touching_global_rng() -> None:
    cfg = tiny_config()
    torch.manual_seed(123)
    before = torch.get_rng_state()
    a = build_generator(cfg, seed=5).state_dict()
    assert torch.equal(before, torch.get_rng_state())
    b = build_generator(cfg, seed=5).state_dict()
    c = build_generator(cfg, seed=6).state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert any(not torch.equal(a[k], c[k]) for k in a)


def test_multiscale_discriminator_scales_and_features() -> None:
    cfg = tiny_config(scales=3, d_layers=2)
    d = build_discriminator(cfg, with_mask=True, seed=0)
    x = torch.randn(2, 4, 32, 32)
    outs = d(x)
    assert len(outs) == 3
    for feats in outs:
        assert len(feats) == cfg.d_layers + 2  # T = d_layers + 1 intermediate layers, then the score
        assert feats[-1].shape[1] == 1
    # D_2 sees the 2×-downsampled input, D_3 the 4×-downsampled one
    assert torch.allclose(outs[1][-1], d.discriminators[1](downsample(x))[-1])
    assert torch.allclose(outs[2][-1], d.discriminators[2](downsample(downsample(x)))[-1])
    assert downsample(x).shape[-1] == 16
    assert build_discriminator(cfg, with_mask=False).in_channels == 3


def test_config_validation() -> None:
    with pytest.raises(RetsamInputError, match="power of two"):
        GanConfig(size=100)
    with pytest.raises(RetsamInputError, match="mode"):
        GanConfig(mode="cyclegan")
    with pytest.raises(RetsamInputError, match="scales"):
        GanConfig(size=16, scales=3)
    with pytest.raises(RetsamInputError, match="iterations"):
        GanConfig(iterations=0)
    cfg = GanConfig()
    # The method's objective and optimiser stay; the default is the measured CPU choice:
    # mask-conditioned synthesis on 256-px native-resolution patches.
    assert (cfg.lr, cfg.beta1, cfg.beta, cfg.scales) == (2e-4, 0.5, 10.0, 3)
    assert (cfg.mode, cfg.unit, cfg.size) == ("conditional", "patch", 256)
    with pytest.raises(RetsamInputError, match="training unit"):
        GanConfig(unit="tile")
    with pytest.raises(RetsamInputError, match="conditional"):
        GanConfig(mode="paired", unit="patch")
    with pytest.raises(RetsamInputError, match="amp"):
        GanConfig(amp="yes")
    # A config dict written before the unit existed trained on whole images.
    old = GanConfig(mode="paired", unit="image").to_dict()
    del old["unit"]
    assert GanConfig.from_dict(old).unit == "image"
    assert GanConfig.from_dict(cfg.to_dict()) == cfg
