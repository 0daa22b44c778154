"""Range checks of numeric command-line options, run before any work (standard library only).

A value outside its range gets one line (:class:`~napari_retsam.errors.RetsamInputError`,
exit code 2) instead of an overflow deep inside torch or an out-of-memory array.

Limits
------
* seeds: ``0 .. 2**63 - 1`` (:data:`MAX_SEED`): what both ``torch.manual_seed``
  and numpy's generators take, with room for the per-epoch offsets added to it;
* ``gan train --size``: at most :data:`MAX_GAN_SIZE` px (one 2048² RGB batch
  element with the generator's activations already needs several GB);
* ``demo --size`` (synthetic fundus side): at most :data:`MAX_SYNTHETIC_SIZE`
  px, the size of the largest real fundus photographs (about 4000 × 4000);
* ``--cache-dir``: :func:`warn_if_cache_dir_unwritable` says once when new
  entries cannot be stored there.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

__all__ = [
    "MAX_GAN_SIZE",
    "MAX_SEED",
    "MAX_SYNTHETIC_SIZE",
    "check_range",
    "check_seed",
    "warn",
    "warn_if_cache_dir_unwritable",
]

#: Largest seed accepted anywhere (torch.manual_seed and numpy both take it).
MAX_SEED = 2**63 - 1
#: Largest GAN image side in px.
MAX_GAN_SIZE = 2048
#: Largest synthetic fundus side in px (``retsam demo --size``).
MAX_SYNTHETIC_SIZE = 4096


def check_range(value: Any, name: str, minimum: int | None = None, maximum: int | None = None,
                why: str = "") -> int:
    """``value`` as an int in ``[minimum, maximum]``; else one line naming the option (and ``why``)."""
    from napari_retsam.errors import RetsamInputError

    try:
        number = int(str(value).strip(), 10) if not isinstance(value, int) else int(value)
    except ValueError:
        raise RetsamInputError(f"{name} must be an integer, got {value!r}") from None
    if isinstance(value, bool):
        raise RetsamInputError(f"{name} must be an integer, got {value!r}")
    if minimum is not None and number < minimum:
        raise RetsamInputError(f"{name} must be >= {minimum}, got {number}")
    if maximum is not None and number > maximum:
        shown = f"{number}" if len(str(number)) <= 24 else f"{str(number)[:20]}... ({len(str(number))} digits)"
        raise RetsamInputError(f"{name} must be <= {maximum}{f' ({why})' if why else ''}, got {shown}")
    return number


def check_seed(value: Any, name: str = "--seed") -> int:
    """A seed in ``[0, 2**63 - 1]``."""
    return check_range(value, name, 0, MAX_SEED, "the largest seed torch and numpy take")


def warn(message: str) -> None:
    """One ``retsam: warning: ...`` line on stderr."""
    print(f"retsam: warning: {' '.join(str(message).split())}", file=sys.stderr, flush=True)


def warn_if_cache_dir_unwritable(cache_dir: str | os.PathLike[str] | None, flag: str = "--cache-dir") -> bool:
    """Say once (a warning line) when ``cache_dir`` cannot take new entries; True when writable.

    The embedding cache still reads entries that are there; it just cannot add
    new ones (a read-only filesystem, a folder without write permission).
    """
    if cache_dir is None:
        return True
    path = Path(cache_dir)
    reason = ""
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        reason = exc.strerror or str(exc)
    if not reason and not path.is_dir():
        reason = "not a folder"
    if not reason:
        import tempfile

        try:  # os.access misses read-only mounts on some systems: probe with a real file
            with tempfile.TemporaryFile(dir=path, prefix=".retsam-probe-"):
                pass
        except OSError as exc:
            reason = exc.strerror or str(exc)
    if reason:
        warn(f"{flag} {path} cannot be written ({reason}): embeddings already cached there are used, "
             "new ones are kept in memory only")
        return False
    return True
