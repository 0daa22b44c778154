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
    OUT/fov/gan_00000.png       field of view of the pair, 0/255
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
           "read_mask_folder", "conditioning_masks", "sample_and_export"]

#: Samples per generator forward pass (fixed so that results do not depend on n).
CHUNK = 8
MANIFEST_FORMAT = "napari-retsam-gan-samples"


@dataclass
class GeneratedSet:
    """N generated pairs. images N×S×S×3 uint8, masks N×S×S bool, fov N×S×S bool
    (the FOV template of a whole-image generator, each patch's own FOV for a patch generator)."""

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
             masks: np.ndarray | None = None, fovs: np.ndarray | None = None, device: str = "cpu") -> GeneratedSet:
    """Draw ``n`` pairs with ``seed``.

    ``masks`` (N×S×S, bool or 0/1 labels; N == n or 1 to reuse one mask) are
    required by a conditional generator and refused by a paired one; ``fovs``
    (same shapes, optional) give each conditional pair its field of view
    (default: the checkpoint's FOV template, all ones for a patch generator).
    Outside the FOV images are black and masks empty.
    """
    import torch

    n = check_count(n)
    seed = check_seed(seed)
    ckpt = _as_checkpoint(checkpoint)
    size = ckpt.size
    cond = ckpt.mode == "conditional"
    if cond and masks is None:
        raise RetsamInputError("this generator is conditional: give vessel masks to generate images for")
    if not cond and (masks is not None or fovs is not None):
        raise RetsamInputError("this generator is not conditional (it makes its own masks); "
                               "use a conditional checkpoint to generate from masks")
    cond_masks = None
    all_fovs = np.broadcast_to(ckpt.fov_template, (n, size, size))
    if fovs is not None:
        all_fovs = _stack_for(fovs, n, size, "field of view") & ckpt.fov_template
    if masks is not None:
        cond_masks = _stack_for(masks, n, size, "mask") & all_fovs
    g = ckpt.generator.to(device).eval()
    z_all = sample_noise(n, ckpt.config.z_dim, seed)
    images, out_masks = [], []
    with torch.no_grad():
        for start in range(0, n, CHUNK):
            # Every forward pass has exactly CHUNK rows (the last one padded with zeros):
            # batch shape changes can change floating-point results in the last bit.
            k = min(CHUNK, n - start)
            z = torch.zeros(CHUNK, ckpt.config.z_dim)
            z[:k] = z_all[start:start + k]
            fov = torch.zeros(CHUNK, 1, size, size)
            fov[:k, 0] = torch.from_numpy(all_fovs[start:start + k].astype(np.float32))
            fov = fov.to(device)
            if cond_masks is not None:
                cm = torch.zeros(CHUNK, 1, size, size)
                cm[:k, 0] = torch.from_numpy(cond_masks[start:start + k].astype(np.float32))
                img, logits = g(z.to(device), cm.to(device), fov)
            else:
                img, logits = g(z.to(device))
            img = (img * fov - (1.0 - fov))[:k]
            fov = fov[:k]
            images.append(to_uint8_image(img.cpu().numpy()))
            out_masks.append(((logits[:k] > 0).float() * fov)[:, 0].cpu().numpy() > 0.5)
    return GeneratedSet(np.concatenate(images), np.concatenate(out_masks), np.ascontiguousarray(all_fovs), seed,
                        ckpt.has_masks or cond, cond)


