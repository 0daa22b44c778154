"""Output files of the CLI commands that write masks and probability maps.

Shared by ``retsam baseline`` and ``retsam segment``:

* :func:`check_output` validates an output path (extension, existing writable
  folder, not a folder itself) *before* any computation runs;
* :func:`check_mask_outputs` does that for the ``--out`` / ``--prob-out`` pair;
* :func:`check_not_input` refuses an output that would write over one of the
  command's inputs (every command that writes files calls it before any work);
* :func:`encode_array` turns an array into PNG/TIFF/.npy bytes;
* :func:`write_mask` / :func:`write_probability` write them atomically
  (:func:`napari_retsam.io_utils.atomic_write_bytes`).

Encodings: masks are 8-bit images (0 background, 255 vessel; or class labels);
probability maps are ``.npy`` float32 in ``[0, 1]`` or 8-bit ``round(255 · p)``
images, the encoding ``retsam evaluate`` decodes.

Only the standard library is imported at module level (numpy and Pillow inside
the functions; never torch, napari or Qt).
"""

from __future__ import annotations

import io
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

__all__ = [
    "MASK_FORMATS",
    "PROB_FORMATS",
    "check_output",
    "check_mask_outputs",
    "check_not_input",
    "dataset_files",
    "encode_array",
    "write_mask",
    "write_probability",
]

MASK_FORMATS: dict[str, str] = {".png": "PNG", ".tif": "TIFF", ".tiff": "TIFF"}
"""Mask file extension -> Pillow format name."""

PROB_FORMATS: dict[str, str] = {".npy": "NPY", **MASK_FORMATS}
"""Probability-map file extension -> format (``NPY``: float32 .npy; else 8-bit image)."""


def check_output(path_text: str | os.PathLike[str], formats: dict[str, str], what: str) -> Path:
    """Validate an output path's extension and folder before any computation.

    ``formats`` maps allowed lower-case extensions to formats; ``what`` names the
    file in the one-line :class:`~napari_retsam.errors.RetsamInputError` message
    (wrong extension, missing or read-only folder, path is a folder).
    """
    from napari_retsam.errors import RetsamInputError

    path = Path(path_text)
    if path.suffix.lower() not in formats:
        raise RetsamInputError(f"{what} {path} must end in one of {', '.join(sorted(formats))}")
    folder = path.parent if str(path.parent) else Path(".")
    if not folder.is_dir():
        raise RetsamInputError(f"cannot write {what} {path}: folder {folder} does not exist")
    if not os.access(folder, os.W_OK):
        raise RetsamInputError(f"cannot write {what} {path}: folder {folder} is not writable")
    if path.is_dir():
        raise RetsamInputError(f"cannot write {what} {path}: it is a folder")
    return path


def check_mask_outputs(out: str, prob_out: str | None) -> tuple[Path, Path | None]:
    """Check ``--out`` (mask) and the optional ``--prob-out`` (probability map).

    Returns ``(out, prob_out or None)``; the two must be different files.
    """
    from napari_retsam.errors import RetsamInputError

    out_path = check_output(out, MASK_FORMATS, "mask output")
    prob_path = check_output(prob_out, PROB_FORMATS, "probability output") if prob_out else None
    if prob_path is not None and prob_path.resolve() == out_path.resolve():
        raise RetsamInputError("--out and --prob-out must be different files")
    return out_path, prob_path


def _identity(path: Path) -> tuple[str, tuple[int, int] | None]:
    """``(resolved path, (device, inode) or None)`` of a path that may not exist."""
    try:
        resolved = str(path.resolve())
    except (OSError, RuntimeError):
        resolved = os.path.abspath(path)
    try:
        st = os.stat(path)
        inode = (st.st_dev, st.st_ino)
    except OSError:
        inode = None
    return resolved, inode


