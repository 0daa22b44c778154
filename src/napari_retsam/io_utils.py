"""Atomic file writing and content hashing (no torch at module level).

A file written here is either the complete new content or the previous file:
the data go to a temporary file in the same folder, are flushed and fsynced, and
then ``os.replace`` swaps it in (atomic on POSIX and Windows for one volume).
A process killed mid-write leaves at most a stray ``.tmp`` file, never a
half-written checkpoint under the real name.
"""

from __future__ import annotations

import hashlib
import io
import os
import tempfile
from pathlib import Path
from typing import Any

from napari_retsam.errors import RetsamInputError

__all__ = [
    "atomic_write_bytes",
    "atomic_save_torch",
    "ensure_writable_dir",
    "load_torch_checkpoint",
    "sha256_file",
]


def atomic_write_bytes(path: str | os.PathLike[str], data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically; returns the path.

    Raises :class:`RetsamInputError` when the folder is missing, not writable or
    full; the previous file at ``path`` (if any) is then untouched.
    """
    path = Path(path)
    folder = path.parent if str(path.parent) else Path(".")
    tmp_name = None
    try:
        fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=folder)
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp_name, path)
        tmp_name = None
    except OSError as exc:
        raise RetsamInputError(f"cannot write {path}: {exc.strerror or exc}") from exc
    finally:
        if tmp_name is not None and os.path.exists(tmp_name):
            os.unlink(tmp_name)
    return path


def atomic_save_torch(obj: Any, path: str | os.PathLike[str]) -> Path:
    """``torch.save(obj)`` into memory, then :func:`atomic_write_bytes`."""
    import torch

    buffer = io.BytesIO()
    torch.save(obj, buffer)
    return atomic_write_bytes(path, buffer.getvalue())


def load_torch_checkpoint(
    path: str | os.PathLike[str],
    *,
    missing: str = "checkpoint file {path} does not exist",
    unreadable: str = "cannot read checkpoint {path}: truncated, corrupt or not a PyTorch weights file ({error})",
    not_dict: str = "checkpoint {path} holds a {type}, expected a dict",
) -> dict[str, Any]:
    """``torch.load(path, map_location="cpu", weights_only=True)`` of a dict, with clear errors.

    ``weights_only=True`` means a checkpoint never runs code: only tensors and
    plain values load. Every failure is a :class:`RetsamInputError` whose one-line
    message is the matching template, ``str.format``-ed with these fields:

    * ``missing`` (no such file, or not a file): ``{path}``;
    * ``unreadable`` (truncated, garbage, not a torch file; garbage bytes can
      surface as nearly any exception inside the unpickler, so any
      :class:`Exception` counts): ``{path}``, ``{error}`` (first line of the
      exception text, at most 160 characters, or its type name when empty),
      ``{error_type}`` (the exception's type name), ``{error_text}`` (its full text);
    * ``not_dict`` (the file holds something other than a dict): ``{path}``,
      ``{type}`` (type name of what it holds).

    torch is imported here, not at module level.
    """
    import torch

    path = Path(path)
    if not path.is_file():
        raise RetsamInputError(missing.format(path=path))
    try:
        data = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any unpickling failure means a bad file
        text = str(exc).strip()
        first = text.splitlines()[0][:160] if text else type(exc).__name__
        raise RetsamInputError(
            unreadable.format(path=path, error=first, error_type=type(exc).__name__, error_text=exc)
        ) from exc
    if not isinstance(data, dict):
        raise RetsamInputError(not_dict.format(path=path, type=type(data).__name__))
    return data


def sha256_file(path: str | os.PathLike[str], chunk_size: int = 1 << 20) -> str:
    """Hex SHA-256 of a file's bytes, read in chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(chunk_size), b""):
            digest.update(chunk)
    return digest.hexdigest()


def ensure_writable_dir(path: str | os.PathLike[str]) -> Path:
    """Create ``path`` if needed and check that files can be written there."""
    path = Path(path)
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise RetsamInputError(f"cannot create output folder {path}: {exc.strerror or exc}") from exc
    if not os.access(path, os.W_OK):
        raise RetsamInputError(f"output folder {path} is not writable")
    return path
