"""The default GAN: mask-conditioned synthesis trained on native-resolution patches.

Pairs are right by construction (the mask of a generated pair is its input
mask), patches carry their own field of view, and sampling, export, report,
resume and the CLI work on them like on whole images.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from fixtures_gan import tiny_config
from napari_retsam.errors import RetsamInputError


def _sample(seed: int, size: int = 64, gold: bool = True):
    """A synthetic fundus as a dataset sample (id, image, gold, fov)."""
    from types import SimpleNamespace

    from napari_retsam.data import synthetic_fundus

    f = synthetic_fundus(seed, size)
    return SimpleNamespace(id=f"s{seed}", image=f.image, gold=f.vessels if gold else None, fov=f.fov)


def _native(n: int = 3, size: int = 64, seed: int = 0):
    from napari_retsam.gan.data import prepare_native

    return prepare_native([_sample(seed + i, size) for i in range(n)], 32, require_masks=True)


def _patch_config(**kw):
    return tiny_config(mode="conditional", unit="patch", **kw)


def test_native_pairs_keep_resolution_and_pad_small_images() -> None:
    from napari_retsam.gan.data import prepare_native

    pairs = _native()
    assert len(pairs) == 3 and pairs.images[0].shape == (64, 64, 3)
    for img, msk, fov in zip(pairs.images, pairs.masks, pairs.fovs):
        assert (img[~fov] == 0).all() and not (msk & ~fov).any()
    small = prepare_native([_sample(0, 64)], 96)
    assert small.images[0].shape == (96, 96, 3) and not small.fovs[0][64:].any()
    with pytest.raises(RetsamInputError, match="vessel masks"):
        prepare_native([_sample(0, gold=False)], 32, require_masks=True)
    with pytest.raises(RetsamInputError, match="only 1 of 2"):
        prepare_native([_sample(0), _sample(1, gold=False)], 32)


def test_random_crops_are_native_windows_centred_in_the_fov() -> None:
    from napari_retsam.gan.data import crop_pairs, random_crop

    pairs = _native()
    img, msk, fov = random_crop(pairs, 1, 32, np.random.default_rng(5))
    assert img.shape == (32, 32, 3) and msk.shape == fov.shape == (32, 32)
    # The crop is a window of the native image (no resampling).
    src = pairs.images[1]
    hits = [(y, x) for y in range(33) for x in range(33) if np.array_equal(src[y:y + 32, x:x + 32], img)]
    assert hits and fov.any()
    a, b = crop_pairs(pairs, 7, 32, seed=3), crop_pairs(pairs, 9, 32, seed=3)
    assert np.array_equal(a.images, b.images[:7]) and a.ids[0].startswith(pairs.ids[0])
    assert not np.array_equal(a.images, crop_pairs(pairs, 7, 32, seed=4).images)


def test_augment_pairs_moves_mask_and_fov_together() -> None:
    from napari_retsam.gan.masks import augment_masks, augment_pairs

    crops = __import__("napari_retsam.gan.data", fromlist=["crop_pairs"]).crop_pairs(_native(), 4, 32, seed=0)
    masks, fovs = augment_pairs(crops.masks, crops.fovs, seed=2)
    assert masks.shape == fovs.shape == (4, 32, 32) and not (masks & ~fovs).any()
    # Same random stream as augment_masks: the masks match where the FOV keeps them.
    alone = augment_masks(crops.masks, seed=2)
    assert np.array_equal(masks, alone & fovs)
    assert np.array_equal(augment_pairs(crops.masks, crops.fovs, seed=2)[0], masks)


def test_patch_training_samples_pairs_right_by_construction(tmp_path: Path) -> None:
    from napari_retsam.gan.checkpoint import load_generator
    from napari_retsam.gan.data import crop_pairs
    from napari_retsam.gan.sample import generate
    from napari_retsam.gan.train import train_gan

    pairs = _native()
    result = train_gan(_patch_config(iterations=3), pairs, tmp_path / "run")
    ckpt = load_generator(result.generator_checkpoint)
    assert (ckpt.mode, ckpt.config.unit, ckpt.size) == ("conditional", "patch", 32)
    assert ckpt.fov_template.all()  # patches carry their own FOV
    crops = crop_pairs(pairs, 5, 32, seed=1)
    gen = generate(ckpt, 5, seed=0, masks=crops.masks, fovs=crops.fovs)
    # The pair's mask is the conditioning mask (inside its FOV), and the image is black outside the FOV.
    assert np.array_equal(gen.masks, crops.masks & crops.fovs)
    assert np.array_equal(gen.fov, crops.fovs)
    assert (gen.images[~gen.fov] == 0).all()
    again = generate(ckpt, 5, seed=0, masks=crops.masks, fovs=crops.fovs)
    assert np.array_equal(gen.images, again.images)


def test_patch_training_resumes_exactly(tmp_path: Path) -> None:
    import torch

    from napari_retsam.gan.train import train_gan

    pairs = _native()
    full = train_gan(_patch_config(iterations=4, checkpoint_every=2), pairs, tmp_path / "full")
    part = train_gan(_patch_config(iterations=2, checkpoint_every=2), pairs, tmp_path / "part")
    resumed = train_gan(_patch_config(iterations=4, checkpoint_every=2), pairs, tmp_path / "part",
                        resume=part.state_checkpoint)
    a = torch.load(full.generator_checkpoint, weights_only=True)["generator"]
    b = torch.load(resumed.generator_checkpoint, weights_only=True)["generator"]
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_patch_trainer_refuses_whole_image_pairs(tmp_path: Path) -> None:
    from fixtures_gan import tiny_pairs
    from napari_retsam.gan.train import GanTrainer

    with pytest.raises(RetsamInputError, match="native-resolution"):
        GanTrainer(_patch_config(), tiny_pairs(), tmp_path / "x")


def test_bf16_autocast_trains_finite(tmp_path: Path) -> None:
    from napari_retsam.gan.train import GanTrainer, gan_autocast_dtype

    trainer = GanTrainer(_patch_config(amp=True, iterations=2), _native(), tmp_path / "amp")
    losses = trainer.train_step()
    assert all(np.isfinite(v) for v in losses.values())
    import torch

    assert gan_autocast_dtype(torch.device("cpu"), False) is None
    assert all(p.dtype == torch.float32 for p in trainer.G.parameters())


def test_conditioning_masks_cut_patches_from_larger_masks(tmp_path: Path) -> None:
    from napari_retsam.gan.checkpoint import load_generator
    from napari_retsam.gan.sample import conditioning_masks
    from napari_retsam.gan.train import train_gan

    pairs = _native()
    ckpt = load_generator(train_gan(_patch_config(iterations=1), pairs, tmp_path / "r").generator_checkpoint)
    big = np.stack(pairs.masks)
    masks, fovs, names = conditioning_masks(ckpt, ("folder", ["a", "b", "c"], big), 5, seed=0, warp=True)
    assert masks.shape == fovs.shape == (5, 32, 32) and len(names) == 5
    exact, _, _ = conditioning_masks(ckpt, ("folder", ["a"], big[:1, :32, :32]), 2, seed=0)
    assert np.array_equal(exact[0], big[0, :32, :32])
    with pytest.raises(RetsamInputError, match="smaller"):
        conditioning_masks(ckpt, ("folder", ["a"], np.zeros((1, 20, 40), bool)), 1, seed=0)


def test_report_on_patches_uses_matching_real_patches(tmp_path: Path) -> None:
    from napari_retsam.gan.checkpoint import load_generator
    from napari_retsam.gan.report import quality_report, real_reference
    from napari_retsam.gan.train import train_gan

    samples = [_sample(i) for i in range(3)]
    ckpt = load_generator(train_gan(_patch_config(iterations=1), _native(), tmp_path / "r").generator_checkpoint)
    real = real_reference(samples, ckpt, seed=0)
    assert real.images.shape == (12, 32, 32, 3)
    calls = []

    def oracle(images, fovs):  # a "segmenter" that returns the conditioning masks
        calls.append(len(images))
        return real.masks[[i % len(real) for i in range(len(images))]] & fovs

    report = quality_report(ckpt, real, segment=oracle, segmenter_name="oracle")
    assert report["segmenter"] == "oracle" and report["generator"]["unit"] == "patch"
    # Generated pairs carry the real masks, so the oracle matches them perfectly.
    assert report["generated"]["pairing_dice"]["mean"] == pytest.approx(1.0)
    assert calls == [12, 12]


def test_cli_default_gan_is_conditional_on_patches(tmp_path: Path, gan_folder: Path) -> None:
    from napari_retsam.cli.main import main
    from napari_retsam.gan.checkpoint import load_generator

    out = tmp_path / "run"
    tiny = ["--size", "32", "--iterations", "2", "--scales", "2", "--g-channels", "4", "--d-channels", "4",
            "--sample-every", "1", "--checkpoint-every", "1"]
    assert main(["gan", "train", "--dataset", "folder", "--root", str(gan_folder), "--split", "all",
                 "--out", str(out), *tiny]) == 0
    ckpt = load_generator(out / "generator_last.pt")
    assert (ckpt.mode, ckpt.config.unit, ckpt.config.amp) == ("conditional", "patch", True)
    assert (out / "samples" / "iter_000001.png").is_file()
    synth = tmp_path / "synth"
    assert main(["gan", "sample", "--checkpoint", str(out / "generator_last.pt"), "--n", "5", "--seed", "1",
                 "--out", str(synth), "--mask-dataset", "folder", "--mask-root", str(gan_folder),
                 "--mask-split", "all", "--warp"]) == 0
    from napari_retsam.data import open_dataset

    exported = open_dataset("folder", synth, split="all")
    assert len(exported) == 5
    for s in exported:
        assert s.image.shape == (32, 32, 3) and not (s.gold & ~s.fov).any()
    # The exported folder is what fine-tuning reads as synthetic data.
    from napari_retsam.training.data import items_from_folder

    assert len(items_from_folder(synth)) == 5
    assert main(["gan", "report", "--checkpoint", str(out / "generator_last.pt"), "--dataset", "folder",
                 "--root", str(gan_folder), "--split", "all", "--json"]) == 0
