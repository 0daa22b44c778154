"""File layouts of the datasets: which files make up each sample.

Each ``*_entries`` function lists a dataset folder and returns one
:class:`Entry` (paths only, nothing decoded) per sample of the requested split,
sorted by id. Missing or unmatched files raise :class:`RetsamInputError` naming
them.

Published layouts (see ``issues show 2`` and the datasets' pages):

* DRIVE: ``{training,test}/images/NN_{training,test}.tif``,
  ``{training,test}/1st_manual/NN_manual1.gif``, ``test/2nd_manual/NN_manual2.gif``,
  ``{training,test}/mask/NN_{training,test}_mask.gif``.
* STARE: ``images/imNNNN.ppm[.gz]``, ``labels-ah/imNNNN.ah.{ppm,pgm}[.gz]``,
  ``labels-vk/imNNNN.vk.{ppm,pgm}[.gz]``; labels are matched on the image id
  whatever the suffix, extension and compression.
* CHASE_DB1: one flat folder with ``Image_NN[LR].jpg``,
  ``Image_NN[LR]_1stHO.png`` and ``Image_NN[LR]_2ndHO.png``.
* folder: ``images/<id>.<ext>``, optional ``masks/<id>.<ext>``, optional
  ``fov/<id>.<ext>``; optionally split into ``train/`` and ``test/`` folders
  of that layout.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from napari_retsam.data.imageio import is_image_file, split_image_name
from napari_retsam.data.splits import chase_split_of, check_split, stare_split_of
from napari_retsam.errors import RetsamInputError

__all__ = [
    "DATASETS",
    "Entry",
    "chase_entries",
    "detect_dataset",
    "drive_entries",
    "folder_entries",
    "canonical_name",
    "list_entries",
    "stare_entries",
]

DATASETS: tuple[str, ...] = ("drive", "stare", "chase", "folder")

STARE_ANNOTATORS = {1: "ah", 2: "vk"}
CHASE_ANNOTATORS = {1: "1stHO", 2: "2ndHO"}
DRIVE_SPLIT_DIRS = {"train": "training", "test": "test"}

_CHASE_IMAGE = re.compile(r"^Image_\d+[LR]$", re.IGNORECASE)
_CHASE_LABEL = re.compile(r"^(Image_\d+[LR])_(1stHO|2ndHO)$", re.IGNORECASE)
_DRIVE_IMAGE = re.compile(r"^(\d+)_(training|test)$", re.IGNORECASE)


@dataclass(frozen=True)
class Entry:
    """The files of one sample: ``gold`` is None where no annotation ships, ``fov``
    None where the FOV must be computed."""

    id: str
    image: Path
    gold: Path | None
    fov: Path | None


def _listing(folder: Path) -> list[Path]:
    """Image files directly in ``folder`` (hidden files and non-images skipped)."""
    try:
        return sorted(p for p in folder.iterdir() if p.is_file() and is_image_file(p))
    except FileNotFoundError as exc:
        raise RetsamInputError(f"folder not found: {folder}") from exc
    except NotADirectoryError as exc:
        raise RetsamInputError(f"not a folder: {folder}") from exc
    except OSError as exc:
        raise RetsamInputError(f"cannot list {folder}: {exc.strerror or exc}") from exc


def _names(paths: list[str] | list[Path], limit: int = 5) -> str:
    shown = [Path(p).name if isinstance(p, Path) else str(p) for p in paths[:limit]]
    more = f" and {len(paths) - limit} more" if len(paths) > limit else ""
    return ", ".join(shown) + more


def _index_by_id(paths: list[Path], key, folder: Path, what: str) -> dict[str, Path]:
    """Map id -> path with ``key(path) -> id | None``; duplicate ids are an error."""
    out: dict[str, Path] = {}
    for p in paths:
        k = key(p)
        if k is None:
            continue
        if k in out:
            raise RetsamInputError(
                f"{what} in {folder}: two files for {k!r} ({out[k].name}, {p.name}); keep one"
            )
        out[k] = p
    return out


def _require_dir(path: Path, what: str) -> Path:
    if not path.is_dir():
        raise RetsamInputError(f"{what}: folder {path} not found")
    return path


def _check_annotator(annotator: int, allowed: tuple[int, ...], dataset: str) -> int:
    try:
        a = int(annotator)
    except (TypeError, ValueError) as exc:
        raise RetsamInputError(f"annotator must be 1 or 2, got {annotator!r}") from exc
    if a not in allowed:
        raise RetsamInputError(
            f"{dataset} has annotator(s) {', '.join(map(str, allowed))}; got annotator {annotator}"
        )
    return a


# ---------------------------------------------------------------- DRIVE
def _drive_split_entries(split_dir: Path, split: str, annotator: int) -> list[Entry]:
    suffix = DRIVE_SPLIT_DIRS[split]
    images_dir = _require_dir(split_dir / "images", f"DRIVE {split} split")
    manual_name = "1st_manual" if annotator == 1 else "2nd_manual"
    if annotator == 2 and split == "train":
        raise RetsamInputError(
            "DRIVE has a second annotator (2nd_manual) only for the test split; "
            "use --annotator 1 for train/all"
        )
    manual_dir = _require_dir(split_dir / manual_name, f"DRIVE {split} annotator {annotator}")
    mask_dir = _require_dir(split_dir / "mask", f"DRIVE {split} FOV masks")

    def image_key(p: Path) -> str | None:
        stem = split_image_name(p)[0]
        m = _DRIVE_IMAGE.match(stem)
        return stem if m and m.group(2).lower() == suffix else None

    images = _index_by_id(_listing(images_dir), image_key, images_dir, "DRIVE images")
    if not images:
        raise RetsamInputError(f"no DRIVE images NN_{suffix}.tif in {images_dir}")
    stray = [p for p in _listing(images_dir) if image_key(p) is None]
    if stray:
        raise RetsamInputError(f"unexpected files in {images_dir} (expected NN_{suffix}.tif): {_names(stray)}")

    def manual_key(p: Path) -> str | None:
        m = re.match(rf"^(\d+)_manual{annotator}$", split_image_name(p)[0], re.IGNORECASE)
        return f"{m.group(1)}_{suffix}" if m else None

    def mask_key(p: Path) -> str | None:
        stem = split_image_name(p)[0]
        return stem[: -len("_mask")] if stem.lower().endswith("_mask") else None

    manuals = _index_by_id(_listing(manual_dir), manual_key, manual_dir, "DRIVE annotations")
    masks = _index_by_id(_listing(mask_dir), mask_key, mask_dir, "DRIVE FOV masks")
    _check_matched(images, manuals, manual_dir, f"NN_manual{annotator}.gif")
    _check_matched(images, masks, mask_dir, f"NN_{suffix}_mask.gif")
    return [Entry(i, images[i], manuals[i], masks[i]) for i in sorted(images)]


def _check_matched(images: dict[str, Path], others: dict[str, Path], folder: Path, pattern: str) -> None:
    missing = sorted(set(images) - set(others))
    if missing:
        raise RetsamInputError(f"missing {pattern} in {folder} for image(s) {_names(missing)}")
    unmatched = sorted(set(others) - set(images))
    if unmatched:
        raise RetsamInputError(
            f"file(s) in {folder} without a matching image: {_names([others[k] for k in unmatched])}"
        )


def drive_entries(root: str | Path, split: str = "test", annotator: int = 1) -> list[Entry]:
    """DRIVE samples; ``root`` holds ``training/`` and ``test/`` (or is one of them)."""
    root = Path(root)
    split = check_split(split)
    annotator = _check_annotator(annotator, (1, 2), "DRIVE")
    own = _drive_own_split(root)
    if own is not None:  # root is DRIVE/test or DRIVE/training itself
        if split not in (own, "all"):
            raise RetsamInputError(f"{root} holds only the DRIVE {own} split; point --root at its parent folder")
        return _drive_split_entries(root, own, annotator)
    if not root.is_dir():
        raise RetsamInputError(f"DRIVE folder not found: {root}")
    if split == "all":
        if annotator == 2:
            raise RetsamInputError(
                "DRIVE has a second annotator (2nd_manual) only for the test split; "
                "use --split test with --annotator 2"
            )
        both = _drive_split_entries(root / "training", "train", 1) + _drive_split_entries(root / "test", "test", 1)
        return sorted(both, key=lambda e: e.id)
    return _drive_split_entries(root / DRIVE_SPLIT_DIRS[split], split, annotator)


def _drive_own_split(folder: Path) -> str | None:
    """``"train"``/``"test"`` when ``folder`` is a DRIVE split folder itself."""
    if not ((folder / "images").is_dir() and (folder / "1st_manual").is_dir()):
        return None
    for p in _listing(folder / "images"):
        m = _DRIVE_IMAGE.match(split_image_name(p)[0])
        if m:
            return "train" if m.group(2).lower() == "training" else "test"
    return None


# ---------------------------------------------------------------- STARE
def stare_entries(root: str | Path, split: str = "test", annotator: int = 1) -> list[Entry]:
    """STARE samples (10/10 split, see :mod:`napari_retsam.data.splits`); FOV computed."""
    root = Path(root)
    split = check_split(split)
    annotator = _check_annotator(annotator, (1, 2), "STARE")
    tag = STARE_ANNOTATORS[annotator]
    images_dir = _require_dir(root / "images", "STARE images")
    labels_dir = _require_dir(root / f"labels-{tag}", f"STARE annotator {annotator} ({tag})")

    def image_key(p: Path) -> str | None:
        stem = split_image_name(p)[0]
        return stem if re.match(r"^im\d+$", stem, re.IGNORECASE) else None

    def label_key(p: Path) -> str | None:
        # imNNNN.ah.ppm, imNNNN.ah.pgm, imNNNN.ah.ppm.gz, ...: the id is the part before the first dot
        stem = split_image_name(p)[0]
        parts = stem.split(".")
        if len(parts) == 2 and parts[1].lower() == tag and re.match(r"^im\d+$", parts[0], re.IGNORECASE):
            return parts[0]
        return None

    image_files = _listing(images_dir)
    images = _index_by_id(image_files, image_key, images_dir, "STARE images")
    stray = [p for p in image_files if image_key(p) is None]
    if stray:
        raise RetsamInputError(f"unexpected files in {images_dir} (expected imNNNN.ppm): {_names(stray)}")
    if not images:
        raise RetsamInputError(f"no STARE images imNNNN.ppm in {images_dir}")
    label_files = _listing(labels_dir)
    labels = _index_by_id(label_files, label_key, labels_dir, "STARE labels")
    stray = [p for p in label_files if label_key(p) is None]
    if stray:
        raise RetsamInputError(f"unexpected files in {labels_dir} (expected imNNNN.{tag}.ppm): {_names(stray)}")
    _check_matched(images, labels, labels_dir, f"imNNNN.{tag}.ppm")
    ids = [i for i in sorted(images) if split == "all" or stare_split_of(i) == split]
    return [Entry(i, images[i], labels[i], None) for i in ids]


# ---------------------------------------------------------------- CHASE_DB1
def chase_entries(root: str | Path, split: str = "test", annotator: int = 1) -> list[Entry]:
    """CHASE_DB1 samples (20/8 split, see :mod:`napari_retsam.data.splits`); FOV computed."""
    root = Path(root)
    split = check_split(split)
    annotator = _check_annotator(annotator, (1, 2), "CHASE_DB1")
    tag = CHASE_ANNOTATORS[annotator]
    if not root.is_dir():
        raise RetsamInputError(f"CHASE_DB1 folder not found: {root}")
    files = _listing(root)
    images: dict[str, Path] = {}
    labels: dict[str, Path] = {}
    stray: list[Path] = []
    for p in files:
        stem = split_image_name(p)[0]
        m = _CHASE_LABEL.match(stem)
        if m:
            if m.group(2).lower() == tag.lower():
                if m.group(1) in labels:
                    raise RetsamInputError(f"CHASE_DB1: two {tag} files for {m.group(1)} in {root}")
                labels[m.group(1)] = p
        elif _CHASE_IMAGE.match(stem):
            if stem in images:
                raise RetsamInputError(f"CHASE_DB1: two image files for {stem} in {root}")
            images[stem] = p
        else:
            stray.append(p)
    if stray:
        raise RetsamInputError(
            f"unexpected files in CHASE_DB1 folder {root} (expected Image_NNL.jpg, Image_NNL_1stHO.png): {_names(stray)}"
        )
    if not images:
        raise RetsamInputError(f"no CHASE_DB1 images Image_NN[LR].jpg in {root}")
    _check_matched(images, labels, root, f"Image_NN[LR]_{tag}.png")
    ids = [i for i in sorted(images) if split == "all" or chase_split_of(i) == split]
    return [Entry(i, images[i], labels[i], None) for i in ids]


# ---------------------------------------------------------------- generic folder
def _folder_flat_entries(root: Path, annotator: int) -> list[Entry]:
    images_dir = _require_dir(root / "images", "generic folder layout")
    image_files = _listing(images_dir)
    images = _index_by_id(image_files, lambda p: split_image_name(p)[0], images_dir, "images")
    if not images:
        raise RetsamInputError(f"no image files in {images_dir}")
    masks_name = "masks" if annotator == 1 else "masks2"
    masks: dict[str, Path] | None = None
    if (root / masks_name).is_dir():
        masks = _index_by_id(
            _listing(root / masks_name), lambda p: split_image_name(p)[0], root / masks_name, "masks"
        )
        _check_matched(images, masks, root / masks_name, "<id>.<ext>")
    elif annotator != 1:
        raise RetsamInputError(f"annotator {annotator} needs a {masks_name}/ folder in {root}")
    fovs: dict[str, Path] | None = None
    if (root / "fov").is_dir():
        fovs = _index_by_id(_listing(root / "fov"), lambda p: split_image_name(p)[0], root / "fov", "FOV masks")
        _check_matched(images, fovs, root / "fov", "<id>.<ext>")
    return [
        Entry(i, images[i], masks[i] if masks is not None else None, fovs[i] if fovs is not None else None)
        for i in sorted(images)
    ]


def folder_entries(root: str | Path, split: str = "test", annotator: int = 1) -> list[Entry]:
    """Generic-folder samples: ``images/``, optional ``masks/`` (annotator 2: ``masks2/``)
    and ``fov/``; ``train/``/``test/`` sub-folders give the splits, a flat folder is
    one set returned for every split. A folder with both a flat ``images/`` and
    ``train/images/`` or ``test/images/`` is refused as ambiguous."""
    root = Path(root)
    split = check_split(split)
    annotator = _check_annotator(annotator, (1, 2), "a generic folder")
    if not root.is_dir():
        raise RetsamInputError(f"folder not found: {root}")
    has = {s: (root / s / "images").is_dir() for s in ("train", "test")}
    if (root / "images").is_dir():
        if any(has.values()):
            subs = " and ".join(f"{s}/images/" for s in ("train", "test") if has[s])
            raise RetsamInputError(
                f"{root} is ambiguous: it holds both a flat images/ folder and {subs}; keep one layout "
                "(move the flat files into train/ or test/, or point --root at one of them)"
            )
        return _folder_flat_entries(root, annotator)
    if not any(has.values()):
        raise RetsamInputError(f"{root} has no images/ folder (nor train/images/, test/images/)")
    wanted = ("train", "test") if split == "all" else (split,)
    out: list[Entry] = []
    for s in wanted:
        if not has[s]:
            raise RetsamInputError(f"{root} has no {s}/images/ folder for split {split!r}")
        out += _folder_flat_entries(root / s, annotator)
    ids = [e.id for e in out]
    dup = sorted({i for i in ids if ids.count(i) > 1})
    if dup:
        raise RetsamInputError(f"ids occur in both train/ and test/ of {root}: {_names(dup)}")
    return out


_ENTRY_FUNCS = {"drive": drive_entries, "stare": stare_entries, "chase": chase_entries, "folder": folder_entries}


def canonical_name(name: str) -> str:
    """``"DRIVE"`` -> ``"drive"``, ``"CHASE_DB1"``/``"chase-db1"`` -> ``"chase"``; unknown names raise."""
    key = str(name).strip().lower().replace("-", "_")
    key = {"chase_db1": "chase", "chasedb1": "chase", "generic": "folder"}.get(key, key)
    if key not in DATASETS:
        raise RetsamInputError(f"unknown dataset {name!r}; choose one of {', '.join(DATASETS)}")
    return key


def list_entries(name: str, root: str | Path, split: str = "test", annotator: int = 1) -> list[Entry]:
    """Dispatch to the ``*_entries`` function of dataset ``name``."""
    return _ENTRY_FUNCS[canonical_name(name)](root, split, annotator)


def detect_dataset(path: str | Path) -> tuple[str, str] | None:
    """Guess ``(dataset name, default split)`` of a folder, or None if it is no dataset.

    DRIVE root -> ``("drive", "test")``; ``DRIVE/training`` -> ``("drive", "train")``;
    STARE, CHASE_DB1 and generic folders -> ``(name, "all")``. Only names are
    looked at, no image is decoded.
    """
    p = Path(path)
    if not p.is_dir():
        return None
    own = _drive_own_split(p)
    if own is not None:
        return "drive", own
    if (p / "training" / "images").is_dir() and (p / "test" / "images").is_dir():
        if (p / "test" / "1st_manual").is_dir() or (p / "training" / "1st_manual").is_dir():
            return "drive", "test"
    if (p / "images").is_dir() and ((p / "labels-ah").is_dir() or (p / "labels-vk").is_dir()):
        return "stare", "all"
    try:
        stems = [split_image_name(f)[0] for f in p.iterdir() if f.is_file() and is_image_file(f)]
    except OSError:
        stems = []
    if any(_CHASE_IMAGE.match(s) for s in stems) and any(_CHASE_LABEL.match(s) for s in stems):
        return "chase", "all"
    if (p / "images").is_dir() or (p / "train" / "images").is_dir() or (p / "test" / "images").is_dir():
        return "folder", "all"
    return None