def check_not_input(
    inputs: Iterable[tuple[str, str | os.PathLike[str] | None]],
    *,
    files: Iterable[tuple[str, str | os.PathLike[str] | None]] = (),
    folders: Iterable[tuple[str, str | os.PathLike[str] | None]] = (),
    into: Iterable[tuple[str, str | os.PathLike[str] | None]] = (),
) -> None:
    """Refuse (one-line :class:`~napari_retsam.errors.RetsamInputError`) an output
    that would write over one of the command's inputs.

    ``inputs``: ``(label, path)`` of every file or folder the command reads
    (``None`` paths are skipped); ``files``: ``(label, path)`` of the files it
    writes; ``folders``: ``(label, path)`` of the folders whose contents it
    writes or replaces; ``into``: folders it adds new files to. An input
    conflicts when it is the same file as an output file (symbolic and hard
    links included: same resolved path or same device and inode), lies inside
    (or is) an output folder, or is a file directly inside an ``into`` folder
    (the outputs would mix with the inputs, e.g. predictions written into a
    dataset's ``images/``). Call it before any work; a checkpoint a run resumes
    from is not an input in this sense. Cost: one ``stat`` per path.
    """
    from napari_retsam.errors import RetsamInputError

    sources = []
    for label, path in inputs:
        if path is None:
            continue
        source = Path(path)
        resolved, inode = _identity(source)
        parent = _identity(source.parent)
        sources.append((label, source, resolved, inode, source.is_dir(), parent))
    if not sources:
        return
    by_name = {s[2]: s for s in sources if not s[4]}
    by_inode = {s[3]: s for s in sources if s[3] is not None and not s[4]}
    for out_label, target in files:
        if target is None:
            continue
        resolved, inode = _identity(Path(target))
        hit = by_name.get(resolved) or (by_inode.get(inode) if inode is not None else None)
        if hit is not None:
            raise RetsamInputError(
                f"{out_label} {target} is the input {hit[0]} {hit[1]}; writing it would destroy the input: "
                "choose another output path"
            )
    for out_label, target in folders:
        if target is None:
            continue
        resolved, inode = _identity(Path(target))
        prefix = resolved.rstrip(os.sep) + os.sep
        for label, source, src_resolved, src_inode, _, _ in sources:
            if src_resolved == resolved or src_resolved.startswith(prefix) or (
                    inode is not None and src_inode == inode):
                raise RetsamInputError(
                    f"{out_label} {target} would write over the input {label} {source}: choose another output path"
                )
    for out_label, target in into:
        if target is None:
            continue
        resolved, inode = _identity(Path(target))
        for label, source, _, _, is_dir, parent in sources:
            if not is_dir and (parent[0] == resolved or (inode is not None and parent[1] == inode)):
                raise RetsamInputError(
                    f"{out_label} {target} holds the input {label} {source}; the outputs would mix with the "
                    "inputs: choose another output folder"
                )


def dataset_files(dataset: Any) -> list[tuple[str, Path]]:
    """``(label, path)`` of every file of an opened dataset (images, gold, FOV), for :func:`check_not_input`."""
    found = []
    for entry in getattr(dataset, "entries", ()):
        for kind in ("image", "gold", "fov"):
            path = getattr(entry, kind, None)
            if path is not None:
                found.append((f"dataset {kind} file", Path(path)))
    return found


def encode_array(array: Any, fmt: str) -> bytes:
    """Encode an array as file bytes: ``"NPY"`` -> ``np.save`` (no pickle) of any
    array; ``"PNG"``/``"TIFF"`` -> a Pillow image of a uint8 H×W (or H×W×3) array."""
    import numpy as np

    buffer = io.BytesIO()
    if fmt == "NPY":
        np.save(buffer, array, allow_pickle=False)
    else:
        from PIL import Image

        Image.fromarray(array).save(buffer, format=fmt)
    return buffer.getvalue()


def write_mask(path: Path, mask_image: Any) -> Path:
    """Atomically write a uint8 mask image (0/255 or labels) in the format of ``path``'s extension."""
    from napari_retsam.io_utils import atomic_write_bytes

    return atomic_write_bytes(path, encode_array(mask_image, MASK_FORMATS[path.suffix.lower()]))


def write_probability(path: Path, prob: Any) -> Path:
    """Atomically write a probability map ``p`` in ``[0, 1]``: ``.npy`` as float32,
    ``.png``/``.tif`` as uint8 ``round(255 · p)``. A map holding NaN/inf is refused
    (:class:`RetsamInputError`), never written."""
    import numpy as np

    from napari_retsam.errors import RetsamInputError
    from napari_retsam.io_utils import atomic_write_bytes

    fmt = PROB_FORMATS[path.suffix.lower()]
    prob = np.asarray(prob)
    bad = int(np.count_nonzero(~np.isfinite(prob))) if prob.dtype.kind in "fc" else 0
    if bad:
        raise RetsamInputError(f"refusing to write {path}: the probability map holds {bad} NaN/inf value(s)")
    data = prob.astype(np.float32) if fmt == "NPY" else np.rint(prob * 255.0).astype(np.uint8)
    return atomic_write_bytes(path, encode_array(data, fmt))