def _stack_for(arrays: np.ndarray, n: int, size: int, what: str) -> np.ndarray:
    """One or ``n`` S×S conditioning arrays as an n×S×S bool stack (a one-line error otherwise)."""
    m = np.asarray(arrays)
    if m.ndim == 2:
        m = m[None]
    if m.ndim != 3 or m.shape[1:] != (size, size):
        raise RetsamInputError(f"conditional {what}s must be {size}×{size} (the generator's resolution), "
                               f"got shape {tuple(m.shape)}")
    if m.shape[0] not in (1, n):
        raise RetsamInputError(f"give one {what} or {n} {what}s, got {m.shape[0]}")
    return np.broadcast_to(m > 0, (n, size, size))


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
        write_public_bytes(out / "fov" / f"{sid}.png", png_bytes(generated.fov[i].astype(np.uint8) * 255))
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

    Conditional generators need masks: ``mask_dir`` (files used in name order)
    or ``mask_dataset`` = (name, root, split), a dataset with vessel
    annotations; :func:`conditioning_masks` turns them into the generator's
    inputs (crops for a patch generator, FOV-fitted whole masks otherwise), with
    ``warp`` adding a random symmetry and an elastic warp seeded by ``seed``.
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
    settings: dict[str, Any] = {"mode": ckpt.mode, "unit": ckpt.config.unit, "iteration": ckpt.iteration,
                                "dataset": ckpt.dataset, "config": ckpt.config.to_dict()}
    masks = fovs = None
    if given:
        if mask_dir is not None:
            names, all_masks = read_mask_folder(mask_dir)
            settings["mask_source"] = "folder"
            source = ("folder", names, all_masks)
        else:
            from napari_retsam.data import open_dataset

            name, root, split = mask_dataset  # type: ignore[misc]
            ds = open_dataset(name, root, split=split)
            settings["mask_source"] = {"dataset": ds.name, "split": ds.split}
            source = ("dataset", ds)
        masks, fovs, settings["mask_files"] = conditioning_masks(ckpt, source, n, seed, warp=warp)
        if warp:
            settings["mask_warp"] = {"symmetry": True, "elastic_alpha_px": 0.02 * ckpt.size,
                                     "elastic_sigma_px": 0.06 * ckpt.size}
    generated = generate(ckpt, n, seed, masks=masks, fovs=fovs, device=device)
    return export_samples(generated, out, overwrite=overwrite, checkpoint_path=checkpoint, settings=settings)


def conditioning_masks(ckpt: GeneratorCheckpoint, source: tuple[Any, ...], n: int, seed: int, *,
                       warp: bool = False) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """The n vessel masks (and FOVs) a conditional generator is fed, with their origin names.

    ``source`` is ``("folder", names, masks)`` (N×H×W bool, as :func:`read_mask_folder`
    returns) or ``("dataset", dataset)`` (a dataset with vessel annotations).

    - Whole-image generator: dataset masks are prepared like the training pairs
      (cropped to the FOV, resized); folder masks must be S×S; masks are cycled;
      the FOV is the checkpoint's template.
    - Patch generator: S×S crops centred on a FOV pixel (:func:`~napari_retsam.gan.data.crop_pairs`,
      crop i from mask ``i mod N``, seeded by ``seed``), with each crop's own FOV (a
      folder mask counts as all FOV); an S×S folder mask is used whole.

    ``warp`` gives every mask (and its FOV) a random symmetry and an elastic warp
    seeded by ``seed`` (:mod:`napari_retsam.gan.masks`).
    """
    from napari_retsam.gan.data import NativePairs, crop_pairs, prepare_native, prepare_pairs
    from napari_retsam.gan.masks import augment_masks, augment_pairs

    size = ckpt.size
    if source[0] == "folder":
        names, all_masks = list(source[1]), np.asarray(source[2], dtype=bool)
    else:
        dataset = source[1]
        if ckpt.config.unit == "patch":
            native = prepare_native(dataset, size, require_masks=True)
        else:
            pairs = prepare_pairs(dataset, size, require_masks=True)
            names, all_masks = list(pairs.ids), pairs.masks
    if ckpt.config.unit == "patch":
        if source[0] == "folder":
            if all_masks.shape[1:] == (size, size):
                native = None
            else:
                if min(all_masks.shape[1:]) < size:
                    raise RetsamInputError(f"the masks are {all_masks.shape[1]}×{all_masks.shape[2]}, smaller than "
                                           f"the generator's {size}-px patches")
                blank = [np.zeros((*m.shape, 3), np.uint8) for m in all_masks]
                native = NativePairs(blank, list(all_masks), [np.ones(m.shape, bool) for m in all_masks], names)
        if native is not None:
            crops = crop_pairs(native, n, size, seed)
            assert crops.masks is not None
            masks, fovs, files = crops.masks, crops.fovs, list(crops.ids)
        else:
            order = [i % len(names) for i in range(n)]
            masks, fovs, files = all_masks[order], np.ones((n, size, size), bool), [names[i] for i in order]
        if warp:
            masks, fovs = augment_pairs(masks, fovs, seed)
        return masks, fovs, files
    if all_masks.shape[1:] != (size, size):
        raise RetsamInputError(f"conditional masks must be {size}×{size} (the generator's resolution), "
                               f"got shape {tuple(all_masks.shape)}")
    order = [i % len(names) for i in range(n)]
    masks = all_masks[order]
    if warp:
        masks = augment_masks(masks, seed, fov=ckpt.fov_template)
    return masks, np.broadcast_to(ckpt.fov_template, masks.shape).copy(), [names[i] for i in order]
