"""Samples and lazily loaded datasets (DRIVE, STARE, CHASE_DB1, generic folder).

``open_dataset(name, root, split, annotator)`` lists the files at once (so
missing or unmatched files fail early, naming them) and decodes a sample only
when it is indexed. Where a dataset ships no FOV masks (STARE, CHASE_DB1, a
generic folder without ``fov/``) the FOV is computed from the image with
:func:`napari_retsam.data.fov.compute_fov` and widened to
``fill_holes(fov | gold)`` so that every annotated vessel pixel lies inside it
(on the 20 real STARE images the computed FOV alone already holds 99.99 % of
the vessel pixels of both annotators; see ``docs/readme/data.md``).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import overload

import numpy as np

from napari_retsam.data.fov import compute_fov, fov_with_gold
from napari_retsam.data.imageio import read_binary_mask, read_image
from napari_retsam.data.layouts import DATASETS, Entry, canonical_name, list_entries
from napari_retsam.data.splits import SPLITS, check_split
from napari_retsam.errors import RetsamInputError

__all__ = ["DATASETS", "SPLITS", "Dataset", "Sample", "load_sample", "open_dataset"]


@dataclass
class Sample:
    """One fundus image with its gold standard and field of view.

    ``image`` is ``H×W×3`` ``uint8`` RGB; ``gold`` the ``H×W`` ``bool`` vessel
    mask of the chosen annotator (None where none ships); ``fov`` the ``H×W``
    ``bool`` field of view, shipped or computed (``fov_computed``).
    """

    id: str
    image: np.ndarray
    gold: np.ndarray | None
    fov: np.ndarray
    fov_computed: bool
    paths: dict[str, str | None] = field(default_factory=dict, repr=False)

    @property
    def shape(self) -> tuple[int, int]:
        """``(H, W)`` in pixels."""
        return int(self.image.shape[0]), int(self.image.shape[1])


def load_sample(entry: Entry) -> Sample:
    """Decode the files of one :class:`~napari_retsam.data.layouts.Entry`.

    Shapes of image, gold standard and shipped FOV must agree, else
    :class:`RetsamInputError` names the files.
    """
    image = read_image(entry.image)
    h, w = image.shape[:2]
    gold = read_binary_mask(entry.gold) if entry.gold is not None else None
    if gold is not None and gold.shape != (h, w):
        raise RetsamInputError(
            f"{entry.gold.name} is {gold.shape[0]}×{gold.shape[1]} but its image "
            f"{entry.image.name} is {h}×{w}"
        )
    if entry.fov is not None:
        fov = read_binary_mask(entry.fov)
        if fov.shape != (h, w):
            raise RetsamInputError(
                f"{entry.fov.name} is {fov.shape[0]}×{fov.shape[1]} but its image {entry.image.name} is {h}×{w}"
            )
        computed = False
    else:
        fov = fov_with_gold(compute_fov(image), gold)
        computed = True
    if not fov.any():
        raise RetsamInputError(f"the field of view of {entry.image.name} is empty")
    paths = {
        "image": str(entry.image),
        "gold": str(entry.gold) if entry.gold is not None else None,
        "fov": str(entry.fov) if entry.fov is not None else None,
    }
    return Sample(entry.id, image, gold, fov, computed, paths)


class Dataset(Sequence[Sample]):
    """A lazily loaded, read-only sequence of :class:`Sample` in id order.

    Attributes: ``name`` (one of :data:`DATASETS`), ``root``, ``split``,
    ``annotator``, ``ids`` (sample ids), ``entries`` (the files per sample).
    ``ds[i]`` decodes sample ``i``; ``ds[i:j]`` returns a list; ``ds.get(id)``
    looks a sample up by id. Nothing is cached: indexing twice decodes twice.
    """

    def __init__(self, name: str, root: Path, split: str, annotator: int, entries: list[Entry]) -> None:
        self.name = name
        self.root = root
        self.split = split
        self.annotator = annotator
        self.entries: tuple[Entry, ...] = tuple(entries)
        self.ids: tuple[str, ...] = tuple(e.id for e in entries)

    def __len__(self) -> int:
        return len(self.entries)

    @overload
    def __getitem__(self, index: int) -> Sample: ...

    @overload
    def __getitem__(self, index: slice) -> list[Sample]: ...

    def __getitem__(self, index: int | slice) -> Sample | list[Sample]:
        if isinstance(index, slice):
            return [load_sample(e) for e in self.entries[index]]
        return load_sample(self.entries[index])

    def __iter__(self) -> Iterator[Sample]:
        for e in self.entries:
            yield load_sample(e)

    def get(self, sample_id: str) -> Sample:
        """The sample with id ``sample_id``; :class:`RetsamInputError` if there is none."""
        try:
            return load_sample(self.entries[self.ids.index(sample_id)])
        except ValueError as exc:
            raise RetsamInputError(
                f"no sample {sample_id!r} in {self.name} {self.split} split (ids: {', '.join(self.ids[:5])}...)"
            ) from exc

    def __repr__(self) -> str:
        return (
            f"Dataset(name={self.name!r}, root={str(self.root)!r}, split={self.split!r}, "
            f"annotator={self.annotator}, n={len(self)})"
        )


def open_dataset(name: str, root: str | Path, split: str = "test", annotator: int = 1) -> Dataset:
    """Open dataset ``name`` (``drive``, ``stare``, ``chase`` or ``folder``) at ``root``.

    ``split`` is ``train``, ``test`` or ``all`` (splits documented in
    :mod:`napari_retsam.data.splits`); ``annotator`` 1 or 2 (DRIVE: 1st_manual /
    2nd_manual, test split only; STARE: ah / vk; CHASE_DB1: 1stHO / 2ndHO;
    folder: ``masks/`` / ``masks2/``). Raises :class:`RetsamInputError` for an
    unknown name/split/annotator, a missing folder, or missing/unmatched files.
    """
    key = canonical_name(name)
    split = check_split(split)
    entries = list_entries(key, root, split, annotator)
    if not entries:
        raise RetsamInputError(f"the {split} split of {name} at {root} has no samples")
    return Dataset(key, Path(root), split, int(annotator), entries)
