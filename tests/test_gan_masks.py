"""Mask augmentation for the conditional generator, and conditional sampling from a dataset's masks."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from napari_retsam.cli.main import main
from napari_retsam.data import read_binary_mask
from napari_retsam.errors import RetsamInputError
from napari_retsam.gan.data import dihedral
from napari_retsam.gan.masks import augment_masks, elastic_warp


def _tree(size: int = 64) -> np.ndarray:
    m = np.zeros((size, size), bool)
    m[size // 2 - 1:size // 2 + 1, 8:56] = True
    m[10:54, 20:22] = True
    m[14:16, 20:40] = True
    return m


def test_augment_is_deterministic_per_seed_and_index() -> None:
    masks = np.stack([_tree(), _tree()[::-1]])
    a = augment_masks(masks, 3)
    assert a.shape == masks.shape and a.dtype == bool
    assert np.array_equal(a, augment_masks(masks, 3))
    assert not np.array_equal(a, augment_masks(masks, 4))
    # mask i depends on (seed, i) only
    assert np.array_equal(augment_masks(masks[:1], 3)[0], a[0])


def test_symmetry_only_is_one_of_the_eight_and_keeps_the_pixel_count() -> None:
    m = _tree()
    out = augment_masks(m[None], 7, elastic=False)[0]
    assert out.sum() == m.sum()
    assert any(np.array_equal(out, dihedral(m, k)) for k in range(8))


def test_elastic_warp_moves_pixels_by_at_most_alpha() -> None:
    m = _tree()
    rng = np.random.default_rng(0)
    w = elastic_warp(m, rng, alpha=2.0, sigma=4.0)
    assert not np.array_equal(w, m)
    assert 0.6 < w.sum() / m.sum() < 1.4
    # every warped vessel pixel lies within alpha (+1 for interpolation) of an original one
    from scipy.ndimage import distance_transform_edt

    assert distance_transform_edt(~m)[w].max() <= 3.0
    assert np.array_equal(elastic_warp(m, rng, alpha=0.0, sigma=4.0), m)


def test_augment_cuts_to_fov_and_refuses_non_square() -> None:
    fov = np.zeros((64, 64), bool)
    fov[:, :32] = True
    assert not (augment_masks(_tree()[None], 0, fov=fov)[0] & ~fov).any()
    with pytest.raises(RetsamInputError, match="square"):
        augment_masks(np.zeros((1, 10, 12), bool), 0)


def test_cli_conditional_sampling_from_a_dataset_with_warp(gan_conditional_checkpoint, gan_checkpoint,
                                                          gan_folder: Path, tmp_path: Path, capsys) -> None:
    base = ["gan", "sample", "--checkpoint", str(gan_conditional_checkpoint), "--n", "5", "--seed", "2",
            "--mask-dataset", "folder", "--mask-root", str(gan_folder), "--mask-split", "all"]
    assert main([*base, "--out", str(tmp_path / "plain")]) == 0
    assert main([*base, "--warp", "--out", str(tmp_path / "warped")]) == 0
    assert main([*base, "--warp", "--out", str(tmp_path / "warped2")]) == 0
    manifest = json.loads((tmp_path / "warped" / "manifest.json").read_text())
    assert manifest["settings"]["mask_files"] == ["synth_000", "synth_001", "synth_002", "synth_003", "synth_000"]
    assert "mask_warp" in manifest["settings"]
    plain0 = read_binary_mask(tmp_path / "plain" / "masks" / "gan_00000.png")
    plain4 = read_binary_mask(tmp_path / "plain" / "masks" / "gan_00004.png")
    warped0 = read_binary_mask(tmp_path / "warped" / "masks" / "gan_00000.png")
    assert np.array_equal(plain0, plain4)  # cycled
    assert not np.array_equal(plain0, warped0)
    for sub in ("images", "masks"):
        for f in (tmp_path / "warped" / sub).iterdir():
            assert f.read_bytes() == (tmp_path / "warped2" / sub / f.name).read_bytes()
    capsys.readouterr()
    # refusals
    assert main(["gan", "sample", "--checkpoint", str(gan_conditional_checkpoint), "--n", "2",
                 "--out", str(tmp_path / "x")]) == 2
    assert "conditional: give --mask-dir or --mask-dataset" in capsys.readouterr().err
    assert main(["gan", "sample", "--checkpoint", str(gan_checkpoint), "--n", "2", "--warp",
                 "--out", str(tmp_path / "y")]) == 2
    assert "not conditional" in capsys.readouterr().err
    assert main([*base[:-4], "--out", str(tmp_path / "z")]) == 2
    assert "go together" in capsys.readouterr().err
