"""Sampling and export: determinism, identical files, manifest, refusals."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from napari_retsam.data import open_dataset, read_binary_mask, read_image
from napari_retsam.errors import RetsamInputError
from napari_retsam.gan.checkpoint import load_generator
from napari_retsam.gan.sample import CHUNK, check_seed, export_samples, generate, sample_and_export
from napari_retsam.io_utils import sha256_file


def _files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_generate_is_deterministic_and_seed_dependent(gan_checkpoint) -> None:
    a = generate(gan_checkpoint, 3, seed=7)
    b = generate(gan_checkpoint, 3, seed=7)
    c = generate(gan_checkpoint, 3, seed=8)
    assert a.images.shape == (3, 32, 32, 3) and a.images.dtype == np.uint8
    assert a.masks.shape == (3, 32, 32) and a.masks.dtype == bool
    assert np.array_equal(a.images, b.images) and np.array_equal(a.masks, b.masks)
    assert not np.array_equal(a.images, c.images)
    # sample i does not depend on n (fixed chunks, noise row i)
    longer = generate(gan_checkpoint, CHUNK + 2, seed=7)
    assert np.array_equal(longer.images[:3], a.images)
    # black outside the FOV template, masks inside it
    assert a.fov.shape == (3, 32, 32)
    assert (a.images[~a.fov] == 0).all() and not (a.masks & ~a.fov).any()


def test_export_writes_identical_files_and_a_full_manifest(gan_checkpoint, tmp_path: Path) -> None:
    m1 = sample_and_export(gan_checkpoint, 3, 5, tmp_path / "a")
    m2 = sample_and_export(gan_checkpoint, 3, 5, tmp_path / "b")
    files_a, files_b = _files(tmp_path / "a"), _files(tmp_path / "b")
    assert files_a == files_b
    assert sorted(files_a) == sorted(
        [f"{d}/gan_0000{i}.png" for d in ("fov", "images", "masks") for i in range(3)] + ["manifest.json"])
    manifest = json.loads(m1.read_text())
    assert manifest["generator_sha256"] == sha256_file(gan_checkpoint)
    assert manifest["seed"] == 5 and manifest["n"] == 3 and manifest["size"] == 32
    assert manifest["ids"] == ["gan_00000", "gan_00001", "gan_00002"]
    assert manifest["settings"]["config"]["size"] == 32 and manifest["settings"]["mode"] == "paired"
    # the files hold the generated arrays; masks are 0/255
    gen = generate(gan_checkpoint, 3, 5)
    assert np.array_equal(read_image(tmp_path / "a" / "images" / "gan_00001.png"), gen.images[1])
    assert np.array_equal(read_binary_mask(tmp_path / "a" / "masks" / "gan_00001.png"), gen.masks[1])
    from PIL import Image

    assert set(np.unique(np.asarray(Image.open(tmp_path / "a" / "masks" / "gan_00000.png")))) <= {0, 255}
    # the export is a dataset the generic reader opens
    ds = open_dataset("folder", tmp_path / "a", "all")
    assert list(ds.ids) == manifest["ids"] and ds[0].gold is not None and not ds[0].fov_computed
    assert m2.name == "manifest.json"
    # exported files get the usual permissions, not the atomic writer's private 0600
    import os

    umask = os.umask(0)
    os.umask(umask)
    for p in (m1, tmp_path / "a" / "images" / "gan_00000.png"):
        assert p.stat().st_mode & 0o777 == 0o666 & ~umask


def test_export_refuses_non_empty_folder_unless_overwrite(gan_checkpoint, tmp_path: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    with pytest.raises(RetsamInputError, match="not empty.*--overwrite"):
        sample_and_export(gan_checkpoint, 2, 0, out)
    sample_and_export(gan_checkpoint, 4, 0, out, overwrite=True)
    # overwrite with fewer samples leaves no stale sample behind, and keeps foreign files
    sample_and_export(gan_checkpoint, 2, 1, out, overwrite=True)
    assert sorted(p.name for p in (out / "images").iterdir()) == ["gan_00000.png", "gan_00001.png"]
    assert (out / "notes.txt").read_text() == "mine"
    assert json.loads((out / "manifest.json").read_text())["seed"] == 1


@pytest.mark.parametrize("n", [0, -3, 2.5, "4", True])
def test_bad_counts_refused(gan_checkpoint, n) -> None:
    with pytest.raises(RetsamInputError, match="positive integer"):
        generate(gan_checkpoint, n, 0)


@pytest.mark.parametrize("seed", [1.5, "abc", "1.0", None, -1])
def test_bad_seeds_refused(seed) -> None:
    with pytest.raises(RetsamInputError, match="seed"):
        check_seed(seed)
    assert check_seed("12") == 12


def test_image_only_generator_export_refused(gan_image_only_checkpoint, tmp_path: Path) -> None:
    gen = generate(gan_image_only_checkpoint, 2, 0)  # images can still be looked at
    assert gen.masks_trained is False
    with pytest.raises(RetsamInputError, match="without vessel masks"):
        export_samples(gen, tmp_path / "x")
    with pytest.raises(RetsamInputError, match="without vessel masks"):
        sample_and_export(gan_image_only_checkpoint, 2, 0, tmp_path / "y")
    assert not (tmp_path / "x").exists() and not (tmp_path / "y").exists()


def test_conditional_generation_and_mode_mismatches(gan_conditional_checkpoint, gan_checkpoint, tmp_path: Path) -> None:
    ckpt = load_generator(gan_conditional_checkpoint)
    masks = np.zeros((2, 32, 32), bool)
    masks[0, 10:12, :] = True
    masks[1, :, 20:22] = True
    out = generate(ckpt, 2, 0, masks=masks)
    assert np.array_equal(out.masks, masks & ckpt.fov_template)
    assert np.array_equal(out.images, generate(ckpt, 2, 0, masks=masks).images)
    with pytest.raises(RetsamInputError, match="conditional: give vessel masks"):
        generate(ckpt, 2, 0)
    with pytest.raises(RetsamInputError, match="must be 32×32"):
        generate(ckpt, 1, 0, masks=np.zeros((1, 64, 64), bool))
    with pytest.raises(RetsamInputError, match="not conditional"):
        generate(gan_checkpoint, 2, 0, masks=masks)
    with pytest.raises(RetsamInputError, match="is a paired generator, not conditional"):
        load_generator(gan_checkpoint, expect_mode="conditional")
    with pytest.raises(RetsamInputError, match="is a 32 px generator, but 64 px"):
        load_generator(gan_checkpoint, expect_size=64)
    # masks from a folder, cycled in name order
    from napari_retsam.gan.imaging import write_png

    (tmp_path / "m").mkdir()
    write_png(tmp_path / "m" / "b.png", masks[1].astype(np.uint8) * 255)
    write_png(tmp_path / "m" / "a.png", masks[0].astype(np.uint8) * 255)
    manifest = sample_and_export(gan_conditional_checkpoint, 3, 0, tmp_path / "o", mask_dir=tmp_path / "m")
    assert json.loads(manifest.read_text())["settings"]["mask_files"] == ["a", "b", "a"]
    assert np.array_equal(read_binary_mask(tmp_path / "o" / "masks" / "gan_00002.png"), masks[0] & ckpt.fov_template)


def test_bad_checkpoint_files(tmp_path: Path) -> None:
    with pytest.raises(RetsamInputError, match="not found"):
        load_generator(tmp_path / "nope.pt")
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"not a checkpoint")
    with pytest.raises(RetsamInputError, match="cannot read"):
        load_generator(junk)
    import torch

    other = tmp_path / "other.pt"
    torch.save({"format": "something-else"}, other)
    with pytest.raises(RetsamInputError, match="not a napari-retsam GAN generator"):
        load_generator(other)
