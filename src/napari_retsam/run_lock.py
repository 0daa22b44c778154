"""A run owns its output folder: one lock helper for ``finetune`` and ``gan train``.

Two training runs writing into the same folder at once would interleave their
checkpoints and logs, and a new run started in a folder that holds an earlier
run would silently replace its work. This module guards both (standard library
only; no torch, napari or Qt):

* :func:`lock_run_folder` (a context manager) holds an exclusive ``flock`` on
  ``<folder>/.retsam-run.lock`` for the whole run. The lock belongs to the open
  file, so the kernel releases it when the process ends in any way, ``kill -9``
  included: a crashed run never leaves the folder stuck. The lock file records
  the holder (pid, host, command, start time) so a second run can say who holds
  the folder; it is removed when the run ends normally (and so is the folder
  when the run created it and wrote nothing). A second run gets a
  one-line :class:`~napari_retsam.errors.RetsamInputError` (exit code 2 in the
  CLI) naming the folder and the holder.
* :func:`check_fresh_run_folder` refuses a new run in a folder that already
  holds an earlier run's files unless it resumes from that folder or
  ``overwrite`` is given; :func:`clear_previous_run` then removes the earlier
  run's files so none of them survives next to the new ones.

On systems without ``fcntl`` (Windows) ``msvcrt.locking`` is used; on a
filesystem that supports neither, the run proceeds unlocked.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import sys
import threading
import time
from collections.abc import Iterable, Iterator
from pathlib import Path

from napari_retsam.errors import RetsamInputError

__all__ = [
    "LOCK_NAME",
    "check_fresh_run_folder",
    "clear_previous_run",
    "is_main_process",
    "lock_run_folder",
    "previous_run_files",
    "resumes_in",
]

#: Name of the lock file inside the output folder.
LOCK_NAME = ".retsam-run.lock"

# Folders this process holds: resolved path -> [thread id, depth]. The same thread may
# enter again (the CLI locks early, the library it calls locks again); another thread
# of this process is refused like another process.
_held: dict[str, list[int]] = {}
_held_lock = threading.Lock()


def is_main_process() -> bool:
    """True unless this is a non-zero rank of a torchrun job (only rank 0 writes and locks)."""
    return os.environ.get("RANK", "0") in ("", "0")


def _try_lock(fd: int) -> bool | None:
    """Exclusive non-blocking lock of ``fd``: True held, False busy, None unsupported."""
    try:
        import fcntl
    except ImportError:
        fcntl = None  # type: ignore[assignment]
    if fcntl is not None:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return True
        except BlockingIOError:
            return False
        except OSError:
            return None
    try:
        import msvcrt
    except ImportError:
        return None
    try:
        msvcrt.locking(fd, msvcrt.LK_NBLCK, 1)
        return True
    except OSError:
        return False


def _describe_holder(path: Path) -> str:
    try:
        info = json.loads(path.read_text(encoding="utf-8") or "{}")
    except (OSError, ValueError):
        info = {}
    if not isinstance(info, dict) or "pid" not in info:
        return "another process"
    text = f"pid {info.get('pid')} on {info.get('host', '?')}"
    if info.get("command"):
        text += f" ({info['command']}"
        text += f", since {info['started']})" if info.get("started") else ")"
    return text


@contextlib.contextmanager
def lock_run_folder(folder: str | os.PathLike[str], command: str = "") -> Iterator[Path]:
    """Hold ``folder`` (created if needed) for one run; yields the folder.

    Raises :class:`RetsamInputError` ("output folder X is in use by pid N on
    HOST (retsam finetune, since ...)") when another live process holds it.
    ``command`` names this run for such messages.
    """
    from napari_retsam.io_utils import ensure_writable_dir

    created = not Path(folder).exists()
    folder = ensure_writable_dir(folder)
    key = str(folder.resolve())
    me = threading.get_ident()
    with _held_lock:
        entry = _held.get(key)
        if entry is not None and entry[0] == me:
            entry[1] += 1
            reentered = True
        else:
            reentered = False
    if reentered:
        try:
            yield folder
        finally:
            with _held_lock:
                _held[key][1] -= 1
        return
    path = folder / LOCK_NAME
    for _ in range(20):
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as exc:
            raise RetsamInputError(f"cannot lock output folder {folder}: {exc.strerror or exc}") from exc
        held = _try_lock(fd)
        if held is False:
            os.close(fd)
            raise RetsamInputError(
                f"output folder {folder} is in use by {_describe_holder(path)}; "
                "wait for that run to finish or choose another --out"
            )
        try:
            same = os.path.samestat(os.fstat(fd), os.stat(path))
        except OSError:
            same = False
        if not same:  # the previous holder removed the file between our open and lock: retry
            os.close(fd)
            continue
        break
    else:  # pragma: no cover - only under a storm of competing runs
        raise RetsamInputError(f"cannot lock output folder {folder}: it keeps changing; retry")
    info = {"pid": os.getpid(), "host": socket.gethostname(), "command": command,
            "started": time.strftime("%Y-%m-%d %H:%M:%S"), "argv": sys.argv[:1]}
    try:
        os.ftruncate(fd, 0)
        os.write(fd, json.dumps(info).encode())
    except OSError:
        pass  # the lock holds even when the note cannot be written (full disk)
    with _held_lock:
        _held[key] = [me, 1]
    try:
        yield folder
    finally:
        with _held_lock:
            _held.pop(key, None)
        with contextlib.suppress(OSError):
            os.unlink(path)  # while still locked, so nobody locks a file that is going away
        os.close(fd)
        if created:  # a run that failed before writing anything leaves no empty folder behind
            with contextlib.suppress(OSError):
                folder.rmdir()


def previous_run_files(folder: str | os.PathLike[str], names: Iterable[str]) -> list[Path]:
    """The files/folders of ``names`` that exist in ``folder`` (an earlier run's output)."""
    folder = Path(folder)
    found = []
    for name in names:
        path = folder / name
        if path.is_dir():
            if any(path.iterdir()):
                found.append(path)
        elif path.exists():
            found.append(path)
    return found


def resumes_in(resume: str | os.PathLike[str] | None, folder: str | os.PathLike[str]) -> bool:
    """True when ``resume`` is a file directly inside ``folder`` (continuing the run there)."""
    if resume is None:
        return False
    try:
        return os.path.samefile(Path(resume).parent, folder)
    except OSError:
        return False


def check_fresh_run_folder(
    folder: str | os.PathLike[str],
    names: Iterable[str],
    *,
    overwrite: bool,
    resume: str | os.PathLike[str] | None = None,
    what: str = "run",
) -> list[Path]:
    """Refuse to start a new run over an earlier one; returns the earlier run's files.

    ``names`` are the files/folders the run writes in ``folder``. Allowed when
    none exists, when ``resume`` is a file inside ``folder`` (continuing that
    run), or with ``overwrite``. Otherwise :class:`RetsamInputError` with one line.
    """
    folder = Path(folder)
    found = previous_run_files(folder, names)
    if not found or overwrite or resumes_in(resume, folder):
        return found
    listed = ", ".join(p.name for p in found[:3]) + (", ..." if len(found) > 3 else "")
    raise RetsamInputError(
        f"output folder {folder} already holds an earlier {what} ({listed}); "
        f"pass --resume {folder / 'last.pt'} to continue it, --overwrite to replace it, or choose another --out"
    )


def clear_previous_run(files: Iterable[str | os.PathLike[str]], keep: Iterable[str | os.PathLike[str]] = ()) -> None:
    """Delete an earlier run's files (folders: the files directly inside, then the folder if empty).

    ``keep``: paths never deleted (e.g. the checkpoint a run resumes from).
    """
    kept = set()
    for path in keep:
        with contextlib.suppress(OSError):
            kept.add(Path(path).resolve())
    for item in files:
        item = Path(item)
        try:
            if item.is_dir():
                for child in item.iterdir():
                    if child.is_file() and child.resolve() not in kept:
                        child.unlink()
                with contextlib.suppress(OSError):
                    item.rmdir()
            elif item.resolve() not in kept:
                item.unlink()
        except OSError as exc:
            raise RetsamInputError(f"cannot remove {item} of the earlier run: {exc.strerror or exc}") from exc
