"""Deterministic sampling from a trained generator and export as a dataset folder (torch).

Sample i of a run with seed s uses the noise vector
``torch.randn(z_dim, generator=G_i)`` with G_i seeded from
``SeedSequence([s, i])`` (:func:`sample_noise`, computed on the CPU), and the
generator always runs on batches of exactly :data:`CHUNK` rows (the last one
zero-padded), so the same checkpoint and seed give the same arrays and files,
and sample i does not depend on n.

Export layout (the generic folder that ``--dataset folder`` reads)::

    OUT/images/gan_00000.png    RGB, uint8
    OUT/masks/gan_00000.png     vessel mask, 0/255
    OUT/fov/gan_00000.png       field of view (the checkpoint's FOV template), 0/255
    OUT/manifest.json           checkpoint sha256, seed, n, settings, ids
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from napari_retsam import __version__
from napari_retsam.errors import RetsamInputError
from napari_retsam.gan.checkpoint import GeneratorCheckpoint, load_generator
from napari_retsam.gan.imaging import png_bytes, to_uint8_image, write_public_bytes
from napari_retsam.io_utils import ensure_writable_dir, sha256_file

__all__ = ["CHUNK", "GeneratedSet", "sample_noise", "check_count", "check_seed", "generate", "export_samples",
           "read_mask_folder", "sample_and_export"]

#: Samples per generator forward pass (fixed so that results do not depend on n).
CHUNK = 8
MANIFEST_FORMAT = "napari-retsam-gan-samples"


@dataclass
class GeneratedSet:
    """N generated pairs. images N×S×S×3 uint8, masks N×S×S bool, fov S×S bool."""

    images: np.ndarray
    masks: np.ndarray
    fov: np.ndarray
    seed: int
    masks_trained: bool
    conditional: bool

    def __len__(self) -> int:
        return int(self.images.shape[0])


def check_count(n: Any) -> int:
    """n must be a positive integer."""
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or int(n) <= 0:
        raise RetsamInputError(f"the number of samples must be a positive integer, got {n!r}")
    return int(n)


def check_seed(seed: Any) -> int:
    """The seed must be an integer in [0, 2^63) (strings of digits are accepted)."""
    if isinstance(seed, str):
        try:
            seed = int(seed.strip(), 10)
        except ValueError:
            raise RetsamInputError(f"the seed must be an integer, got {seed!r}") from None
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)):
        raise RetsamInputError(f"the seed must be an integer, got {seed!r}")
    seed = int(seed)
    if not 0 <= seed < 2**63:
        raise RetsamInputError(f"the seed must be between 0 and 2^63 - 1, got {seed}")
    return seed


def sample_noise(n: int, z_dim: int, seed: int) -> Any:
    """n×z_dim noise; row i ~ N(0, I) from its own generator seeded with
    SeedSequence([seed, i]), so row i depends on (seed, i) only, never on n."""
    import torch

    rows = []
    for i in range(n):
        state = np.random.SeedSequence([seed, i]).generate_state(2, dtype=np.uint32)
        g = torch.Generator().manual_seed(int(state[0]) << 32 | int(state[1]))
        rows.append(torch.randn(z_dim, generator=g))
    return torch.stack(rows)


def _as_checkpoint(checkpoint: GeneratorCheckpoint | str | os.PathLike[str]) -> GeneratorCheckpoint:
    return checkpoint if isinstance(checkpoint, GeneratorCheckpoint) else load_generator(checkpoint)


def generate(checkpoint: GeneratorCheckpoint | str | os.PathLike[str], n: int, seed: int, *,
             masks: np.ndarray | None = None, device: str = "cpu") -> GeneratedSet:
    """Draw ``n`` pairs with ``seed``.

    ``masks`` (N×S×S, bool or 0/1 labels; N == n or 1 to reuse one mask) are
    required by a conditional generator and refused by a paired one. Outside
    the checkpoint's FOV template images are black and masks empty.
    """
    import torch

    n = check_count(n)
    seed = check_seed(seed)
    ckpt = _as_checkpoint(checkpoint)
    size = ckpt.size
    cond = ckpt.mode == "conditional"
    if cond and masks is None:
        raise RetsamInputError("this generator is conditional: give vessel masks to generate images for")
    if not cond and masks is not None:
        raise RetsamInputError("this generator is not conditional (it makes its own masks); "
                               "use a conditional checkpoint to generate from masks")
    cond_masks = None
    if masks is not None:
        m = np.asarray(masks)
        if m.ndim == 2:
            m = m[None]
        if m.ndim != 3 or m.shape[1:] != (size, size):
            raise RetsamInputError(f"conditional masks must be {size}×{size} (the generator's resolution), "
                                   f"got shape {tuple(m.shape)}")
        if m.shape[0] not in (1, n):
            raise RetsamInputError(f"give one mask or {n} masks, got {m.shape[0]}")
        cond_masks = np.broadcast_to(m > 0, (n, size, size)) & ckpt.fov_template
    g = ckpt.generator.to(device).eval()
    z_all = sample_noise(n, ckpt.config.z_dim, seed)
    fov = torch.from_numpy(ckpt.fov_template.astype(np.float32))[None, None].to(device)
    images, out_masks = [], []
    with torch.no_grad():
        for start in range(0, n, CHUNK):
            # Every forward pass has exactly CHUNK rows (the last one padded with zeros):
            # batch shape changes can change floating-point results in the last bit.
            k = min(CHUNK, n - start)
            z = torch.zeros(CHUNK, ckpt.config.z_dim)
            z[:k] = z_all[start:start + k]
            cm = None
            if cond_masks is not None:
                cm = torch.zeros(CHUNK, 1, size, size)
                cm[:k, 0] = torch.from_numpy(cond_masks[start:start + k].astype(np.float32))
                cm = cm.to(device)
            img, logits = g(z.to(device), cm)
            img = (img * fov - (1.0 - fov))[:k]
            images.append(to_uint8_image(img.cpu().numpy()))
            out_masks.append(((logits[:k] > 0).float() * fov)[:, 0].cpu().numpy() > 0.5)
    return GeneratedSet(np.concatenate(images), np.concatenate(out_masks), ckpt.fov_template.copy(), seed,
                        ckpt.has_masks or cond, cond)


def _prepare_folder(out: Path, overwrite: bool) -> None:
    if out.exists() and not out.is_dir():
        raise RetsamInputError(f"export target {out} is a file, not a folder")
    if out.is_dir() and any(out.iterdir()):
        if not overwrite:
            raise RetsamInputError(f"export folder {out} is not empty; choose an empty folder or pass --overwrite")
        # Remove what an earlier export wrote, so no stale sample survives.
        for sub in ("images", "masks", "fov"):
            folder = out / sub
            if folder.is_dir():
                for f in folder.glob("*.png"):
                    f.unlink()
        manifest = out / "manifest.json"
        if manifest.exists():
            manifest.unlink()
    ensure_writable_dir(out)
    for sub in ("images", "masks", "fov"):
        ensure_writable_dir(out / sub)


def export_samples(generated: GeneratedSet, out: str | os.PathLike[str], *, overwrite: bool = False,
                   checkpoint_path: str | os.PathLike[str] | None = None,
                   settings: dict[str, Any] | None = None, id_prefix: str = "gan_") -> Path:
    """Write a generated set as a generic dataset folder; returns the manifest path.

    Refuses (RetsamInputError) a set whose masks were never trained (image-only
    training) and a non-empty folder unless ``overwrite``.
    """
    if not generated.masks_trained:
        raise RetsamInputError("export refused: this generator was trained on a dataset without vessel masks, "
                               "so its masks are untrained and the pairs would be wrong")
    out = Path(out)
    _prepare_folder(out, overwrite)
    ids = [f"{id_prefix}{i:05d}" for i in range(len(generated))]
    for i, sid in enumerate(ids):
        write_public_bytes(out / "images" / f"{sid}.png", png_bytes(generated.images[i]))
        write_public_bytes(out / "masks" / f"{sid}.png", png_bytes(generated.masks[i].astype(np.uint8) * 255))
        write_public_bytes(out / "fov" / f"{sid}.png", png_bytes(generated.fov.astype(np.uint8) * 255))
    manifest = {
        "format": MANIFEST_FORMAT,
        "format_version": 1,
        "generator_checkpoint": None if checkpoint_path is None else Path(checkpoint_path).name,
        "generator_sha256": None if checkpoint_path is None else sha256_file(checkpoint_path),
        "seed": generated.seed,
        "n": len(generated),
        "size": int(generated.images.shape[1]),
        "conditional": generated.conditional,
        "settings": dict(settings or {}),
        "ids": ids,
        "layout": {"images": "images/<id>.png", "masks": "masks/<id>.png (0/255)", "fov": "fov/<id>.png (0/255)"},
        "napari_retsam_version": __version__,
    }
    path = out / "manifest.json"
    write_public_bytes(path, (json.dumps(manifest, indent=2, sort_keys=True) + "\n").encode())
    return path


def read_mask_folder(folder: str | os.PathLike[str]) -> tuple[list[str], np.ndarray]:
    """All masks of a folder (sorted by name) as N×H×W bool, with their stems."""
    from napari_retsam.data import read_binary_mask

    folder = Path(folder)
    if not folder.is_dir():
        raise RetsamInputError(f"mask folder not found: {folder}")
    files = sorted(p for p in folder.iterdir() if p.is_file() and not p.name.startswith("."))
    if not files:
        raise RetsamInputError(f"mask folder {folder} has no files")
    masks = [read_binary_mask(p) for p in files]
    shapes = {m.shape for m in masks}
    if len(shapes) != 1:
        raise RetsamInputError(f"masks in {folder} differ in size: {sorted(shapes)}")
    return [p.stem for p in files], np.stack(masks)


def sample_and_export(checkpoint: str | os.PathLike[str], n: int, seed: int, out: str | os.PathLike[str], *,
                      overwrite: bool = False, mask_dir: str | os.PathLike[str] | None = None,
                      mask_dataset: tuple[str, str | os.PathLike[str], str] | None = None,
                      warp: bool = False, device: str = "cpu") -> Path:
    """``retsam gan sample``: load, generate and export; returns the manifest path.

    Conditional generators need masks: ``mask_dir`` (files at the generator's
    size, used in name order) or ``mask_dataset`` = (name, root, split), whose
    vessel annotations are prepared like the training pairs (crop to the FOV,
    resize). Masks are cycled when ``n`` exceeds their number; ``warp`` gives
    each one a random symmetry and elastic warp
    (:func:`napari_retsam.gan.masks.augment_masks`, seeded by ``seed``).
    """
    n = check_count(n)
    seed = check_seed(seed)
    ckpt = load_generator(checkpoint)
    if not ckpt.has_masks and ckpt.mode == "paired":
        raise RetsamInputError("export refused: this generator was trained on a dataset without vessel masks, "
                               "so its masks are untrained and the pairs would be wrong")
    if mask_dir is not None and mask_dataset is not None:
        raise RetsamInputError("give either a mask folder or a mask dataset, not both")
    given = mask_dir is not None or mask_dataset is not None
    if ckpt.mode == "paired" and (given or warp):
        raise RetsamInputError("this generator is not conditional (it makes its own masks); "
                               "mask folders, mask datasets and --warp need a conditional checkpoint")
    if ckpt.mode == "conditional" and not given:
        raise RetsamInputError("this generator is conditional: give --mask-dir or --mask-dataset with --mask-root")
    masks = None
    settings: dict[str, Any] = {"mode": ckpt.mode, "iteration": ckpt.iteration, "dataset": ckpt.dataset,
                                "config": ckpt.config.to_dict()}
    if given:
        if mask_dir is not None:
            names, all_masks = read_mask_folder(mask_dir)
            settings["mask_source"] = "folder"
        else:
            from napari_retsam.data import open_dataset
            from napari_retsam.gan.data import prepare_pairs

            name, root, split = mask_dataset  # type: ignore[misc]
            ds = open_dataset(name, root, split=split)
            pairs = prepare_pairs(ds, ckpt.size, require_masks=True)
            names, all_masks = list(pairs.ids), pairs.masks
            settings["mask_source"] = {"dataset": ds.name, "split": ds.split}
        order = [i % len(names) for i in range(n)]
        masks = all_masks[order]
        settings["mask_files"] = [names[i] for i in order]
        if warp:
            from napari_retsam.gan.masks import augment_masks

            masks = augment_masks(masks, seed, fov=ckpt.fov_template)
            settings["mask_warp"] = {"symmetry": True, "elastic_alpha_px": 0.02 * ckpt.size,
                                     "elastic_sigma_px": 0.06 * ckpt.size}
    generated = generate(ckpt, n, seed, masks=masks, device=device)
    return export_samples(generated, out, overwrite=overwrite, checkpoint_path=checkpoint, settings=settings)
