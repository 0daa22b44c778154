"""Atomic file writing and content hashing (no torch at module level).

A file written here is either the complete new content or the previous file:
the data go to a temporary file in the same folder, are flushed and fsynced, and
then ``os.replace`` swaps it in (atomic on POSIX and Windows for one volume).
A process killed mid-write leaves at most a stray ``.tmp`` file, never a
half-written checkpoint under the real name; the next write into that folder in
another process removes such leftovers (:func:`clean_stale_temp_files`: only
names of this module's pattern, older than a minute and not locked by a writer).

New files get the usual permissions ``0666 & ~umask`` (a replaced file keeps its
permission bits), not the private ``0600`` of :func:`tempfile.mkstemp`.
"""

from __future__ import annotations

import hashlib
import io
import os
import re
import stat
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from napari_retsam.errors import RetsamInputError

__all__ = [
    "TEMP_NAME_PATTERN",
    "atomic_write_bytes",
    "atomic_save_torch",
    "clean_stale_temp_files",
    "current_umask",
    "ensure_writable_dir",
    "file_key",
    "file_sha256",
    "known_sha256",
    "load_torch_checkpoint",
    "sha256_file",
]


#: Names of the temporary files :func:`atomic_write_bytes` creates: ``.<target name>.<8 random chars>.tmp``
#: (:func:`tempfile.mkstemp` with ``prefix=".<name>."``, ``suffix=".tmp"``). Only these are ever cleaned up.
TEMP_NAME_PATTERN = re.compile(r"^\.(?P<target>.+)\.[a-z0-9_]{8}\.tmp$")
#: A leftover temporary file is removed only when it was last modified longer ago than this (seconds).
STALE_TEMP_AGE_S = 60.0

_cleaned_folders: set[str] = set()
_cleaned_lock = threading.Lock()
_umask_lock = threading.Lock()


def current_umask() -> int:
    """The process umask, read without changing it where the OS allows (``/proc/self/status``)."""
    try:
        with open("/proc/self/status", encoding="ascii", errors="replace") as fh:
            for line in fh:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    with _umask_lock:  # fallback: set and restore (briefly process-wide)
        mask = os.umask(0o022)
        os.umask(mask)
    return mask


def _lock_nb(fd: int) -> bool:
    """Try an exclusive non-blocking ``flock`` on ``fd``; True when held (or locks unsupported)."""
    try:
        import fcntl
    except ImportError:  # not POSIX: no advisory locks, fall back to the age rule alone
        return True
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    except OSError:  # a filesystem without flock support: the age rule decides
        return True
    return True


def clean_stale_temp_files(folder: str | os.PathLike[str], *, min_age_s: float = STALE_TEMP_AGE_S) -> list[Path]:
    """Remove leftovers of killed atomic writes in ``folder``; returns the removed paths.

    Only regular files whose name matches :data:`TEMP_NAME_PATTERN` are touched,
    and only when they were last modified more than ``min_age_s`` seconds ago and
    no writer holds a lock on them (a live writer keeps its temporary file
    ``flock``-ed until it is renamed). Errors (a read-only folder, a race with
    another cleaner) are ignored: cleaning is best effort.
    """
    removed: list[Path] = []
    now = time.time()
    try:
        entries = list(os.scandir(folder))
    except OSError:
        return removed
    for entry in entries:
        if not TEMP_NAME_PATTERN.match(entry.name):
            continue
        try:
            info = entry.stat(follow_symlinks=False)
            if not stat.S_ISREG(info.st_mode) or now - info.st_mtime <= min_age_s:
                continue
            fd = os.open(entry.path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0))
        except OSError:
            continue
        try:
            if _lock_nb(fd):
                os.unlink(entry.path)
                removed.append(Path(entry.path))
        except OSError:
            pass
        finally:
            os.close(fd)
    return removed


def _clean_once(folder: Path) -> None:
    """:func:`clean_stale_temp_files` the first time this process writes into ``folder``."""
    try:
        key = str(folder.resolve())
    except OSError:
        return
    with _cleaned_lock:
        if key in _cleaned_folders:
            return
        _cleaned_folders.add(key)
    clean_stale_temp_files(folder)


def atomic_write_bytes(path: str | os.PathLike[str], data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically; returns the path.

    The file gets mode ``0666 & ~umask`` when new and keeps its permission bits
    when it replaces a file. The first write of a process into a folder also
    removes stale temporary files of killed writes there (:func:`clean_stale_temp_files`).
    Raises :class:`RetsamInputError` when the folder is missing, not writable or
    full; the previous file at ``path`` (if any) is then untouched.
    """
    path = Path(path)
    folder = path.parent if str(path.parent) else Path(".")
    _clean_once(folder)
    try:
        mode = stat.S_IMODE(os.stat(path).st_mode)
    except OSError:
        mode = 0o666 & ~current_umask()
    tmp_name = None
    try:
        fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=folder)
        with os.fdopen(fd, "wb") as fh:
            _lock_nb(fh.fileno())  # marks the file as being written (see clean_stale_temp_files)
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
            if hasattr(os, "fchmod"):
                os.fchmod(fh.fileno(), mode)
        if not hasattr(os, "fchmod"):
            os.chmod(tmp_name, mode)
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
    data: bytes | None = None,
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

    ``data``: the file's bytes when the caller already read them (to hash them in
    the same pass); they are unpickled instead of reading the file again.
    torch is imported here, not at module level.
    """
    import torch

    path = Path(path)
    if data is None and not path.is_file():
        raise RetsamInputError(missing.format(path=path))
    try:
        source = io.BytesIO(data) if data is not None else path
        loaded = torch.load(source, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any unpickling failure means a bad file
        text = str(exc).strip()
        first = text.splitlines()[0][:160] if text else type(exc).__name__
        raise RetsamInputError(
            unreadable.format(path=path, error=first, error_type=type(exc).__name__, error_text=exc)
        ) from exc
    if not isinstance(loaded, dict):
        raise RetsamInputError(not_dict.format(path=path, type=type(loaded).__name__))
    return loaded


def sha256_file(path: str | os.PathLike[str], chunk_size: int = 1 << 20) -> str:
    """Hex SHA-256 of a file's bytes, read in chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(chunk_size), b""):
            digest.update(chunk)
    return digest.hexdigest()


_SHA256_MEMO: dict[tuple[str, int, int], str] = {}


def file_key(path: str | os.PathLike[str]) -> tuple[str, int, int]:
    """(resolved path, size, mtime_ns): a file as it is now (memo key of the hashes)."""
    path = Path(path)
    st = path.stat()
    return str(path.resolve()), st.st_size, st.st_mtime_ns


def file_sha256(path: str | os.PathLike[str], *, data: bytes | None = None) -> str:
    """SHA-256 of a file, memoised on :func:`file_key` (a changed file is hashed again).

    ``data``: the file's bytes when the caller has read them anyway; they are
    hashed instead of reading the file a second time.
    """
    key = file_key(path)
    if key not in _SHA256_MEMO:
        _SHA256_MEMO[key] = hashlib.sha256(data).hexdigest() if data is not None else sha256_file(path)
    return _SHA256_MEMO[key]


def known_sha256(path: str | os.PathLike[str]) -> str | None:
    """The memoised SHA-256 of ``path`` as it is now, or None when it was not hashed yet."""
    try:
        return _SHA256_MEMO.get(file_key(path))
    except OSError:
        return None


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
